"""RecallBroadcast end to end over real sockets, on every backend: each sent recipient's
messages deleted (an album's in one ``deleteMessages``), ``too_old`` by the service's own
clock and by Telegram's refusal, ``not_found``, the outcomes streamed by WatchBroadcast and
SSE and shown in GetBroadcast, ListDeliveries and the CSV; a recall mid-run sends nothing
more; refused recalls name the state."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from sqlalchemy import update

from tests.fixtures.cluster import AUTH, cluster, environ
from tests.fixtures.nats import wait_until
from tests.fixtures.stack import (
    Backend,
    Stack,
    on_sqlite,
    on_sqlite_and_postgres,
    start_stack,
)
from tests.fixtures.telegram import BOT_ID, call, sends_by_chat, sent_at_least
from tests.fixtures.watching import watch, watch_into
from tgbroadcast.core.store import create_engine
from tgbroadcast.core.store.tables import deliveries
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.worker.delivery import FOLLOW_UP_SLOTS

OUTCOMES = {
    pb.RECALL_OUTCOME_DELETED: "deleted",
    pb.RECALL_OUTCOME_TOO_OLD: "too_old",
    pb.RECALL_OUTCOME_NOT_FOUND: "not_found",
    pb.RECALL_OUTCOME_FAILED: "failed",
}


async def rest(stack: Stack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, stack.http_url + path, json=body, headers=stack.auth) as response,
    ):
        text = await response.text()
        if response.content_type == "text/csv":
            return response.status, text
        return response.status, json.loads(text) if text else None


async def send_and_finish(stack: Stack, body: dict[str, Any]) -> int:
    code, accepted = await rest(stack, "POST", "/v1/broadcasts", body)
    assert code == 202, accepted
    broadcast_id: int = accepted["broadcast_id"]
    closing = (await watch(stack, broadcast_id))[-1]
    assert closing.progress.status == pb.BROADCAST_STATUS_COMPLETED
    return broadcast_id


async def age_deliveries(stack: Stack, broadcast_id: int, user_ids: list[int]) -> None:
    """Make the service's record say these recipients were sent 49 hours ago."""
    engine = create_engine(stack.settings.database.url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(deliveries)
                .where(
                    deliveries.c.broadcast_id == broadcast_id,
                    deliveries.c.user_id.in_(user_ids),
                )
                .values(finished_at=datetime.now(UTC) - timedelta(hours=49))
            )
    finally:
        await engine.dispose()


def deletes(simulator: Simulator) -> Counter[int]:
    """Delete calls per chat, answered or refused."""
    methods = ("deleteMessage", "deleteMessages")
    return Counter(int(c.params["chat_id"]) for c in simulator.calls if c.method in methods)


async def test_recall_deletes_every_sent_message_and_reports_each_outcome(
    stack: Stack, simulator: Simulator
) -> None:
    users = [11, 12, 13, 14, 15]
    broadcast_id = await send_and_finish(stack, {"message": "a typo", "user_ids": users})
    code, page = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}/deliveries")
    message_of = {d["user_id"]: d["message_id"] for d in page["results"]}
    assert all(message_of[u] for u in users)
    # 12: the service's record is 49 hours old (no call is made); 13: Telegram's message is
    # (the service does not know: Telegram refuses); 14: the user deleted it already.
    await age_deliveries(stack, broadcast_id, [12])
    assert simulator.age_messages(chat_id=13, seconds=49 * 3600, bot_id=BOT_ID) == 1
    async with aiohttp.ClientSession() as http:
        status, _ = await call(
            http, simulator, "deleteMessage", json={"chat_id": 14, "message_id": message_of[14]}
        )
    assert status == 200
    before = deletes(simulator)

    code, recalling = await rest(stack, "POST", f"/v1/broadcasts/{broadcast_id}/recall")
    assert code == 200, recalling
    assert recalling["status"] == "recalling"
    assert recalling["recall_at"] is not None
    assert recalling["finished_at"] is not None  # the completion's time is kept
    assert recalling["actions"][-1]["action"] == "recall"
    code, problem = await rest(stack, "POST", f"/v1/broadcasts/{broadcast_id}/recall")
    assert (code, problem["state"]) == (409, "recalling")

    messages = await watch(stack, broadcast_id)
    *updates, closing = messages
    assert closing.progress.status == pb.BROADCAST_STATUS_RECALLED
    assert closing.progress.recalled == len(users)
    recalls = [m.result for m in updates if m.result.recall != pb.RECALL_OUTCOME_UNSPECIFIED]
    assert Counter(r.user_id for r in recalls) == dict.fromkeys(users, 1)  # each once
    outcome_of = {r.user_id: OUTCOMES[r.recall] for r in recalls}
    expected = {11: "deleted", 12: "too_old", 13: "too_old", 14: "not_found", 15: "deleted"}
    assert outcome_of == expected
    assert all(r.outcome == pb.DELIVERY_OUTCOME_SENT for r in recalls)
    assert {r.user_id: r.message_id for r in recalls} == message_of

    # Telegram: the deleted ones are gone, no call for the one the service knew too old.
    remaining = simulator.messages_by_chat(BOT_ID)
    assert not remaining.get(11)
    assert not remaining.get(15)
    assert len(remaining[12]) == 1
    assert len(remaining[13]) == 1
    made = deletes(simulator) - before
    assert 12 not in made
    assert set(made) == {11, 13, 14, 15}

    code, body = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
    assert code == 200
    assert body["status"] == "recalled"
    assert body["recalled"] == len(users)
    assert body["recall_counts"] == {"deleted": 2, "too_old": 2, "not_found": 1}
    assert (body["sent"], body["pending"]) == (len(users), 0)  # what was delivered stays so
    code, page = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}/deliveries")
    assert {d["user_id"]: d["recall"] for d in page["results"]} == expected
    code, csv_text = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}/deliveries.csv")
    header, *rows = csv_text.strip().split("\r\n")
    assert header.endswith(",recall,recall_error,content_version,edit,edit_error,variant,clicks")
    at = header.split(",").index("recall")
    assert {int(r.split(",")[0]): r.split(",")[at] for r in rows} == expected
    async with stack.stub() as stub:
        got = await stub.GetBroadcast(
            pb.GetBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
        )
        assert got.broadcast.status == pb.BROADCAST_STATUS_RECALLED
        assert dict(got.broadcast.recall_counts) == body["recall_counts"]
        listed = await stub.ListDeliveries(
            pb.ListDeliveriesRequest(broadcast_id=broadcast_id), metadata=stack.metadata
        )
        assert {r.user_id: OUTCOMES[r.recall] for r in listed.results} == expected
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RecallBroadcast(
                pb.RecallBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
            )
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "is recalled" in (refused.value.details() or "")

    async with aiohttp.ClientSession() as session, session.get(f"{stack.http_url}/metrics") as page:
        exposition = await page.text()
    assert 'tgb_recalls_total{bot="default",outcome="deleted"} 2.0' in exposition

    # A watch of the recalled broadcast replays each recipient once, its recall on it.
    replay = await watch(stack, broadcast_id)
    assert {m.result.user_id: OUTCOMES[m.result.recall] for m in replay[:-1]} == expected
    assert replay[-1].progress.recalled == len(users)
    sse = await sse_events(stack, broadcast_id)
    assert [name for name, _ in sse] == ["result"] * len(users) + ["end"]
    assert {data["user_id"]: data["recall"] for _, data in sse[:-1]} == expected
    assert sse[-1][1]["progress"]["recalled"] == len(users)


async def sse_events(stack: Stack, broadcast_id: int) -> list[tuple[str, dict[str, Any]]]:
    """Every event of the broadcast's SSE stream, to its end."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{stack.http_url}/v1/broadcasts/{broadcast_id}/events", headers=stack.auth
        ) as response,
    ):
        assert response.status == 200
        name = ""
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


@on_sqlite
async def test_an_album_is_recalled_in_one_call_and_streamed_live_over_sse(
    stack: Stack, simulator: Simulator
) -> None:
    album = [
        {"media_type": "photo", "media_url": "https://example.com/a.jpg"},
        {"media_type": "photo", "media_url": "https://example.com/b.jpg"},
    ]
    users = [21, 22]
    broadcast_id = await send_and_finish(
        stack, {"message": "", "media_type": "album", "album": album, "user_ids": users}
    )
    live: asyncio.Task[list[tuple[str, dict[str, Any]]]] = asyncio.create_task(
        sse_events_after_completion(stack, broadcast_id)
    )
    code, _ = await rest(stack, "POST", f"/v1/broadcasts/{broadcast_id}/recall")
    assert code == 200
    events = await asyncio.wait_for(live, 120)
    names = [name for name, _ in events]
    assert names == ["result"] * 2 + ["status"] + ["recall"] * 2 + ["end"]  # the move, in order
    assert events[2][1]["progress"]["status"] == "recalling"
    recalls = {data["user_id"]: data for name, data in events if name == "recall"}
    assert {u: d["recall"] for u, d in recalls.items()} == dict.fromkeys(users, "deleted")
    assert all(len(d["message_ids"]) == 2 for d in recalls.values())
    assert events[-1][1]["progress"] == {
        "status": "recalled",
        "total": 2,
        "sent": 2,
        "failed": 0,
        "pending": 0,
        "recalled": 2,
    }
    calls = [c for c in simulator.calls if c.method == "deleteMessages" and c.ok]
    assert sorted(int(c.params["chat_id"]) for c in calls) == users
    assert all(len(c.params["message_ids"]) == 2 for c in calls)
    assert not any(simulator.messages_by_chat(BOT_ID).get(u) for u in users)


async def sse_events_after_completion(
    stack: Stack, broadcast_id: int
) -> list[tuple[str, dict[str, Any]]]:
    """The SSE stream of a broadcast about to be recalled: opened once it is recalling."""

    async def recalling() -> bool:
        code, body = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
        return bool(code == 200 and body["status"] in ("recalling", "recalled"))

    await wait_until(recalling)
    return await sse_events(stack, broadcast_id)


@on_sqlite
async def test_a_recall_mid_run_sends_nothing_more_and_deletes_what_was_sent(
    backend: Backend, simulator: Simulator
) -> None:
    overrides = {"TGB_TELEGRAM_RATE_LIMIT": "20", "TGB_WORKER_CONCURRENCY": "4"}
    async with start_stack(backend, simulator, overrides) as stack:
        users = list(range(1000, 1200))
        code, accepted = await rest(
            stack, "POST", "/v1/broadcasts", {"message": "x", "user_ids": users}
        )
        assert code == 202
        broadcast_id = accepted["broadcast_id"]
        messages: list[pb.WatchBroadcastResponse] = []
        watching = asyncio.create_task(watch_into(messages, stack, broadcast_id))
        await wait_until(lambda: sent_at_least(simulator, 20))
        async with stack.stub() as stub:
            answer = await stub.RecallBroadcast(
                pb.RecallBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
            )
        assert answer.broadcast.status == pb.BROADCAST_STATUS_RECALLING
        await asyncio.wait_for(watching, 180)
        closing = messages[-1]
        assert closing.progress.status == pb.BROADCAST_STATUS_RECALLED
        sent = sends_by_chat(simulator)
        assert 20 <= len(sent) < len(users)  # the rest were never sent
        assert all(n == 1 for n in sent.values())
        assert closing.progress.sent == len(sent)
        assert closing.progress.recalled == len(sent)
        assert closing.progress.pending == len(users) - len(sent)
        assert deletes(simulator) == dict.fromkeys(sent, 1)  # each sent one deleted, once
        assert not any(simulator.messages_by_chat(BOT_ID).values())
        recalled = [m.result.user_id for m in messages if m.result.recall]
        assert sorted(recalled) == sorted(sent)


@on_sqlite_and_postgres
async def test_a_worker_killed_mid_recall_loses_nobody(backend: Backend, tmp_path: Path) -> None:
    """kill -9 of one of two workers while they recall: the other finishes its jobs; every
    sent recipient's recall is recorded once, nothing is left in the chats, and only the
    deletes in flight at the kill are done twice (reported ``not_found``)."""
    concurrency = 4
    async with Simulator() as simulator:
        env = environ(
            backend,
            simulator,
            TGB_TELEGRAM_RATE_LIMIT="40",
            TGB_WORKER_CONCURRENCY=str(concurrency),
        )
        async with cluster(env, tmp_path) as services:
            _, *workers = await asyncio.gather(
                services.server(), services.worker(), services.worker()
            )
            users = list(range(3001, 3201))
            broadcast_id = await services.send(users)
            assert (await services.watch(broadcast_id))[-1].progress.status == (
                pb.BROADCAST_STATUS_COMPLETED
            )
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"{services.http_url}/v1/broadcasts/{broadcast_id}/recall", headers=AUTH
                ) as response,
            ):
                assert response.status == 200
            await wait_until(lambda: _deleted_at_least(simulator, 40))
            await workers[0].kill()
            messages = await services.watch(broadcast_id)
    closing = messages[-1]
    assert closing.progress.status == pb.BROADCAST_STATUS_RECALLED
    recalls = [m.result for m in messages[:-1] if m.result.recall]
    assert Counter(r.user_id for r in recalls) == dict.fromkeys(users, 1)
    outcomes = Counter(OUTCOMES[r.recall] for r in recalls)
    assert set(outcomes) <= {"deleted", "not_found"}
    # Deleted, then deleted again after the kill: at most the calls the killed worker held.
    assert outcomes["not_found"] <= FOLLOW_UP_SLOTS * concurrency
    assert not any(simulator.messages_by_chat(BOT_ID).values())
    made = deletes(simulator)
    assert set(made) == set(users)
    assert sum(n - 1 for n in made.values()) <= FOLLOW_UP_SLOTS * concurrency


async def _deleted_at_least(simulator: Simulator, count: int) -> bool:
    return sum(sends_by_chat(simulator, "deleteMessage").values()) >= count
