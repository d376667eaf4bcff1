"""Several bots on one service: a lane per bot (worker/lanes.py), each bot held to its own
limit, paused alone by its own 429, never delayed by another bot's backlog.

The whole service runs on real parts (tests/fixtures/stack.py) against the simulator, which
enforces its limits per bot token and records every call with its bot's id. Broadcasts are
stored and dispatched through the service's own store and dispatcher with the bot they
belong to, so what is tested here is the send path alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import cast

import aiohttp
import nats.js.errors
import pytest
from nats.js import api

from tests.fixtures.environ import AUTH
from tests.fixtures.nats import fetched, jetstream, wait_until
from tests.fixtures.stack import Backend, Stack, on_sqlite, start_stack
from tests.fixtures.telegram import BOT_ID
from tgbroadcast.core.bots.sealing import token_hash
from tgbroadcast.core.config import load_settings
from tgbroadcast.core.config.settings import BotSettings
from tgbroadcast.core.domain.bots import StoredBot
from tgbroadcast.core.domain.model import BroadcastStatus, Content, NewBroadcast
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import Job, Queue, QueueNames, ReceivedJob
from tgbroadcast.core.store import Store
from tgbroadcast.simulator import Call, Fault, Limit, RateLimits, Simulator
from tgbroadcast.worker.lanes import Lanes

TOKENS = {
    "alpha": "111111111:AAHalpha_bot_token_for_the_simulator",
    "beta": "222222222:AAHbeta_bot_token_for_the_simulator_",
    "gamma": "333333333:AAHgamma_bot_token_for_the_simulator",
    "late": "444444444:AAHlate_bot_token_for_the_simulator_",
}
SECRET_KEY = "multibot-secret-key-0123456789abcdef"
MARGIN = "0.4"
"""``telegram.rate_margin``: 400 ms of each second's slots absorb a loaded machine's jitter
between a permit and the simulator's clock (a busy event loop delays one request more than
the next), so a 1-second window never sees one too many. A bot held to another bot's limit,
or to none, would still overshoot its own by far."""


def bot_id(name: str) -> int:
    return BOT_ID if name == "default" else int(TOKENS[name].split(":", 1)[0])


def bots_environ(rates: Mapping[str, float], **extra: str) -> dict[str, str]:
    """``TGB_BOTS`` with a bot per ``rates`` item (beside ``default``), and ``extra``."""
    bots = [
        {"name": name, "token": TOKENS[name], "rate_limit": rate} for name, rate in rates.items()
    ]
    return {"TGB_BOTS": json.dumps(bots), "TGB_TELEGRAM_RATE_MARGIN": MARGIN, **extra}


async def send(stack: Stack, bot: str, user_ids: Iterable[int], text: str = "hello") -> int:
    """Store a broadcast of ``bot`` and dispatch it, as the API does after its checks."""
    assert stack.running.api is not None
    broadcast = await stack.running.backends.store.create_broadcast(
        NewBroadcast(content=Content(message=text), user_ids=tuple(user_ids), bot=bot)
    )
    stack.running.api.dispatcher.dispatch(broadcast.id)
    return broadcast.id


async def status(stack: Stack, broadcast_id: int) -> BroadcastStatus:
    return (await stack.running.backends.store.get_broadcast(broadcast_id)).status


async def completed(stack: Stack, *broadcast_ids: int) -> bool:
    return all([await status(stack, b) is BroadcastStatus.COMPLETED for b in broadcast_ids])


def sent_by(simulator: Simulator, name: str) -> list[Call]:
    """The messages ``name``'s token sent (accepted), in order."""
    return [
        c
        for c in simulator.calls
        if c.method == "sendMessage" and c.ok and c.bot_id == bot_id(name)
    ]


def chats(calls: Iterable[Call]) -> list[int]:
    return sorted(int(c.params["chat_id"]) for c in calls)


def most_in_window(calls: list[Call], seconds: float) -> int:
    """The most calls any window of ``seconds`` of the simulator's clock holds."""
    times = sorted(c.at for c in calls)
    most = 0
    start = 0
    for end, at in enumerate(times):
        while at - times[start] >= seconds:
            start += 1
        most = max(most, end - start + 1)
    return most


def refused(simulator: Simulator, name: str | None = None) -> list[Call]:
    """The 429 answers (to ``name`` only, when given)."""
    return [
        c
        for c in simulator.calls
        if c.error_code == 429 and (name is None or c.bot_id == bot_id(name))
    ]


async def cancel(stack: Stack, broadcast_id: int) -> None:
    """Cancel a broadcast still sending (one that finished meanwhile answers 409)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stack.http_url}/v1/broadcasts/{broadcast_id}/cancel", json={}, headers=AUTH
        ) as response,
    ):
        assert response.status in (200, 409), await response.text()


async def test_simultaneous_broadcasts_each_go_out_with_their_bot_within_its_limit(
    backend: Backend,
) -> None:
    """One broadcast per bot of three, all at once, to the same Telegram ids (each bot's own
    users): every recipient gets exactly one message from each bot, Telegram (the simulator,
    20 per second per token) never answers 429, and each bot keeps to its own limit as the
    simulator's clock saw its messages: on average, and in every 3-second window.

    Not in every 1-second window: the simulator shares the service's event loop, so on a
    loaded machine a stall hands it two requests sent 0.2 s apart at once, which no real
    network does. Over 3 s the budget's margin leaves room for such a bunch, and a bot held
    to another bot's limit (16/s for an 8/s bot) or to none would still overshoot by far."""
    rates = {"alpha": 16.0, "beta": 8.0, "gamma": 12.0}
    recipients = list(range(1, 25))
    async with (
        Simulator(rate_limits=RateLimits(bot=Limit(20, 1.0))) as simulator,
        start_stack(backend, simulator, bots_environ(rates)) as stack,
    ):
        ids = [await send(stack, name, recipients, f"from {name}") for name in rates]
        await wait_until(lambda: completed(stack, *ids))
    assert refused(simulator) == []
    for name, rate in rates.items():
        calls = sent_by(simulator, name)
        assert chats(calls) == recipients, name  # each recipient once, by this bot
        assert {c.params["text"] for c in calls} == {f"from {name}"}
        span = calls[-1].at - calls[0].at
        assert (len(calls) - 1) / span <= rate, name
        assert most_in_window(calls, 3.0) <= 3 * rate, name
    assert sent_by(simulator, "default") == []


@on_sqlite
async def test_a_429_pauses_only_its_own_bot(backend: Backend, simulator: Simulator) -> None:
    """alpha gets a 429 (retry after 3 s) on its first send: alpha waits it out, while beta,
    sending meanwhile, goes on within the very window alpha is paused."""
    retry_after = 3
    async with start_stack(backend, simulator, bots_environ({"alpha": 10, "beta": 10})) as stack:
        beta_users = list(range(1001, 1101))  # ten seconds at 10/s: sending all along
        beta = await send(stack, "beta", beta_users)
        await simulator.wait_for(lambda sim: len(sent_by(sim, "beta")) >= 3)
        alpha_users = list(range(1, 11))
        simulator.faults.inject(Fault.too_many_requests(retry_after), chat_id=alpha_users[0])
        alpha = await send(stack, "alpha", alpha_users)
        await wait_until(lambda: completed(stack, alpha))
        (pause,) = refused(simulator, "alpha")
        resumed = min(c.at for c in sent_by(simulator, "alpha") if c.at > pause.at)
        beta_during = [c for c in sent_by(simulator, "beta") if pause.at < c.at < resumed]
        await cancel(stack, beta)
    assert resumed - pause.at >= retry_after - 0.05  # alpha kept Telegram's pause
    assert len(beta_during) >= 3  # beta did not
    assert refused(simulator, "beta") == []
    assert chats(sent_by(simulator, "alpha")) == alpha_users


@on_sqlite
async def test_a_big_backlog_does_not_delay_another_bot(
    backend: Backend, simulator: Simulator
) -> None:
    """alpha has 600 recipients at 5/s (two minutes of work); beta, sent after alpha began,
    completes its 20 while alpha still has hundreds pending."""
    rates = {"alpha": 5, "beta": 10}
    async with start_stack(backend, simulator, bots_environ(rates)) as stack:
        alpha = await send(stack, "alpha", range(1, 601))
        await simulator.wait_for(lambda sim: len(sent_by(sim, "alpha")) >= 1)
        beta = await send(stack, "beta", range(1, 21))
        await wait_until(lambda: completed(stack, beta))
        still = await stack.running.backends.store.get_broadcast(alpha)
        await cancel(stack, alpha)
    assert still.status is BroadcastStatus.RUNNING
    assert still.total - still.sent - still.failed > 300
    assert chats(sent_by(simulator, "beta")) == list(range(1, 21))


@on_sqlite
async def test_a_job_queued_before_bots_existed_goes_out_with_the_default_bot(
    backend: Backend, simulator: Simulator
) -> None:
    """A job as an older version published it — no ``bot`` in its payload, on the jobs
    subject of old — is sent with ``telegram.token`` (the bot ``default``)."""
    async with start_stack(backend, simulator, bots_environ({"alpha": 10})) as stack:
        store, queue = stack.running.backends.store, stack.running.backends.queue
        users = (7, 8, 9)
        broadcast = await store.create_broadcast(
            NewBroadcast(content=Content(message="old"), user_ids=users)
        )
        assert await store.mark_generation_dispatched(broadcast.id, None)
        payload = json.dumps({"broadcast_id": broadcast.id, "user_ids": list(users)}).encode()
        assert Job.decode(payload).bot == "default"
        await queue.jetstream.publish(
            queue.names.jobs_subject, payload, headers={"Nats-Msg-Id": "old-job"}
        )
        await wait_until(lambda: completed(stack, broadcast.id))
    assert chats(sent_by(simulator, "default")) == list(users)
    assert sent_by(simulator, "alpha") == []


@on_sqlite
async def test_a_bot_created_while_the_worker_runs_is_served(
    backend: Backend, simulator: Simulator
) -> None:
    """A bot stored through the store (as POST /v1/bots does) gets a lane at the workers'
    next refresh; its broadcast, dispatched before that, waits for it and goes out with its
    token. Deleted, its lane stops and its consumers go, also when re-created by a straggler."""
    environ = {"TGB_SERVER_SECRET_KEY": SECRET_KEY}
    async with start_stack(backend, simulator, environ) as stack:
        store, queue = stack.running.backends.store, stack.running.backends.queue
        sealer = stack.running.backends.bots.sealer
        assert sealer is not None
        token = TOKENS["late"]
        await store.create_bot(
            StoredBot(
                name="late",
                bot_id=bot_id("late"),
                username="late_bot",
                token_sealed=sealer.seal(token),
                token_hash=token_hash(token),
                rate_limit=None,
                paid_rate_limit=None,
                api_url=None,
                created_at=datetime.now(UTC),
                created_by="test",
            )
        )
        broadcast_id = await send(stack, "late", (21, 22, 23))
        await wait_until(lambda: completed(stack, broadcast_id))
        assert chats(sent_by(simulator, "late")) == [21, 22, 23]
        consumer, _ = queue.names.jobs_consumer(paid=False, bot="late")

        async def consumer_gone() -> bool:
            try:
                await queue.jetstream.consumer_info(queue.names.jobs_stream, consumer)
            except nats.js.errors.NotFoundError:
                return True
            return False

        assert not await consumer_gone()
        await store.delete_stored_bot("late")
        await wait_until(consumer_gone)

        # A worker that had not seen the deletion yet fetches once more and so creates the
        # consumer again: the sweep every worker runs when it starts removes it.
        assert await queue.fetch_jobs(max_jobs=1, timeout=0.1, bot="late") == []
        assert not await consumer_gone()

        async def no_pull_waiting() -> bool:
            info = await queue.jetstream.consumer_info(queue.names.jobs_stream, consumer)
            return not info.num_waiting

        # The fetch's pull request outlives it on the server until it expires, and would take
        # the job published next (then in nobody's hands, not pending): wait for it to go.
        await wait_until(no_pull_waiting)
        # A job of a cancelled broadcast left behind (a deleted bot has no unfinished one):
        # the same sweep purges it, so the bot's backlog goes.
        await queue.publish_jobs([Job(broadcast_id=broadcast_id, user_ids=(24,), bot="late")])

        async def late_backlog() -> dict[str, int] | None:
            return (await queue.backlog_by_bot()).get("late")

        async def late_purged() -> bool:
            return await late_backlog() is None

        assert await late_backlog() == {"free": 1, "paid": 0}
        bots = NoBots()
        lanes = Lanes(stack.settings, store=store, queue=queue, metrics=Metrics(), bots=bots)
        running = asyncio.create_task(lanes.run())
        await wait_until(consumer_gone)
        await wait_until(late_purged)
        lanes.stop()
        await running
    assert sent_by(simulator, "default") == []


async def test_an_older_jobs_stream_serves_its_jobs_and_every_bot(
    nats_url: str, queue_prefix: str
) -> None:
    """The jobs stream and consumers of a single-bot version, with a job waiting: after the
    upgrade the stream takes every bot's subjects, the old job is the bot ``default``'s on
    the old consumer, another bot's jobs get consumers of their own on first fetch, the
    backlog counts per bot, and a bot's consumers can be removed."""
    names = QueueNames(queue_prefix)
    async with jetstream(nats_url) as js:
        await js.add_stream(
            name=names.jobs_stream,
            subjects=[names.jobs_subject, names.paid_jobs_subject],
            retention=api.RetentionPolicy.WORK_QUEUE,
            duplicate_window=600,
        )
        await js.add_consumer(
            names.jobs_stream,
            durable_name="workers",
            ack_policy=api.AckPolicy.EXPLICIT,
            filter_subject=names.jobs_subject,
        )
        await js.publish(names.jobs_subject, b'{"broadcast_id":1,"user_ids":[5]}')
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue:
        info = await queue.jetstream.stream_info(names.jobs_stream)
        assert info.config.subjects == names.jobs_stream_subjects
        await queue.publish_jobs(
            [Job(broadcast_id=2, user_ids=(6,), bot="alpha"), Job(broadcast_id=3, user_ids=(7,))]
        )
        # Nobody serves alpha yet: its job is counted from its subject. A consumer's pending
        # count in nats-server's consumer list follows a publish a moment later: wait for it.
        expected = {"default": {"free": 2, "paid": 0}, "alpha": {"free": 1, "paid": 0}}

        async def counted() -> bool:
            return await queue.backlog_by_bot() == expected

        await wait_until(counted)
        assert await queue.backlog() == {"free": 3, "paid": 0}
        old, new = await fetched(queue, 2)
        assert (old.job.bot, old.job.user_ids, new.job.user_ids) == ("default", (5,), (7,))
        assert await queue.fetch_jobs(max_jobs=5, timeout=0.2) == []
        (alpha,) = await fetched_of(queue, "alpha")
        assert alpha.job == Job(broadcast_id=2, user_ids=(6,), bot="alpha")
        for received in (old, new, alpha):
            await received.ack()
        consumer, _ = names.jobs_consumer(paid=False, bot="alpha")
        assert (await queue.jetstream.consumer_info(names.jobs_stream, consumer)).name
        await queue.remove_bot_consumers("alpha")
        with pytest.raises(nats.js.errors.NotFoundError):
            await queue.jetstream.consumer_info(names.jobs_stream, consumer)
        with pytest.raises(ValueError, match="default"):
            await queue.remove_bot_consumers("default")
        # A deleted bot's jobs are purged up to a mark: a job published after it stays (the
        # same bot created again owns it).
        await queue.publish_jobs([Job(broadcast_id=4, user_ids=(8,), bot="alpha")])
        mark = await queue.jobs_mark()
        await queue.publish_jobs([Job(broadcast_id=5, user_ids=(9,), bot="alpha")])
        await queue.remove_bot_consumers("alpha", jobs_before=mark)
        (kept,) = await fetched_of(queue, "alpha")
        assert kept.job.broadcast_id == 5
        await kept.ack()


async def fetched_of(queue: Queue, bot: str, count: int = 1) -> list[ReceivedJob]:
    """``count`` jobs from ``bot``'s free consumer. Waits for the jobs, not for a time."""
    received: list[ReceivedJob] = []
    while len(received) < count:
        received += await queue.fetch_jobs(max_jobs=count - len(received), timeout=1.0, bot=bot)
    return received


class NoBots:
    """A directory with no bot at all, counting its refreshes."""

    def __init__(self) -> None:
        self.refreshes = 0
        self.refreshed = asyncio.Event()

    def all(self) -> tuple[BotSettings, ...]:
        return ()

    async def refresh(self) -> None:
        self.refreshes += 1
        if self.refreshes >= 3:
            self.refreshed.set()


async def test_a_worker_without_any_bot_waits_for_one(caplog: pytest.LogCaptureFixture) -> None:
    """No bot configured or stored: the worker keeps refreshing, says so once, and stops
    cleanly (it starts no lane, so it needs neither NATS nor a database)."""
    bots = NoBots()
    settings = load_settings(None, environ={})
    lanes = Lanes(
        settings,
        store=cast(Store, None),
        queue=cast(Queue, None),
        metrics=Metrics(),
        bots=bots,
        refresh_interval=0.01,
    )
    with caplog.at_level(logging.WARNING, logger="tgbroadcast.worker.lanes"):
        running = asyncio.create_task(lanes.run())
        await bots.refreshed.wait()
        lanes.stop()
        await running
        await lanes.drain(1.0)
    assert lanes.bots == ()
    assert [r.getMessage() for r in caplog.records if "no bot" in r.getMessage()] == [
        "no bot to send with: waiting for one (telegram.token, bots: or POST /v1/bots)"
    ]
