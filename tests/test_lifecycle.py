"""The broadcast lifecycle end to end over real sockets: refused moves naming the state (gRPC
FAILED_PRECONDITION, REST 409), ListBroadcasts, cancel and pause/resume mid-run (the latter
across two worker processes), scheduling (also across a restart), idempotent SendMessage."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select, update

from tests.fixtures.cluster import AUTH, cluster, environ
from tests.fixtures.nats import no_jobs, wait_until
from tests.fixtures.stack import Backend, Stack, on_sqlite_and_postgres, start_stack
from tests.fixtures.telegram import sends_by_chat, sent_at_least
from tests.fixtures.watching import assert_watch_complete, watch
from tgbroadcast.core.store import create_engine
from tgbroadcast.core.store.tables import broadcasts, deliveries
from tgbroadcast.simulator import Fault, Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.worker.broadcast_states import STATUS_INTERVAL

RATE = 20
"""Messages per second of the slow stacks: a broadcast of 200 takes about ten seconds."""
CONCURRENCY = 4


async def call(
    stack: Stack,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            stack.http_url + path,
            json=body,
            headers={**stack.auth, **(headers or {})},
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


def later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def status_of(stack: Stack, broadcast_id: int) -> str:
    code, body = await call(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
    assert code == 200
    status: str = body["status"]
    return status


def sent_count(simulator: Simulator) -> int:
    return sum(sends_by_chat(simulator).values())


@pytest.fixture
async def slow_stack(backend: Backend, simulator: Simulator) -> Any:
    overrides = {
        "TGB_TELEGRAM_RATE_LIMIT": str(RATE),
        "TGB_WORKER_CONCURRENCY": str(CONCURRENCY),
    }
    async with start_stack(backend, simulator, overrides) as started:
        yield started


async def test_refused_moves_name_the_state_over_rest_and_grpc(stack: Stack) -> None:
    code, body = await call(
        stack,
        "POST",
        "/v1/broadcasts",
        {"message": "later", "user_ids": [1, 2], "send_at": later(3600)},
    )
    assert (code, body["status"], body["total"]) == (202, "scheduled", 2)
    broadcast_id = body["broadcast_id"]

    for action in ("pause", "resume"):
        code, problem = await call(stack, "POST", f"/v1/broadcasts/{broadcast_id}/{action}")
        assert code == 409
        assert problem["state"] == "scheduled"
        assert problem["status"] == 409
        assert f"broadcast {broadcast_id} is scheduled" in problem["detail"]

    code, cancelled = await call(stack, "POST", f"/v1/broadcasts/{broadcast_id}/cancel")
    assert code == 200
    assert cancelled["status"] == "cancelled"
    assert cancelled["pending"] == 2
    assert cancelled["finished_at"] is not None
    assert cancelled["send_at"] is not None

    code, problem = await call(stack, "POST", f"/v1/broadcasts/{broadcast_id}/cancel")
    assert (code, problem["state"]) == (409, "cancelled")
    assert (
        "only a scheduled, queued, running or paused broadcast can be cancelled"
        in (problem["detail"])
    )

    async with stack.stub() as stub:
        moves: list[Callable[[], Awaitable[Any]]] = [
            lambda: stub.PauseBroadcast(
                pb.PauseBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
            ),
            lambda: stub.ResumeBroadcast(
                pb.ResumeBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
            ),
            lambda: stub.CancelBroadcast(
                pb.CancelBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
            ),
        ]
        for move in moves:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await move()
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "is cancelled" in (refused.value.details() or "")
            status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
            assert status is not None
            failure = error_details_pb2.PreconditionFailure()
            assert status.details[0].Unpack(failure)
            assert [v.description for v in failure.violations] == ["cancelled"]
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.PauseBroadcast(
                pb.PauseBroadcastRequest(broadcast_id=999_999), metadata=stack.metadata
            )
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    code, _ = await call(stack, "POST", "/v1/broadcasts/999999/resume")
    assert code == 404
    # A cancelled scheduled broadcast never starts, and a watch of it ends at once.
    closing = (await watch(stack, broadcast_id))[-1]
    assert closing.progress.status == pb.BROADCAST_STATUS_CANCELLED
    assert sends_by_chat(stack.simulator) == {}


async def test_list_broadcasts_filters_and_pages(stack: Stack) -> None:
    ids = []
    for index in range(5):
        code, body = await call(
            stack,
            "POST",
            "/v1/broadcasts",
            {"message": f"n{index}", "user_ids": [index + 1], "send_at": later(3600)},
        )
        assert code == 202
        ids.append(body["broadcast_id"])
    for broadcast_id in ids[:2]:
        code, _ = await call(stack, "POST", f"/v1/broadcasts/{broadcast_id}/cancel")
        assert code == 200

    seen: list[int] = []
    token = ""
    while True:
        code, page = await call(
            stack, "GET", f"/v1/broadcasts?status=scheduled&page_size=2&page_token={token}"
        )
        assert code == 200
        assert len(page["broadcasts"]) <= 2
        seen += [b["broadcast_id"] for b in page["broadcasts"]]
        assert all(b["status"] == "scheduled" for b in page["broadcasts"])
        token = page["next_page_token"]
        if not token:
            break
    assert seen == sorted(ids[2:], reverse=True)

    code, both = await call(stack, "GET", "/v1/broadcasts?status=scheduled&status=cancelled")
    assert [b["broadcast_id"] for b in both["broadcasts"]] == sorted(ids, reverse=True)
    code, listed = await call(stack, "GET", "/v1/broadcasts?status=scheduled,cancelled")
    assert (code, listed["broadcasts"]) == (200, both["broadcasts"])  # as the other lists
    code, problem = await call(stack, "GET", "/v1/broadcasts?status=sleeping&page_size=5000")
    assert code == 400
    assert {e["field"] for e in problem["errors"]} == {"status[0]", "page_size"}
    code, problem = await call(stack, "GET", "/v1/broadcasts?page_token=nonsense")
    assert (code, problem["errors"][0]["field"]) == (400, "page_token")

    async with stack.stub() as stub:
        page = await stub.ListBroadcasts(
            pb.ListBroadcastsRequest(statuses=[pb.BROADCAST_STATUS_CANCELLED]),
            metadata=stack.metadata,
        )
        assert [b.broadcast_id for b in page.broadcasts] == sorted(ids[:2], reverse=True)
        assert all(b.HasField("send_at") for b in page.broadcasts)
        assert page.next_page_token == ""
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListBroadcasts(
                pb.ListBroadcastsRequest(statuses=[pb.BROADCAST_STATUS_UNSPECIFIED]),
                metadata=stack.metadata,
            )
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_mid_run_stops_sending(slow_stack: Stack) -> None:
    stack = slow_stack
    recipients = list(range(1, 201))
    code, body = await call(
        stack, "POST", "/send-message", {"message": "x", "user_ids": recipients}
    )
    assert code == 202
    broadcast_id = body["broadcast_id"]
    await wait_until(lambda: sent_at_least(stack.simulator, 10))
    async with stack.stub() as stub:
        response = await stub.CancelBroadcast(
            pb.CancelBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
        )
    assert response.broadcast.status == pb.BROADCAST_STATUS_CANCELLED
    at_cancel = sent_count(stack.simulator)
    # Once no job is left in the queue no worker holds one: nothing can be sent any more.
    queue = stack.running.backends.queue
    await wait_until(lambda: no_jobs(queue))
    after = sent_count(stack.simulator)
    # What the code bounds, whatever the machine's speed: the sends holding a slot at the
    # cancel, plus those whose permit came before the worker's next read of the status (at
    # most STATUS_INTERVAL later), at no more than RATE a second.
    assert after - at_cancel <= CONCURRENCY + RATE * (STATUS_INTERVAL + 1)
    code, final = await call(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
    assert final["status"] == "cancelled"
    assert final["sent"] == after  # every send was recorded; nobody twice
    assert final["pending"] == len(recipients) - after > 0
    assert sends_by_chat(stack.simulator) == dict.fromkeys(sends_by_chat(stack.simulator), 1)
    # The workers let go of the recipients they did not send: pending and unclaimed.
    assert await _claimed(stack.settings.database.url, broadcast_id) == 0
    closing = (await watch(stack, broadcast_id))[-1]
    assert closing.progress.status == pb.BROADCAST_STATUS_CANCELLED


async def test_scheduled_broadcast_starts_on_time(stack: Stack) -> None:
    code, body = await call(
        stack,
        "POST",
        "/v1/broadcasts",
        {"message": "on time", "user_ids": [31, 32], "send_at": later(3600)},
    )
    assert (code, body["status"]) == (202, "scheduled")
    broadcast_id = body["broadcast_id"]
    # Its time comes in a second: set in SQL once it is scheduled, so that it was scheduled
    # however long the request took.
    send_at = datetime.now(UTC) + timedelta(seconds=1)
    await set_send_at(stack.settings.database.url, broadcast_id, send_at)
    await wait_until(lambda: _status_is(stack, broadcast_id, "completed"))
    code, done = await call(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
    assert datetime.fromisoformat(done["started_at"]) >= send_at
    assert datetime.fromisoformat(done["send_at"]) == send_at
    assert sends_by_chat(stack.simulator) == {31: 1, 32: 1}
    for bad in ("tomorrow", "2030-01-01", "2030-01-01T09:00:00"):
        code, problem = await call(
            stack, "POST", "/v1/broadcasts", {"message": "m", "user_ids": [1], "send_at": bad}
        )
        assert (code, problem["errors"][0]["field"]) == (400, "send_at")


async def test_due_broadcasts_start_after_a_restart(
    backend: Backend, simulator: Simulator, tmp_path: Path
) -> None:
    async with start_stack(backend, simulator) as stack:
        code, body = await call(
            stack,
            "POST",
            "/send-message",
            {"message": "m", "user_ids": [41, 42], "send_at": later(3600)},
        )
        assert (code, body["status"]) == (202, "scheduled")
        broadcast_id = body["broadcast_id"]
    # While no server runs, its time comes.
    past = datetime.now(UTC) - timedelta(minutes=5)
    await set_send_at(backend.environ["TGB_DATABASE_DSN"], broadcast_id, past)
    assert sends_by_chat(simulator) == {}
    async with start_stack(backend, simulator) as stack:
        assert_watch_complete(await watch(stack, broadcast_id), {41, 42})
    assert sends_by_chat(simulator) == {41: 1, 42: 1}


async def test_idempotent_send_message(stack: Stack) -> None:
    body = {"message": "once", "user_ids": [51, 52]}
    key = {"Idempotency-Key": "order-17"}
    code, first = await call(stack, "POST", "/send-message", body, key)
    assert code == 202
    assert "replayed" not in first
    code, again = await call(stack, "POST", "/v1/broadcasts", body, key)
    assert code == 202
    assert again == {**first, "status": again["status"], "replayed": True}
    # The body field is the same key.
    code, field = await call(
        stack, "POST", "/send-message", {**body, "idempotency_key": "order-17"}
    )
    assert (code, field["broadcast_id"], field["replayed"]) == (202, first["broadcast_id"], True)
    # Same key, another request: 409, nothing written.
    code, problem = await call(stack, "POST", "/send-message", {**body, "message": "twice"}, key)
    assert code == 409
    assert "order-17" in problem["detail"]
    assert "different request" in problem["detail"]
    code, problem = await call(
        stack, "POST", "/send-message", {**body, "idempotency_key": "a"}, {"Idempotency-Key": "b"}
    )
    assert (code, problem["errors"][0]["field"]) == (400, "idempotency_key")
    code, problem = await call(stack, "POST", "/send-message", body, {"Idempotency-Key": "é" * 3})
    assert (code, problem["errors"][0]["field"]) == (400, "idempotency_key")
    code, listed = await call(stack, "GET", "/v1/broadcasts")
    assert [b["broadcast_id"] for b in listed["broadcasts"]] == [first["broadcast_id"]]
    assert listed["broadcasts"][0]["idempotency_key"] == "order-17"

    # Identical requests racing: one broadcast, one of them is the original.
    racing = {"message": "race", "user_ids": [61, 62, 63]}
    answers = await asyncio.gather(
        *(
            call(stack, "POST", "/send-message", racing, {"Idempotency-Key": "race"})
            for _ in range(6)
        )
    )
    assert {code for code, _ in answers} == {202}
    assert len({answer["broadcast_id"] for _, answer in answers}) == 1
    assert sorted(answer.get("replayed", False) for _, answer in answers) == [False] + [True] * 5
    assert_watch_complete(await watch(stack, answers[0][1]["broadcast_id"]), {61, 62, 63})

    async with stack.stub() as stub:
        request = pb.SendMessageRequest(message="grpc", user_ids=[71], idempotency_key="g-1")
        original = await stub.SendMessage(request, metadata=stack.metadata)
        replay = await stub.SendMessage(request, metadata=stack.metadata)
        assert (original.replayed, replay.replayed) == (False, True)
        assert replay.broadcast_id == original.broadcast_id
        with pytest.raises(grpc.aio.AioRpcError) as conflict:
            await stub.SendMessage(
                pb.SendMessageRequest(message="other", user_ids=[71], idempotency_key="g-1"),
                metadata=stack.metadata,
            )
        assert conflict.value.code() is grpc.StatusCode.ALREADY_EXISTS
        scheduled = pb.SendMessageRequest(message="later", user_ids=[72])
        scheduled.send_at.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
        answer = await stub.SendMessage(scheduled, metadata=stack.metadata)
        assert answer.status == pb.BROADCAST_STATUS_SCHEDULED
    assert_watch_complete(await watch(stack, first["broadcast_id"]), {51, 52})
    assert_watch_complete(await watch(stack, original.broadcast_id), {71})
    counts = sends_by_chat(stack.simulator)
    assert counts == Counter({51: 1, 52: 1, 61: 1, 62: 1, 63: 1, 71: 1})


@on_sqlite_and_postgres
async def test_pause_and_resume_across_two_worker_processes(
    backend: Backend, tmp_path: Path
) -> None:
    """Paused mid-run, the workers drop the broadcast's jobs; resumed, it finishes with every
    recipient sent exactly once — also when the resume follows the pause at once, while
    sends are in flight."""
    async with Simulator() as simulator:
        env = environ(
            backend,
            simulator,
            TGB_TELEGRAM_RATE_LIMIT=str(2 * RATE),  # 160 recipients take four seconds
            TGB_WORKER_CONCURRENCY=str(CONCURRENCY),
        )
        async with cluster(env, tmp_path) as services:
            await asyncio.gather(services.server(), services.worker(), services.worker())
            async with aiohttp.ClientSession(headers=AUTH) as session:
                # 1. Pause, let every worker let go, then resume.
                recipients = list(range(1, 161))
                broadcast_id = await services.send(recipients)
                await wait_until(lambda: sent_at_least(simulator, 20))
                paused = await _post(
                    session, f"{services.http_url}/v1/broadcasts/{broadcast_id}/pause"
                )
                assert paused["status"] == "paused"
                await wait_until(lambda: _no_jobs(session, services.http_url))
                held = sent_count(simulator)
                async with session.get(f"{services.http_url}/v1/broadcasts/{broadcast_id}") as r:
                    state = await r.json()
                assert state["status"] == "paused"
                assert state["sent"] == held  # in-flight sends were recorded
                assert state["pending"] > 0
                resumed = await _post(
                    session, f"{services.http_url}/v1/broadcasts/{broadcast_id}/resume"
                )
                assert resumed["status"] == "running"
                assert_watch_complete(await services.watch(broadcast_id), set(recipients))
                assert sends_by_chat(simulator) == dict.fromkeys(recipients, 1)

                # 2. Resumed at once, with sends in flight: the first sends to four chats
                # hang (then fail) across the pause and the resume. The new generation is
                # published at once; its jobs leave the four to the old job holding them,
                # which lets go of them when it sees the resume, and then send to them.
                quick = list(range(1001, 1121))
                slow = quick[20:24]
                for chat_id in slow:
                    simulator.faults.inject(Fault.hang(seconds=3), chat_id=chat_id)
                broadcast_id = await services.send(quick)
                await wait_until(lambda: _all_called(simulator, slow))
                url = f"{services.http_url}/v1/broadcasts/{broadcast_id}"
                assert (await _post(session, url + "/pause"))["status"] == "paused"
                assert (await _post(session, url + "/resume"))["status"] == "running"
                assert_watch_complete(await services.watch(broadcast_id), set(quick))
                assert sends_by_chat(simulator) == dict.fromkeys(recipients + quick, 1)
                assert await _claimed(env["TGB_DATABASE_DSN"], broadcast_id) == 0


async def _all_called(simulator: Simulator, chat_ids: list[int]) -> bool:
    return all(simulator.calls_to(chat_id) for chat_id in chat_ids)


async def set_send_at(database_url: str, broadcast_id: int, send_at: datetime) -> None:
    """Move a scheduled broadcast's start time in SQL, behind the service's back."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(broadcasts).where(broadcasts.c.id == broadcast_id).values(send_at=send_at)
            )
    finally:
        await engine.dispose()


async def _claimed(database_url: str, broadcast_id: int) -> int:
    """How many of the broadcast's deliveries some job holds a claim on."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            count = await connection.scalar(
                select(func.count())
                .select_from(deliveries)
                .where(
                    deliveries.c.broadcast_id == broadcast_id,
                    deliveries.c.claimed_by.is_not(None),
                )
            )
    finally:
        await engine.dispose()
    return int(count or 0)


async def _post(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.post(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _no_jobs(session: aiohttp.ClientSession, http_url: str) -> bool:
    async with session.get(http_url + "/metrics") as response:
        text = await response.text()
    lines = [line for line in text.splitlines() if line.startswith("tgb_queue_pending_jobs ")]
    return bool(lines) and float(lines[0].split()[1]) == 0


async def _status_is(stack: Stack, broadcast_id: int, status: str) -> bool:
    return await status_of(stack, broadcast_id) == status
