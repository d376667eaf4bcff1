"""Delivery reports: ListDeliveries (store, gRPC, REST), the CSV export, and the live
Server-Sent Events stream of a broadcast."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import grpc
import pytest

from tests.fixtures.held_calls import HoldingSimulator
from tests.fixtures.nats import wait_until
from tests.fixtures.stack import Backend, Stack, start_stack
from tgbroadcast.core.domain.errors import InvalidArgument, NotFound
from tgbroadcast.core.domain.model import Content, DeliveryResult, DeliveryState, NewBroadcast
from tgbroadcast.core.rules import page_tokens
from tgbroadcast.core.service.reports import export_deliveries, list_deliveries
from tgbroadcast.core.store import Store
from tgbroadcast.simulator import ChatState
from tgbroadcast.v1 import broadcast_pb2 as pb

AT = datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
AT_TEXT = "2025-05-06T07:08:09.123456Z"
TRICKY_ERROR = 'Bad Request: odd, "quoted" text\nwith a second line'

# user id -> (state, error); the other recipients stay pending.
OUTCOMES: dict[int, tuple[DeliveryState, str | None]] = {
    10: (DeliveryState.SENT, None),
    20: (DeliveryState.BLOCKED, "Forbidden: bot was blocked by the user"),
    30: (DeliveryState.SENT, None),
    40: (DeliveryState.BAD_REQUEST, TRICKY_ERROR),
    60: (DeliveryState.BLOCKED, "Forbidden: bot was blocked by the user"),
    70: (DeliveryState.SENT, None),
}
RECIPIENTS = (70, 10, 50, 20, 30, 40, 60, 80, 90)
ALBUM = (1070, 1071, 1072)
"""User 70 got an album: every message's id is kept."""
PENDING = (50, 80, 90)


async def seeded(store: Store) -> int:
    """A broadcast to ``RECIPIENTS`` with ``OUTCOMES`` recorded; the rest pending."""
    broadcast = await store.create_broadcast(
        NewBroadcast(content=Content(message="report me"), user_ids=RECIPIENTS)
    )
    await store.record_results(
        [
            DeliveryResult(
                broadcast_id=broadcast.id,
                user_id=user_id,
                state=state,
                finished_at=AT,
                message_id=1000 + user_id if state is DeliveryState.SENT else None,
                error=error,
                message_ids=ALBUM if user_id == 70 else (),
            )
            for user_id, (state, error) in OUTCOMES.items()
        ]
    )
    return broadcast.id


def expected_ids(*states: str) -> list[int]:
    wanted = {DeliveryState(s) for s in states}
    every = sorted(RECIPIENTS)
    if not wanted:
        return every
    return [u for u in every if OUTCOMES.get(u, (DeliveryState.PENDING, None))[0] in wanted]


# -- the store and the core, on every backend ------------------------------------------------


@pytest.mark.parametrize(
    "outcomes",
    [(), ("blocked",), ("pending",), ("blocked", "pending"), ("sent", "bad_request"), ("kicked",)],
)
async def test_report_pages_follow_user_ids_and_filters(
    store: Store, outcomes: tuple[str, ...]
) -> None:
    broadcast_id = await seeded(store)
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        page = await list_deliveries(
            store, broadcast_id, outcomes=outcomes, page_size=2, page_token=token
        )
        pages += 1
        assert len(page.deliveries) <= 2
        seen.extend(d.user_id for d in page.deliveries)
        token = page.next_page_token
        if not token:
            break
    expected = expected_ids(*outcomes)
    assert seen == expected
    assert pages == max(1, -(-len(expected) // 2))  # no empty trailing page


async def test_report_rows_carry_outcomes_and_pending_has_no_time(store: Store) -> None:
    broadcast_id = await seeded(store)
    page = await list_deliveries(store, broadcast_id, outcomes=(), page_size=0, page_token="")
    rows = {d.user_id: d for d in page.deliveries}
    assert page.next_page_token == ""
    assert rows[10].state is DeliveryState.SENT
    assert rows[10].message_id == 1010
    assert rows[10].finished_at == AT
    assert rows[10].error is None
    assert rows[10].message_ids == ()
    assert rows[10].all_message_ids == (1010,)
    assert (rows[70].message_id, rows[70].message_ids) == (1070, ALBUM)
    assert rows[40].state is DeliveryState.BAD_REQUEST
    assert rows[40].error == TRICKY_ERROR
    assert rows[40].message_id is None
    for user_id in PENDING:
        assert rows[user_id].state is DeliveryState.PENDING
        assert rows[user_id].finished_at is None
        assert rows[user_id].message_id is None
        assert rows[user_id].error is None


async def test_report_refuses_bad_requests_and_unknown_broadcasts(store: Store) -> None:
    broadcast_id = await seeded(store)
    with pytest.raises(NotFound):
        await list_deliveries(store, broadcast_id + 1, outcomes=(), page_size=0, page_token="")
    with pytest.raises(InvalidArgument) as bad:
        await list_deliveries(
            store, broadcast_id, outcomes=("sent", "lost"), page_size=5000, page_token="zz!"
        )
    fields = {v.field for v in bad.value.violations}
    assert fields == {"outcomes[1]"}  # outcomes are checked first, alone
    with pytest.raises(InvalidArgument) as bad:
        await list_deliveries(store, broadcast_id, outcomes=(), page_size=5000, page_token="zz!")
    assert {v.field for v in bad.value.violations} == {"page_size", "page_token"}
    # A page token is its own list's: not another broadcast's deliveries', not the users'.
    paged = await list_deliveries(store, broadcast_id, outcomes=(), page_size=1, page_token="")
    other = await seeded(store)
    with pytest.raises(InvalidArgument) as bad:
        await list_deliveries(
            store, other, outcomes=(), page_size=1, page_token=paged.next_page_token
        )
    assert [v.description for v in bad.value.violations] == [
        "is not a token this service issued for this list"
    ]
    with pytest.raises(ValueError, match="for this list"):  # the users' list
        page_tokens.decode(page_tokens.USERS, paged.next_page_token)
    # A token of the version before (a users' kind) still pages, in a rolling upgrade.
    legacy = page_tokens.encode(page_tokens.USERS, paged.deliveries[0].user_id)
    after = await list_deliveries(store, broadcast_id, outcomes=(), page_size=1, page_token=legacy)
    resumed = await list_deliveries(
        store, broadcast_id, outcomes=(), page_size=1, page_token=paged.next_page_token
    )
    assert after.deliveries == resumed.deliveries
    # A filter nobody matches on a known broadcast is an empty page, not NOT_FOUND.
    empty = await list_deliveries(
        store, broadcast_id, outcomes=("kicked",), page_size=0, page_token=""
    )
    assert empty.deliveries == ()
    assert empty.next_page_token == ""


async def test_export_reads_page_by_page(store: Store) -> None:
    broadcast_id = await seeded(store)
    pages = [
        page async for page in export_deliveries(store, broadcast_id, outcomes=(), page_size=4)
    ]
    assert [len(p) for p in pages] == [4, 4, 1]
    assert [d.user_id for p in pages for d in p] == sorted(RECIPIENTS)
    with pytest.raises(NotFound):
        async for _ in export_deliveries(store, broadcast_id + 1, outcomes=()):
            pass


# -- over the wire -------------------------------------------------------------------------------


async def seeded_in(stack: Stack) -> int:
    """The seeded broadcast in the running stack's database (never dispatched: its pending
    recipients stay pending)."""
    return await seeded(stack.running.backends.store)


async def get_json(stack: Stack, path: str, **params: Any) -> tuple[int, str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.http_url + path, headers=stack.auth, params=params) as response,
    ):
        return response.status, response.content_type, await response.json(content_type=None)


async def test_grpc_list_deliveries(stack: Stack) -> None:
    broadcast_id = await seeded_in(stack)
    async with stack.stub() as stub:
        first = await stub.ListDeliveries(
            pb.ListDeliveriesRequest(
                broadcast_id=broadcast_id,
                outcomes=[pb.DELIVERY_OUTCOME_BLOCKED, pb.DELIVERY_OUTCOME_PENDING],
                page_size=3,
            ),
            metadata=stack.metadata,
        )
        second = await stub.ListDeliveries(
            pb.ListDeliveriesRequest(
                broadcast_id=broadcast_id,
                outcomes=[pb.DELIVERY_OUTCOME_BLOCKED, pb.DELIVERY_OUTCOME_PENDING],
                page_size=3,
                page_token=first.next_page_token,
            ),
            metadata=stack.metadata,
        )
        everything = await stub.ListDeliveries(
            pb.ListDeliveriesRequest(broadcast_id=broadcast_id), metadata=stack.metadata
        )
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.ListDeliveries(
                pb.ListDeliveriesRequest(broadcast_id=broadcast_id + 1), metadata=stack.metadata
            )
        with pytest.raises(grpc.aio.AioRpcError) as unspecified:
            await stub.ListDeliveries(
                pb.ListDeliveriesRequest(
                    broadcast_id=broadcast_id, outcomes=[pb.DELIVERY_OUTCOME_UNSPECIFIED]
                ),
                metadata=stack.metadata,
            )
    assert [r.user_id for r in first.results] == [20, 50, 60]
    assert [r.user_id for r in second.results] == [80, 90]
    assert second.next_page_token == ""
    assert [r.outcome for r in first.results] == [
        pb.DELIVERY_OUTCOME_BLOCKED,
        pb.DELIVERY_OUTCOME_PENDING,
        pb.DELIVERY_OUTCOME_BLOCKED,
    ]
    assert first.results[0].error == "Forbidden: bot was blocked by the user"
    assert not first.results[1].HasField("finished_at")
    assert first.results[0].finished_at.ToDatetime(tzinfo=UTC) == AT
    by_id = {r.user_id: r for r in everything.results}
    assert [r.user_id for r in everything.results] == sorted(RECIPIENTS)
    assert by_id[70].outcome == pb.DELIVERY_OUTCOME_SENT
    assert by_id[70].message_id == 1070
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert unspecified.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unspecified" in (unspecified.value.details() or "")


async def test_rest_list_deliveries(stack: Stack) -> None:
    broadcast_id = await seeded_in(stack)
    path = f"/v1/broadcasts/{broadcast_id}/deliveries"
    async with aiohttp.ClientSession() as session:
        async with session.get(
            stack.http_url + path + "?outcome=sent&outcome=bad_request&page_size=2",
            headers=stack.auth,
        ) as response:
            assert response.status == 200
            first = await response.json()
        async with session.get(
            stack.http_url + path + "?outcome=sent,bad_request",
            headers=stack.auth,
            params={"page_size": "2", "page_token": first["next_page_token"]},
        ) as response:
            second = await response.json()
    assert [r["user_id"] for r in first["results"]] == [10, 30]
    assert first["results"][0] == {
        "user_id": 10,
        "outcome": "sent",
        "error": None,
        "message_id": 1010,
        "finished_at": AT_TEXT,
        "message_ids": [1010],
        "recall": None,
        "recall_error": None,
        "content_version": 1,
        "edit": None,
        "edit_error": None,
        "variant": None,
        "clicks": 0,
    }
    assert [r["user_id"] for r in second["results"]] == [40, 70]
    assert second["results"][1]["message_ids"] == list(ALBUM)
    assert second["results"][0]["error"] == TRICKY_ERROR
    assert second["next_page_token"] == ""
    status, _, pending = await get_json(stack, path, outcome="pending")
    assert status == 200
    assert pending["results"][0] == {
        "user_id": 50,
        "outcome": "pending",
        "error": None,
        "message_id": None,
        "finished_at": None,
        "message_ids": [],
        "recall": None,
        "recall_error": None,
        "content_version": None,
        "edit": None,
        "edit_error": None,
        "variant": None,
        "clicks": 0,
    }
    status, content_type, problem = await get_json(stack, path, outcome="lost", colour="red")
    assert (status, content_type) == (400, "application/problem+json")
    assert {e["field"] for e in problem["errors"]} == {"colour"}
    status, _, problem = await get_json(stack, path, outcome="lost")
    assert status == 400
    assert "unknown outcome 'lost'" in problem["detail"]
    status, _, problem = await get_json(stack, path, page_size="1001")
    assert status == 400
    assert problem["errors"] == [
        {"field": "page_size", "message": "must be between 1 and 1000 (0 or absent: 100)"}
    ]
    status, content_type, _ = await get_json(stack, f"/v1/broadcasts/{broadcast_id + 1}/deliveries")
    assert (status, content_type) == (404, "application/problem+json")


async def test_csv_export(stack: Stack) -> None:
    broadcast_id = await seeded_in(stack)
    path = f"/v1/broadcasts/{broadcast_id}/deliveries.csv"
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.http_url + path, headers=stack.auth) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
            assert response.headers["Content-Disposition"] == (
                f'attachment; filename="broadcast-{broadcast_id}-deliveries.csv"'
            )
            raw = await response.read()
        async with session.get(
            stack.http_url + path + "?outcome=pending", headers=stack.auth
        ) as response:
            pending = await response.text()
        async with session.get(stack.http_url + path) as response:
            assert response.status == 401
    text = raw.decode("utf-8")
    assert text.startswith(
        "user_id,outcome,message_id,error,finished_at,message_ids,recall,recall_error,"
        "content_version,edit,edit_error,variant,clicks\r\n"
    )
    # The error with a comma, quotes and a newline is quoted, its quotes doubled.
    assert '"Bad Request: odd, ""quoted"" text\nwith a second line"' in text
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [int(r["user_id"]) for r in rows] == sorted(RECIPIENTS)
    by_id = {int(r["user_id"]): r for r in rows}
    assert by_id[40]["error"] == TRICKY_ERROR
    assert by_id[40]["outcome"] == "bad_request"
    assert by_id[10] == {
        "user_id": "10",
        "outcome": "sent",
        "message_id": "1010",
        "error": "",
        "finished_at": AT_TEXT,
        "message_ids": "1010",
        "recall": "",
        "recall_error": "",
        "content_version": "1",
        "edit": "",
        "edit_error": "",
        "variant": "",
        "clicks": "0",
    }
    assert by_id[70]["message_ids"] == "1070 1071 1072"
    assert by_id[50] == {
        "user_id": "50",
        "outcome": "pending",
        "message_id": "",
        "error": "",
        "finished_at": "",
        "message_ids": "",
        "recall": "",
        "recall_error": "",
        "content_version": "",
        "edit": "",
        "edit_error": "",
        "variant": "",
        "clicks": "0",
    }
    assert [r["user_id"] for r in csv.DictReader(io.StringIO(pending, newline=""))] == [
        str(u) for u in PENDING
    ]
    # A filter nobody matches: the header alone (the first page is empty).
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.http_url + path + "?outcome=kicked", headers=stack.auth) as response,
    ):
        assert response.status == 200
        assert (
            await response.text()
            == "user_id,outcome,message_id,error,finished_at,message_ids,recall,recall_error,"
            "content_version,edit,edit_error,variant,clicks\r\n"
        )
    status, content_type, _ = await get_json(
        stack, f"/v1/broadcasts/{broadcast_id + 1}/deliveries.csv"
    )
    assert (status, content_type) == (404, "application/problem+json")
    status, content_type, _ = await get_json(stack, path, outcome="nope")
    assert (status, content_type) == (400, "application/problem+json")


# -- Server-Sent Events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: dict[str, Any]
    id: str | None


async def read_events(
    response: aiohttp.ClientResponse, *, heartbeats: list[str] | None = None
) -> list[SseEvent]:
    """Parse the stream until the server ends it; comments go to ``heartbeats``."""
    events: list[SseEvent] = []
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith(":"):
            if heartbeats is not None:
                heartbeats.append(line)
            continue
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if "event" in fields:
            events.append(SseEvent(fields["event"], json.loads(fields["data"]), fields.get("id")))
        fields = {}
    return events


async def send(stack: Stack, user_ids: list[int]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.http_url + "/v1/broadcasts",
            json={"message": "live", "user_ids": user_ids},
            headers=stack.auth,
        ) as response,
    ):
        assert response.status == 202
        broadcast_id: int = (await response.json())["broadcast_id"]
        return broadcast_id


def assert_results_then_end(events: list[SseEvent], recipients: set[int]) -> dict[int, Any]:
    *results, end = events
    assert end.event == "end"
    assert end.id == "end"
    assert end.data["progress"]["status"] == "completed"
    assert end.data["progress"]["pending"] == 0
    assert end.data["progress"]["total"] == len(recipients)
    assert [e.event for e in results] == ["result"] * len(recipients)
    assert sorted(e.data["user_id"] for e in results) == sorted(recipients)
    # Each id is the event's cursor: its position, with the counters a resume goes on from.
    for e in results:
        progress = e.data["progress"]
        assert re.fullmatch(rf"[su]-?\d+\.{progress['sent']}\.{progress['failed']}", e.id or "")
    assert len({e.id for e in results}) == len(results)
    counted = [e.data["progress"]["sent"] + e.data["progress"]["failed"] for e in results]
    assert counted == list(range(1, len(recipients) + 1))
    return {e.data["user_id"]: e.data for e in results}


async def test_sse_streams_results_then_end(stack: Stack) -> None:
    stack.simulator.chats.declare(502, ChatState.BLOCKED)
    recipients = {501, 502, 503}
    broadcast_id = await send(stack, sorted(recipients))
    url = f"{stack.http_url}/v1/broadcasts/{broadcast_id}/events"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=stack.auth) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
            assert response.headers["Cache-Control"] == "no-cache"
            live = assert_results_then_end(await read_events(response), recipients)
        # Watching the finished broadcast replays it the same way.
        async with session.get(url, headers=stack.auth) as response:
            replayed = assert_results_then_end(await read_events(response), recipients)
        async with session.get(url, headers={**stack.auth, "Last-Event-ID": "end"}) as response:
            assert response.status == 204
    assert live[502]["outcome"] == "blocked"
    assert live[502]["error"] == "Forbidden: bot was blocked by the user"
    assert live[501]["outcome"] == "sent"
    assert live[501]["message_id"] > 0
    assert live[501]["finished_at"].endswith("Z")
    assert replayed == {
        user_id: {**data, "progress": replayed[user_id]["progress"]}
        for user_id, data in live.items()
    }


async def test_sse_unknown_broadcast_is_a_problem(stack: Stack) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.http_url}/v1/broadcasts/987654/events", headers=stack.auth) as r,
    ):
        assert r.status == 404
        assert r.content_type == "application/problem+json"
        assert "987654" in (await r.json())["detail"]


@pytest.fixture
async def heartbeat_stack(backend: Backend) -> AsyncIterator[tuple[Stack, HoldingSimulator]]:
    """A stack whose SSE streams send a heartbeat after 20 ms of silence, and its simulator,
    which holds the sends a test tells it to."""
    overrides = {"TGB_SERVER_SSE_HEARTBEAT": "0.02"}
    async with (
        HoldingSimulator() as simulator,
        start_stack(backend, simulator, overrides) as started,
    ):
        yield started, simulator


async def test_sse_sends_heartbeats_while_idle(
    heartbeat_stack: tuple[Stack, HoldingSimulator],
) -> None:
    stack, simulator = heartbeat_stack
    # The one recipient's send is held until a heartbeat came: the stream idles meanwhile.
    held = simulator.hold("sendMessage")
    try:
        broadcast_id = await send(stack, [601])
        heartbeats: list[str] = []

        async def heard() -> bool:
            return ": heartbeat" in heartbeats

        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{stack.http_url}/v1/broadcasts/{broadcast_id}/events", headers=stack.auth
            ) as response,
        ):
            reading = asyncio.create_task(read_events(response, heartbeats=heartbeats))
            await held.holding()
            await wait_until(heard)
            held.release()
            events = await reading
    finally:
        held.release()
    assert_results_then_end(events, {601})
    assert ": heartbeat" in heartbeats


async def test_sse_stops_following_when_the_client_goes(
    heartbeat_stack: tuple[Stack, HoldingSimulator],
) -> None:
    stack, simulator = heartbeat_stack
    # The send is held for as long as the test runs: the broadcast stays unfinished.
    held = simulator.hold("sendMessage")
    try:
        broadcast_id = await send(stack, [611])
        await held.holding()
        queue = stack.running.backends.queue

        async def watchers() -> int:
            consumers = await queue.jetstream.consumers_info(queue.names.events_stream)
            return sum(c.name.startswith(f"watch-{broadcast_id}-") for c in consumers)

        async def one_watcher() -> bool:
            return await watchers() == 1

        async def no_watcher() -> bool:
            return await watchers() == 0

        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{stack.http_url}/v1/broadcasts/{broadcast_id}/events", headers=stack.auth
            ) as response,
        ):
            assert await response.content.readline() == f": broadcast {broadcast_id}\n".encode()
            await wait_until(one_watcher)
        # The client went away mid-stream: the server notices and drops its watch.
        await wait_until(no_watcher)
        report = await stack.running.backends.store.get_broadcast(broadcast_id)
        assert not report.status.is_final  # it was the client leaving, not the end
    finally:
        held.release()
