"""The delivery engine end to end: outcomes, retries, 429s, migration, circuit breaker, file_id."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Mapping

import aiohttp
import grpc
import pytest

from tests.fixtures.held_calls import HoldingSimulator
from tests.fixtures.rest import get, post
from tests.fixtures.stack import Backend, Stack, start_stack
from tests.fixtures.watching import assert_watch_complete, watch
from tgbroadcast.simulator import ChatState, Fault, Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

FAST_RETRIES = {"TGB_WORKER_BACKOFF_BASE": "0.01", "TGB_WORKER_BACKOFF_CAP": "0.05"}


@pytest.fixture
async def fast(backend: Backend, simulator: Simulator) -> AsyncIterator[Stack]:
    async with start_stack(backend, simulator, FAST_RETRIES) as stack:
        yield stack


async def broadcast(stack: Stack, body: Mapping[str, object]) -> int:
    status, answer = await post(stack, "/send-message", body)
    assert status == 202, answer
    broadcast_id: int = answer["broadcast_id"]
    return broadcast_id


async def test_every_refusal_has_its_outcome(fast: Stack) -> None:
    chats = fast.simulator.chats
    chats.declare(2, ChatState.BLOCKED)
    chats.declare(3, ChatState.DEACTIVATED)
    chats.declare(4, ChatState.NOT_STARTED)
    chats.declare(-5, ChatState.KICKED)
    chats.declare(6, ChatState.MISSING)
    broadcast_id = await broadcast(fast, {"message": "hi", "user_ids": [1, 2, 3, 4, -5, 6]})
    results = assert_watch_complete(await watch(fast, broadcast_id), {1, 2, 3, 4, -5, 6})
    outcomes = {user: pb.DeliveryOutcome.Name(r.outcome) for user, r in results.items()}
    assert outcomes == {
        1: "DELIVERY_OUTCOME_SENT",
        2: "DELIVERY_OUTCOME_BLOCKED",
        3: "DELIVERY_OUTCOME_DEACTIVATED",
        4: "DELIVERY_OUTCOME_CANT_INITIATE",
        -5: "DELIVERY_OUTCOME_KICKED",
        6: "DELIVERY_OUTCOME_CHAT_NOT_FOUND",
    }
    assert results[2].error == "Forbidden: bot was blocked by the user"
    assert results[6].error == "Bad Request: chat not found"
    _, report = await get(fast, f"/v1/broadcasts/{broadcast_id}")
    assert (report["sent"], report["failed"], report["pending"]) == (1, 5, 0)
    assert report["outcome_counts"] == {
        "sent": 1,
        "blocked": 1,
        "deactivated": 1,
        "cant_initiate": 1,
        "kicked": 1,
        "chat_not_found": 1,
    }
    async with fast.stub() as stub:
        answer = await stub.GetBroadcast(
            pb.GetBroadcastRequest(broadcast_id=broadcast_id), metadata=fast.metadata
        )
    assert dict(answer.broadcast.outcome_counts) == report["outcome_counts"]


async def test_blocked_and_deactivated_users_are_skipped_next_time(fast: Stack) -> None:
    await post(fast, "/v1/users", {"users": [{"id": i} for i in (10, 11, 12)]})
    fast.simulator.chats.declare(11, ChatState.BLOCKED)
    fast.simulator.chats.declare(12, ChatState.DEACTIVATED)
    first = await broadcast(fast, {"message": "one", "all_users": True})
    assert_watch_complete(await watch(fast, first), {10, 11, 12})
    _, users = await get(fast, "/v1/users")
    assert {u["id"]: u["active"] for u in users["users"]} == {10: True, 11: False, 12: False}

    second = await broadcast(fast, {"message": "two", "all_users": True})
    assert_watch_complete(await watch(fast, second), {10})

    # Upserting makes a user active again.
    fast.simulator.chats.declare(11, ChatState.ACTIVE)
    await post(fast, "/v1/users", {"users": [{"id": 11}]})
    third = await broadcast(fast, {"message": "three", "all_users": True})
    assert_watch_complete(await watch(fast, third), {10, 11})


async def test_a_migrated_group_is_moved_and_sent_to_its_new_id(fast: Stack) -> None:
    fast.simulator.chats.declare(-77, ChatState.MIGRATED, migrate_to_chat_id=-1000000000077)
    await post(fast, "/v1/users", {"users": [{"id": -77, "first_name": "Group"}]})
    first = await broadcast(fast, {"message": "hello group", "all_users": True})
    results = assert_watch_complete(await watch(fast, first), {-77})
    assert results[-77].outcome == pb.DELIVERY_OUTCOME_SENT
    delivered = [c for c in fast.simulator.calls if c.ok and c.method == "sendMessage"]
    assert [c.params["chat_id"] for c in delivered] == [-1000000000077]
    _, users = await get(fast, "/v1/users")
    assert [(u["id"], u["first_name"]) for u in users["users"]] == [(-1000000000077, "Group")]

    second = await broadcast(fast, {"message": "again", "all_users": True})
    assert_watch_complete(await watch(fast, second), {-1000000000077})


async def test_transient_failures_are_retried_then_fail(fast: Stack) -> None:
    sim = fast.simulator
    sim.faults.inject(Fault.server_error(502, "Bad Gateway"), times=2, chat_id=41)
    sim.faults.inject(Fault.bad_gateway_html(), times=1, chat_id=42)
    sim.faults.inject(Fault.server_error(), times=50, chat_id=43)
    broadcast_id = await broadcast(fast, {"message": "retry", "user_ids": [41, 42, 43]})
    results = assert_watch_complete(await watch(fast, broadcast_id), {41, 42, 43})
    assert results[41].outcome == pb.DELIVERY_OUTCOME_SENT
    assert results[42].outcome == pb.DELIVERY_OUTCOME_SENT
    assert results[43].outcome == pb.DELIVERY_OUTCOME_FAILED
    assert results[43].error == "Internal Server Error"
    attempts = Counter(int(c.params["chat_id"]) for c in sim.calls if c.method == "sendMessage")
    assert attempts == {41: 3, 42: 2, 43: 5}  # worker.max_attempts = 5


async def test_a_429_is_waited_out_and_never_counts_as_an_attempt(
    backend: Backend, simulator: Simulator
) -> None:
    overrides = {**FAST_RETRIES, "TGB_WORKER_MAX_ATTEMPTS": "1"}
    async with start_stack(backend, simulator, overrides) as stack:
        simulator.faults.inject(Fault.too_many_requests(1), times=2, chat_id=51)
        broadcast_id = await broadcast(stack, {"message": "slow down", "user_ids": [51, 52]})
        results = assert_watch_complete(await watch(stack, broadcast_id), {51, 52})
    assert results[51].outcome == pb.DELIVERY_OUTCOME_SENT
    calls = [c for c in simulator.calls if str(c.params.get("chat_id")) == "51"]
    assert [c.error_code for c in calls] == [429, 429, None]
    # Each retry waited for retry_after (1 s) after the 429 it answered.
    assert calls[1].at - calls[0].at >= 0.95
    assert calls[2].at - calls[1].at >= 0.95


async def test_content_errors_stop_the_broadcast(backend: Backend) -> None:
    """The breaker trips on the refusals Telegram gave, whatever else is in flight: the sends
    after the threshold's are held in the simulator until the broadcast has failed."""
    # Telegram cannot fetch it, and neither may the service (an internal address): no network
    # is needed for the refusal to stand.
    url = "https://127.0.0.1:9/missing.jpg"
    recipients = list(range(1000, 1200))
    async with (
        HoldingSimulator() as simulator,
        start_stack(backend, simulator, FAST_RETRIES) as fast,
    ):
        threshold = fast.settings.worker.content_error_threshold
        simulator.fail_url(url)
        held = simulator.hold("sendPhoto", after=threshold)
        try:
            broadcast_id = await broadcast(
                fast, {"media_type": "photo", "media_url": url, "user_ids": recipients}
            )
            messages = await watch(fast, broadcast_id)
            closing = messages[-1]
            assert closing.progress.status == pb.BROADCAST_STATUS_FAILED
            _, report = await get(fast, f"/v1/broadcasts/{broadcast_id}")
        finally:
            held.release()
    # The stack has stopped: every send it started has been answered.
    assert report["status"] == "failed"
    assert "Bad Request: failed to get HTTP URL content" in report["error"]
    assert (
        "the service's own fetch: media URL https://127.0.0.1:9/missing.jpg may not"
        in (report["error"])
    )
    stopped_after = re.match(r"stopped after (\d+) recipients were refused", report["error"])
    assert stopped_after is not None
    assert int(stopped_after.group(1)) == threshold  # no other refusal had been answered
    tried = [c for c in simulator.calls if c.method == "sendPhoto"]
    # The breaker, not the recipient list, ended it: after the threshold's refusals only the
    # send in flight (media by URL goes one send at a time until Telegram has the file).
    assert threshold <= len(tried) <= threshold + 1
    assert held.held <= 1
    # Recipients never tried stay pending: the broadcast will not send to them.
    assert report["sent"] + report["failed"] <= len(tried)
    assert report["pending"] >= len(recipients) - len(tried)


async def test_media_by_url_is_fetched_once_then_sent_by_file_id(fast: Stack) -> None:
    url = "https://cdn.example.com/cat.jpg"
    recipients = list(range(2000, 2040))
    broadcast_id = await broadcast(
        fast,
        {"message": "a cat", "media_type": "photo", "media_url": url, "user_ids": recipients},
    )
    assert_watch_complete(await watch(fast, broadcast_id), set(recipients))
    photos = [c for c in fast.simulator.calls if c.method == "sendPhoto"]
    assert all(c.ok for c in photos)
    assert Counter(c.media for c in photos) == {"url": 1, "file_id": len(recipients) - 1}
    assert {c.params["photo"] for c in photos if c.media == "file_id"} == {
        photos[0].result["photo"][-1]["file_id"]
    }


async def test_paid_broadcasts_pass_the_flag(fast: Stack) -> None:
    broadcast_id = await broadcast(
        fast, {"message": "paid", "user_ids": [61, 62], "allow_paid_broadcast": True}
    )
    assert_watch_complete(await watch(fast, broadcast_id), {61, 62})
    sends = [c for c in fast.simulator.calls if c.method == "sendMessage"]
    assert [c.params.get("allow_paid_broadcast") for c in sends] == [True, True]
    _, report = await get(fast, f"/v1/broadcasts/{broadcast_id}")
    assert report["allow_paid_broadcast"] is True
    free = await broadcast(fast, {"message": "free", "user_ids": [63]})
    assert_watch_complete(await watch(fast, free), {63})
    assert "allow_paid_broadcast" not in fast.simulator.calls[-1].params


async def test_a_paid_broadcast_does_not_wait_behind_a_free_ones_jobs(
    backend: Backend, simulator: Simulator
) -> None:
    """Free and paid jobs travel apart: a paid broadcast sent after a long free one is sent
    at once, while the free one's jobs still wait in the queue for its slow budget."""
    slow = {**FAST_RETRIES, "TGB_TELEGRAM_RATE_LIMIT": "5"}
    async with start_stack(backend, simulator, slow) as stack:
        free = await broadcast(stack, {"message": "free", "user_ids": list(range(1000, 2000))})
        paid = await broadcast(
            stack, {"message": "paid", "user_ids": [61, 62, 63], "allow_paid_broadcast": True}
        )
        async with asyncio.timeout(60):  # behind the free jobs it would take minutes
            assert_watch_complete(await watch(stack, paid), {61, 62, 63})
        _, report = await get(stack, f"/v1/broadcasts/{free}")
        assert report["pending"] > 500
        status, _ = await post(stack, f"/v1/broadcasts/{free}/cancel", {})
        assert status == 200


async def test_metrics_count_outcomes_429s_and_permits(fast: Stack) -> None:
    fast.simulator.chats.declare(72, ChatState.BLOCKED)
    fast.simulator.faults.inject(Fault.too_many_requests(1), times=1, chat_id=71)
    broadcast_id = await broadcast(fast, {"message": "measured", "user_ids": [71, 72, 73]})
    assert_watch_complete(await watch(fast, broadcast_id), {71, 72, 73})
    async with (
        aiohttp.ClientSession() as session,
        session.get(fast.http_url + "/metrics") as response,  # no token needed
    ):
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['tgb_messages_total{bot="default",outcome="sent"}'] == 2
    assert samples['tgb_messages_total{bot="default",outcome="blocked"}'] == 1
    assert samples['tgb_telegram_429_total{bot="default"}'] == 1
    # Three sends and one retry.
    assert samples['tgb_rate_permits_total{bot="default",tier="free"}'] == 4
    assert samples['tgb_broadcasts_created_total{bot="default"}'] == 1
    assert samples['tgb_recipients_accepted_total{bot="default"}'] == 3
    assert samples["tgb_queue_pending_jobs"] == 0
    assert samples['tgb_send_seconds_count{bot="default"}'] == 4


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


async def test_grpc_upload_goes_to_telegram_once(fast: Stack) -> None:
    recipients = list(range(3000, 3012))
    async with fast.stub() as stub:
        sent = await stub.SendMessage(
            pb.SendMessageRequest(
                message="uploaded",
                media_type=pb.MEDIA_TYPE_PHOTO,
                media_data=PNG,
                media_filename="chart.png",
                user_ids=recipients,
            ),
            metadata=fast.metadata,
        )
    assert_watch_complete(await watch(fast, sent.broadcast_id), set(recipients))
    photos = [c for c in fast.simulator.calls if c.method == "sendPhoto"]
    assert all(c.ok for c in photos)
    assert Counter(c.media for c in photos) == {"upload": 1, "file_id": len(recipients) - 1}
    assert photos[0].params["photo"]["size"] == len(PNG)
    assert photos[0].params["photo"]["upload"] == "chart.png"
    assert all(c.params["caption"] == "uploaded" for c in photos)


async def test_rest_multipart_upload_goes_to_telegram_once(fast: Stack) -> None:
    recipients = [3101, 3102, 3103]
    form = aiohttp.FormData()
    form.add_field("media_type", "document")
    form.add_field("message", "the report")
    form.add_field("user_ids", json.dumps(recipients))
    form.add_field("media", b"%PDF-1.4 report", filename="report.pdf")
    async with (
        aiohttp.ClientSession() as session,
        session.post(fast.http_url + "/send-message", data=form, headers=fast.auth) as response,
    ):
        assert response.status == 202
        broadcast_id = (await response.json())["broadcast_id"]
    assert_watch_complete(await watch(fast, broadcast_id), set(recipients))
    documents = [c for c in fast.simulator.calls if c.method == "sendDocument"]
    assert Counter(c.media for c in documents) == {"upload": 1, "file_id": 2}
    assert documents[0].params["document"]["upload"] == "report.pdf"


async def test_bad_uploads_are_refused(fast: Stack) -> None:
    async with fast.stub() as stub:
        for request, field in [
            (pb.SendMessageRequest(message="t", media_data=b"x", user_ids=[1]), "media_data"),
            (
                pb.SendMessageRequest(
                    media_type=pb.MEDIA_TYPE_PHOTO,
                    media_url="https://x.example/a.png",
                    media_data=b"x",
                    user_ids=[1],
                ),
                "media_url",
            ),
            (
                pb.SendMessageRequest(
                    media_type=pb.MEDIA_TYPE_PHOTO,
                    media_data=b"x" * (10 * 1024 * 1024 + 1),
                    user_ids=[1],
                ),
                "media_data",
            ),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.SendMessage(request, metadata=fast.metadata)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in (raised.value.details() or "")
    form = aiohttp.FormData()
    form.add_field("media_type", "photo")
    form.add_field("user_ids", "1,2")
    form.add_field("chat", "x")
    form.add_field("media", b"x", filename="a.png")
    async with (
        aiohttp.ClientSession() as session,
        session.post(fast.http_url + "/send-message", data=form, headers=fast.auth) as response,
    ):
        assert response.status == 400
        problem = await response.json(content_type=None)
    assert {e["field"] for e in problem["errors"]} == {"chat", "user_ids"}
    # Errors name the form's own part, "media": a file without a media type, an empty file.
    for media_type, data, message in (("", b"x", "is only for media"), ("photo", b"", "empty")):
        form = aiohttp.FormData()
        if media_type:
            form.add_field("media_type", media_type)
        form.add_field("message", "hi")
        form.add_field("user_ids", "[1]")
        form.add_field("media", data, filename="a.png")
        async with (
            aiohttp.ClientSession() as session,
            session.post(fast.http_url + "/send-message", data=form, headers=fast.auth) as answer,
        ):
            assert answer.status == 400
            problem = await answer.json(content_type=None)
        assert [e["field"] for e in problem["errors"]] == ["media"], problem
        assert message in problem["errors"][0]["message"]
    assert fast.simulator.calls == ()
