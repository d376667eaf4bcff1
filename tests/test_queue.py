"""The JetStream queue against a real server (embedded and external)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api
from nats.js.object_store import ObjectStore

from tests.fixtures.nats import fetched, wait_until
from tgbroadcast.core.domain.errors import QueueError
from tgbroadcast.core.domain.model import (
    BroadcastStatus,
    DeliveryResult,
    DeliveryState,
    RecallOutcome,
)
from tgbroadcast.core.queue import (
    Event,
    FinishedEvent,
    Idle,
    Job,
    Queue,
    QueueNames,
    RecallEvent,
    ResultEvent,
    decode_event,
    encode_event,
)

# The nats_url / queue_prefix fixtures come from tests/conftest.py (tests.fixtures.nats).

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def result(broadcast_id: int, user_id: int, *, ok: bool = True) -> ResultEvent:
    return ResultEvent(
        result=DeliveryResult(
            broadcast_id=broadcast_id,
            user_id=user_id,
            state=DeliveryState.SENT if ok else DeliveryState.FAILED,
            finished_at=T0 + timedelta(seconds=user_id),
            message_id=1000 + user_id if ok else None,
            error=None if ok else "Forbidden: bot was blocked by the user",
        )
    )


@contextlib.asynccontextmanager
async def raw_js(url: str) -> AsyncIterator[tuple[NatsClient, JetStreamContext]]:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        yield nc, nc.jetstream()
    finally:
        await nc.close()


async def stream_messages(js: JetStreamContext, stream: str) -> int:
    info = await js.stream_info(stream)
    return info.state.messages


# --- values (no server) ---------------------------------------------------------------------


def test_job_validates_its_ids() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Job(broadcast_id=1, user_ids=())
    with pytest.raises(ValueError, match="ascending"):
        Job(broadcast_id=1, user_ids=(2, 1))
    with pytest.raises(ValueError, match="ascending"):
        Job(broadcast_id=1, user_ids=(1, 1))
    with pytest.raises(ValueError, match="broadcast_id"):
        Job(broadcast_id=0, user_ids=(1,))
    with pytest.raises(ValueError, match="ints"):
        Job(broadcast_id=1, user_ids=(True,))


def test_job_msg_id_depends_on_content_not_position() -> None:
    a = Job(broadcast_id=5, user_ids=(1, 2, 3))
    assert a.msg_id == Job(broadcast_id=5, user_ids=(1, 2, 3)).msg_id
    assert a.msg_id.startswith("j.5.1.3.")
    # Same broadcast, first id and count, different ids: a different message.
    assert a.msg_id != Job(broadcast_id=5, user_ids=(1, 2, 4)).msg_id
    assert a.msg_id != Job(broadcast_id=6, user_ids=(1, 2, 3)).msg_id


def test_job_codec_round_trip_and_rejects_garbage() -> None:
    job = Job(broadcast_id=9, user_ids=(3, 10, 11))
    assert job.encode() == b'{"broadcast_id":9,"user_ids":[3,10,11]}'
    assert Job.decode(job.encode()) == job
    paid = Job(broadcast_id=9, user_ids=(3,), generation=2, paid=True)
    assert paid.encode() == b'{"broadcast_id":9,"user_ids":[3],"generation":2,"paid":true}'
    assert Job.decode(paid.encode()) == paid
    for bad in (
        b'{"broadcast_id":9,"user_ids":[1],"paid":"yes"}',
        b"not json",
        b"[]",
        b'{"broadcast_id":9}',
        b'{"broadcast_id":"9","user_ids":[1]}',
        b'{"broadcast_id":9,"user_ids":[2,1]}',
        b'{"broadcast_id":9,"user_ids":["1"]}',
        b"\xff",
    ):
        with pytest.raises(ValueError, match=r"."):
            Job.decode(bad)


@pytest.mark.parametrize(
    "extra",
    [{}, {"generation": 3, "paid": True}, {"bot": "shop", "recall": True}, {"edit": 2, "bot": "x"}],
)
def test_a_job_written_once_for_its_payload_and_id_is_the_same_job(extra: dict[str, Any]) -> None:
    job = Job(broadcast_id=7, user_ids=(-5, 1, 2**62), **extra)
    payload, msg_id = job.encoded()
    assert (payload, msg_id) == (job.encode(), job.msg_id)
    assert json.loads(payload) == {"broadcast_id": 7, "user_ids": [-5, 1, 2**62], **extra}
    assert Job.decode(payload) == job


def test_recall_jobs_and_events_round_trip_apart_from_sends() -> None:
    recall = Job(broadcast_id=9, user_ids=(3, 10), recall=True)
    assert recall.encode() == b'{"broadcast_id":9,"user_ids":[3,10],"recall":true}'
    assert Job.decode(recall.encode()) == recall
    assert recall.msg_id.startswith("v.9.3.2.")  # never a send job's id
    assert recall.msg_id[1:] == Job(broadcast_id=9, user_ids=(3, 10)).msg_id[1:]
    with pytest.raises(ValueError, match="recall"):
        Job.decode(b'{"broadcast_id":9,"user_ids":[1],"recall":1}')
    sent = result(1, 2).result
    deleted = RecallEvent(result=replace(sent, message_id=7, recall=RecallOutcome.DELETED))
    failed = RecallEvent(
        result=replace(sent, message_id=7, recall=RecallOutcome.FAILED, recall_error="no")
    )
    for event in (deleted, failed):
        assert decode_event(encode_event(event)) == event
    assert b'"type":"recall"' in encode_event(deleted)
    assert b"recall_error" not in encode_event(deleted)
    assert deleted.msg_id == "v.1.2"
    # A recalled broadcast ends a second time: its end is not dropped as a duplicate.
    completed = FinishedEvent(broadcast_id=1, status=BroadcastStatus.COMPLETED)
    ended = FinishedEvent(broadcast_id=1, status=BroadcastStatus.RECALLED)
    assert ended.msg_id != completed.msg_id
    assert decode_event(encode_event(ended)) == ended
    with pytest.raises(ValueError, match="recall outcome"):
        RecallEvent(result=sent)
    with pytest.raises(ValueError, match="'gone' is not a valid"):
        decode_event(encode_event(deleted).replace(b'"deleted"', b'"gone"'))


def test_event_codec_round_trip() -> None:
    sent = result(1, 2)
    failed = result(1, 3, ok=False)
    finished = FinishedEvent(broadcast_id=1, status=BroadcastStatus.COMPLETED)
    album = ResultEvent(result=replace(sent.result, message_id=7, message_ids=(7, 8, 9)))
    for event in (sent, failed, finished, album):
        assert decode_event(encode_event(event)) == event
    assert b'"finished_at":"2026-01-02T03:04:07.678000+00:00"' in encode_event(sent)
    # Only an album's event carries message_ids.
    assert b"message_ids" not in encode_event(sent)
    assert b'"message_ids":[7,8,9]' in encode_event(album)
    with pytest.raises(ValueError, match="message_ids"):
        decode_event(encode_event(album).replace(b"[7,8,9]", b'["7"]'))
    # Other offsets and naive datetimes are normalised to UTC.
    plus2 = timezone(timedelta(hours=2))
    local = ResultEvent(
        result=DeliveryResult(
            broadcast_id=1,
            user_id=2,
            state=DeliveryState.SENT,
            finished_at=datetime(2026, 1, 2, 5, 0, tzinfo=plus2),
        )
    )
    decoded = decode_event(encode_event(local))
    assert isinstance(decoded, ResultEvent)
    assert decoded.result.finished_at == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    assert decoded.result.finished_at.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="final status"):
        decode_event(b'{"type":"finished","broadcast_id":1,"status":"running"}')
    with pytest.raises(ValueError, match="unknown event type"):
        decode_event(b'{"type":"other","broadcast_id":1}')
    with pytest.raises(ValueError, match="final delivery state"):
        decode_event(
            b'{"type":"result","broadcast_id":1,"user_id":2,"state":"pending",'
            b'"finished_at":"2026-01-02T03:04:05+00:00"}'
        )
    with pytest.raises(ValueError, match="time zone"):
        decode_event(
            b'{"type":"result","broadcast_id":1,"user_id":2,"state":"sent",'
            b'"finished_at":"2026-01-02T03:04:05"}'
        )


def test_prefix_is_validated() -> None:
    assert QueueNames("tgb").jobs_stream == "TGB_JOBS"
    assert QueueNames("tgb").events_subject(42) == "tgb.events.42"
    with pytest.raises(ValueError, match="prefix"):
        QueueNames("a.b")


# --- against a server -----------------------------------------------------------------------


async def test_streams_and_consumer_are_created_idempotently(
    nats_url: str, queue_prefix: str
) -> None:
    names = QueueNames(queue_prefix)
    async with (
        Queue.connect(nats_url, prefix=queue_prefix, ack_wait=30) as first,
        Queue.connect(nats_url, prefix=queue_prefix, ack_wait=45) as second,
        raw_js(nats_url) as (_, js),
    ):
        assert first.names == second.names == names
        jobs = await js.stream_info(names.jobs_stream)
        assert jobs.config.retention == "workqueue"
        assert jobs.config.subjects == [
            f"{queue_prefix}.jobs",
            f"{queue_prefix}.jobs.paid",
            f"{queue_prefix}.jobs.free.*",  # the other bots' (the default's are above)
            f"{queue_prefix}.jobs.paid.*",
        ]
        assert jobs.config.duplicate_window == 600
        events = await js.stream_info(names.events_stream)
        assert events.config.retention == "limits"
        assert events.config.subjects == [f"{queue_prefix}.events.*"]
        assert events.config.max_age == 7 * 24 * 3600
        for name, subject in (("workers", "jobs"), ("workers-paid", "jobs.paid")):
            consumer = await js.consumer_info(names.jobs_stream, name)
            assert consumer.config.ack_wait == 45  # the last process to start wins
            assert consumer.config.durable_name == name
            assert consumer.config.filter_subject == f"{queue_prefix}.{subject}"


async def test_a_jobs_stream_of_an_older_version_gains_the_paid_subject(
    nats_url: str, queue_prefix: str
) -> None:
    names = QueueNames(queue_prefix)
    async with raw_js(nats_url) as (_, js):
        await js.add_stream(
            name=names.jobs_stream,
            subjects=[names.jobs_subject],
            retention=api.RetentionPolicy.WORK_QUEUE,
            duplicate_window=600,
        )
        await js.publish(names.jobs_subject, Job(broadcast_id=1, user_ids=(5,)).encode())
        async with Queue.connect(nats_url, prefix=queue_prefix) as queue:
            info = await js.stream_info(names.jobs_stream)
            assert info.config.subjects == names.jobs_stream_subjects
            (kept,) = await fetched(queue, max_jobs=5)  # queued before: kept
            assert kept.job.user_ids == (5,)
            await kept.ack()
            await queue.publish_jobs([Job(broadcast_id=2, user_ids=(6,), paid=True)])
            (paid,) = await fetched(queue, max_jobs=5, paid=True)
            await paid.ack()


async def test_paid_and_free_jobs_have_consumers_of_their_own(
    nats_url: str, queue_prefix: str
) -> None:
    free = [Job(broadcast_id=1, user_ids=(i,)) for i in range(1, 4)]
    paid = Job(broadcast_id=2, user_ids=(7,), paid=True)
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue:
        await queue.publish_jobs([*free, paid])  # the paid job queued behind the free ones
        (first,) = await fetched(queue, paid=True)
        assert first.job == paid
        await first.ack()
        assert await queue.fetch_jobs(max_jobs=10, timeout=0.2, paid=True) == []
        received = await fetched(queue, len(free))
        assert [r.job for r in received] == free
        for r in received:
            await r.ack()


async def test_jobs_round_trip_and_leave_the_stream_after_ack(
    nats_url: str, queue_prefix: str
) -> None:
    jobs = [
        Job(broadcast_id=1, user_ids=tuple(range(i * 100 + 1, i * 100 + 101))) for i in range(3)
    ]
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue, raw_js(nats_url) as (_, js):
        assert await queue.fetch_jobs(max_jobs=10, timeout=0.2) == []
        await queue.publish_jobs(jobs)
        assert await stream_messages(js, queue.names.jobs_stream) == 3
        received = await fetched(queue, len(jobs))
        assert [r.job for r in received] == jobs
        assert [r.num_delivered for r in received] == [1, 1, 1]
        await received[0].in_progress()
        for r in received:
            await r.ack()
        assert await stream_messages(js, queue.names.jobs_stream) == 0
        assert await queue.fetch_jobs(max_jobs=10, timeout=0.2) == []


async def test_a_cluster_url_lists_several_servers(nats_url: str, queue_prefix: str) -> None:
    """``nats.url`` as a cluster's comma-separated servers: one that does not answer (port 1)
    beside a live one; the queue connects to the live one and works."""
    job = Job(broadcast_id=1, user_ids=(1, 2))
    async with Queue.connect(f"nats://127.0.0.1:1, {nats_url}", prefix=queue_prefix) as queue:
        await queue.publish_jobs([job])
        (received,) = await fetched(queue, 1)
        assert received.job == job
        await received.ack()


async def test_two_queues_share_the_work_without_double_delivery(
    nats_url: str, queue_prefix: str
) -> None:
    jobs = [Job(broadcast_id=2, user_ids=(i,)) for i in range(1, 21)]
    async with (
        Queue.connect(nats_url, prefix=queue_prefix) as publisher,
        Queue.connect(nats_url, prefix=queue_prefix) as worker_a,
        Queue.connect(nats_url, prefix=queue_prefix) as worker_b,
    ):
        await publisher.publish_jobs(jobs)
        got_a = await fetched(worker_a, 5, max_jobs=5)
        assert len(got_a) == 5
        # B asks for everything while A holds five unacked: it gets only the other fifteen.
        got_b: list[Job] = []
        while len(got_b) < 15:  # until it has them, however slowly they come
            batch = await worker_b.fetch_jobs(max_jobs=20, timeout=1.0)
            got_b.extend(r.job for r in batch)
        assert await worker_b.fetch_jobs(max_jobs=20, timeout=0.3) == []
        assert len(got_b) == 15
        assert set(got_b).isdisjoint(r.job for r in got_a)
        assert sorted([r.job for r in got_a] + got_b, key=lambda j: j.user_ids) == jobs
        for r in got_a:
            await r.ack()


async def test_nak_redelivers_and_term_does_not(nats_url: str, queue_prefix: str) -> None:
    job = Job(broadcast_id=3, user_ids=(1, 2))
    other = Job(broadcast_id=3, user_ids=(3,))
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue, raw_js(nats_url) as (_, js):
        await queue.publish_jobs([job])
        (first,) = await fetched(queue, max_jobs=5)
        assert first.num_delivered == 1
        await first.nak()
        (second,) = await fetched(queue, max_jobs=5)
        assert (second.job, second.num_delivered) == (job, 2)
        naked_at = time.monotonic()
        await second.nak(delay=1.0)
        # One pull that outlasts the delay, for one job. Before 2.10.14 (CI's external server
        # is 2.9.10) nats-server sends a delayed redelivery that meets an expiring pull again
        # as a first delivery (nats-server#5305): a pull of the delay's own length made this
        # assertion see 1 instead of 3.
        (third,) = await fetched(queue, max_jobs=1, pull=30.0)
        # Not before its delay (a slow machine only gets it later).
        assert time.monotonic() - naked_at >= 1.0
        assert (third.job, third.num_delivered) == (job, 3)
        await third.ack()

        await queue.publish_jobs([other])
        (termed,) = await fetched(queue, max_jobs=5)
        await termed.term()
        assert await queue.fetch_jobs(max_jobs=5, timeout=0.3) == []

        async def nothing_pending() -> bool:
            info = await js.consumer_info(queue.names.jobs_stream, "workers")
            return bool(info.num_ack_pending == 0 and info.num_pending == 0)

        await wait_until(nothing_pending)


async def test_unacked_job_is_redelivered_after_ack_wait(nats_url: str, queue_prefix: str) -> None:
    job = Job(broadcast_id=4, user_ids=(5,))
    async with Queue.connect(nats_url, prefix=queue_prefix, ack_wait=0.5) as queue:
        await queue.publish_jobs([job])
        (first,) = await fetched(queue, max_jobs=1)
        assert first.num_delivered == 1
        # Not acked: another fetch gets it again once AckWait expired (one pull that outlasts
        # it: see the test above for what an expiring pull does to a redelivery on 2.9).
        (again,) = await fetched(queue, max_jobs=1, pull=30.0)
        assert (again.job, again.num_delivered) == (job, 2)
        await again.ack()


async def test_duplicate_publishes_are_dropped(nats_url: str, queue_prefix: str) -> None:
    job = Job(broadcast_id=5, user_ids=(1, 2, 3))
    # A re-dispatch after recipient 2 finished: same broadcast, first id and count differ
    # or ids differ -- never dropped.
    redispatch = Job(broadcast_id=5, user_ids=(1, 3))
    same_shape = Job(broadcast_id=5, user_ids=(1, 2, 4))
    events: list[Event] = [result(5, 1), result(5, 2, ok=False)]
    finished = FinishedEvent(broadcast_id=5, status=BroadcastStatus.COMPLETED)
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue, raw_js(nats_url) as (_, js):
        await queue.publish_jobs([job])
        await queue.publish_jobs([job, job])
        assert await stream_messages(js, queue.names.jobs_stream) == 1
        await queue.publish_jobs([redispatch, same_shape])
        assert await stream_messages(js, queue.names.jobs_stream) == 3

        await queue.publish_events(events)
        await queue.publish_events([*events, finished])
        await queue.publish_events([finished])
        assert await stream_messages(js, queue.names.events_stream) == 3


async def test_malformed_job_is_terminated(nats_url: str, queue_prefix: str) -> None:
    good = Job(broadcast_id=6, user_ids=(1,))
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue, raw_js(nats_url) as (_, js):
        subject = queue.names.jobs_subject
        await js.publish(subject, b"garbage")
        await js.publish(subject, b'{"broadcast_id":6,"user_ids":[2,1]}')
        await queue.publish_jobs([good])
        received = [r.job for r in await fetched(queue)]
        assert received == [good]

        async def only_good_left() -> bool:
            info = await js.consumer_info(queue.names.jobs_stream, "workers")
            return bool(info.num_ack_pending == 1 and info.num_pending == 0)

        await wait_until(only_good_left)
        assert await queue.fetch_jobs(max_jobs=10, timeout=0.3) == []


async def test_deleted_workers_consumer_is_recreated(nats_url: str, queue_prefix: str) -> None:
    job = Job(broadcast_id=7, user_ids=(1,))
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue, raw_js(nats_url) as (_, js):
        await queue.publish_jobs([job])
        await js.delete_consumer(queue.names.jobs_stream, "workers")
        received = [r.job for r in await fetched(queue, max_jobs=1)]
        assert received == [job]


async def test_watch_replays_then_follows_live_events(nats_url: str, queue_prefix: str) -> None:
    early: list[Event] = [result(10, 1), result(10, 2, ok=False)]
    live: list[Event] = [
        result(10, 3),
        FinishedEvent(broadcast_id=10, status=BroadcastStatus.COMPLETED),
    ]
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue, raw_js(nats_url) as (_, js):
        await queue.publish_events(early)
        await queue.publish_events([result(11, 1)])  # another broadcast: never seen
        watch = queue.watch(10, idle_after=0.2)
        seen: list[Event | Idle] = [await anext(watch), await anext(watch)]
        assert seen == early
        assert await anext(watch) == Idle()
        consumers = await js.consumers_info(queue.names.events_stream)
        assert len(consumers) == 1
        await queue.publish_events(live)
        following: list[Event] = []
        while len(following) < 2:
            item = await anext(watch)
            if not isinstance(item, Idle):
                following.append(item)
        assert following == live
        await watch.aclose()
        assert await js.consumers_info(queue.names.events_stream) == []


async def test_slow_watcher_keeps_events_on_the_server(nats_url: str, queue_prefix: str) -> None:
    events: list[Event] = [result(20, u) for u in range(1, 301)]
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue, raw_js(nats_url) as (_, js):
        await queue.publish_events(events)
        watch = queue.watch(20, idle_after=0.5, batch_size=10)
        assert await anext(watch) == events[0]
        (consumer,) = await js.consumers_info(queue.names.events_stream)
        # The server handed out one batch; the rest waits there, not in our memory.
        assert consumer.delivered is not None
        assert consumer.delivered.stream_seq <= 10
        assert consumer.num_pending is not None
        assert consumer.num_pending >= 290
        rest = [await anext(watch) for _ in range(299)]
        assert rest == events[1:]
        await watch.aclose()


async def test_watch_survives_losing_its_consumer(nats_url: str, queue_prefix: str) -> None:
    events: list[Event] = [result(30, u) for u in range(1, 7)]
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue, raw_js(nats_url) as (_, js):
        await queue.publish_events(events[:3])
        watch = queue.watch(30, idle_after=0.3, batch_size=2)
        got = [await anext(watch), await anext(watch)]
        # The server drops the consumer (as after its inactive threshold) while we are slow.
        (consumer,) = await js.consumers_info(queue.names.events_stream)
        await js.delete_consumer(queue.names.events_stream, consumer.name)
        await queue.publish_events(events[3:])
        while len(got) < 6:
            item = await anext(watch)
            if not isinstance(item, Idle):
                got.append(item)
        assert got == events
        await watch.aclose()
        assert await js.consumers_info(queue.names.events_stream) == []


async def test_cancelled_watch_deletes_its_consumer(nats_url: str, queue_prefix: str) -> None:
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue, raw_js(nats_url) as (_, js):
        await queue.publish_events([result(40, 1)])
        first = asyncio.Event()

        async def follow() -> None:
            async with contextlib.aclosing(queue.watch(40, idle_after=5.0)) as watch:
                async for _ in watch:
                    first.set()

        task = asyncio.create_task(follow())
        await first.wait()
        assert len(await js.consumers_info(queue.names.events_stream)) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await js.consumers_info(queue.names.events_stream) == []


async def test_media_upload_nobody_answers_for_is_tried_again(
    nats_url: str, queue_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store between leaders (or not yet known to this server) answers nobody for a moment:
    the upload is repeated until it lands, and given up with a QueueError at the deadline."""
    unanswered = asyncio.Event()
    put = ObjectStore.put

    async def watched_put(store: ObjectStore, name: str, data: bytes) -> object:
        try:
            return await put(store, name, data)
        except nats.js.errors.NoStreamResponseError:
            unanswered.set()
            raise

    monkeypatch.setattr(ObjectStore, "put", watched_put)
    async with (
        Queue.connect(nats_url, prefix=queue_prefix, publish_timeout=60) as queue,
        raw_js(nats_url) as (_, js),
    ):
        await queue.put_media("first", b"one")
        stream = f"OBJ_{queue.names.media_bucket}"
        config = (await js.stream_info(stream)).config
        subjects = config.subjects
        # Nobody answers for the chunks' subjects for a while (as between two leaders).
        config.subjects = [f"$O.{queue.names.media_bucket}.M.>"]
        await js.update_stream(config)
        upload = asyncio.create_task(queue.put_media("second", b"two"))
        await unanswered.wait()
        assert not upload.done()
        config.subjects = subjects
        await js.update_stream(config)
        await upload
        assert await queue.get_media("second") == b"two"

        async with Queue.connect(nats_url, prefix=queue_prefix, publish_timeout=0.5) as hasty:
            await hasty.put_media("third", b"three")
            config.subjects = [f"$O.{queue.names.media_bucket}.M.>"]
            await js.update_stream(config)
            with pytest.raises(QueueError, match="storing media fourth failed"):
                await hasty.put_media("fourth", b"four")
