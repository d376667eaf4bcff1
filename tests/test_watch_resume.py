"""Resuming a watch: SSE with ``Last-Event-ID`` (what a browser's EventSource sends when it
reconnects) and gRPC with ``after`` go on after the last event received — the same outcomes
in the same order as one unbroken stream, each once, with the counters going on — while the
broadcast runs and after it finished; an id that is not a cursor starts from the first."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.fixtures.held_calls import HoldingSimulator
from tests.fixtures.stack import Backend, Stack, on_sqlite, start_stack
from tests.fixtures.watching import watch
from tests.test_reports import SseEvent, read_events, send
from tgbroadcast.v1 import broadcast_pb2 as pb

RECIPIENTS = list(range(1, 13))


async def events(stack: Stack, broadcast_id: int, last_event_id: str | None = None) -> Any:
    """The SSE stream to its end (or the 204 after ``end``): (status, events)."""
    headers = dict(stack.auth)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    url = f"{stack.http_url}/v1/broadcasts/{broadcast_id}/events"
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        if response.status != 200:
            return response.status, []
        return 200, await read_events(response)


async def first_events(stack: Stack, broadcast_id: int, count: int) -> list[SseEvent]:
    """The first ``count`` result events; then the connection is dropped."""
    url = f"{stack.http_url}/v1/broadcasts/{broadcast_id}/events"
    got: list[SseEvent] = []
    async with aiohttp.ClientSession() as session, session.get(url, headers=stack.auth) as r:
        fields: dict[str, str] = {}
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
            elif not line and "event" in fields:
                got.append(SseEvent(fields["event"], json.loads(fields["data"]), fields.get("id")))
                fields = {}
                if len(got) == count:
                    break
    return got


def users(events: list[SseEvent]) -> list[int]:
    return [e.data["user_id"] for e in events if e.event == "result"]


def counted(event: SseEvent) -> int:
    progress = event.data["progress"]
    return int(progress["sent"] + progress["failed"])


@on_sqlite
async def test_sse_resumes_after_the_last_event_while_running_and_after_the_end(
    backend: Backend,
) -> None:
    async with (
        HoldingSimulator() as simulator,
        start_stack(backend, simulator, {"TGB_TELEGRAM_RATE_LIMIT": "20"}) as stack,
    ):
        # Held after four sends: the stream is cut while the broadcast runs.
        held = simulator.hold("sendMessage", after=4)
        try:
            broadcast_id = await send(stack, RECIPIENTS)
            before = await first_events(stack, broadcast_id, 4)
        finally:
            held.release()
        _, after = await events(stack, broadcast_id, before[-1].id)
        assert after[-1].event == "end"
        resumed = users(before) + users(after)
        assert sorted(resumed) == RECIPIENTS  # each once
        assert [counted(e) for e in before + after[:-1]] == list(range(1, 13))

        # Finished now: the stream's cursors still resume on the events stream, in its order.
        _, again = await events(stack, broadcast_id, before[-1].id)
        assert users(again) == users(after)
        # A new stream replays from the database (by user id); a resume from any of its
        # events gives exactly what followed it.
        _, whole = await events(stack, broadcast_id)
        assert users(whole) == RECIPIENTS
        for cut in (0, 5, 11):
            _, rest = await events(stack, broadcast_id, whole[cut].id)
            assert users(rest) == users(whole)[cut + 1 :]
            if cut < 11:
                assert counted(rest[0]) == cut + 2
        assert await events(stack, broadcast_id, "end") == (204, [])
        # Not a cursor (an old position number), or not one of this broadcast: from the first.
        # (A stream sequence past the stream's end, with counters that fit, waited for events
        # that never come.)
        past_the_end = "s99999999.1.0"
        for unreadable in (
            "17",
            "u9999999999999999999.0.0",
            "s1.9999999999999999999.0",
            "s5.40.0",
            past_the_end,
        ):
            _, fresh = await events(stack, broadcast_id, unreadable)
            assert users(fresh) == RECIPIENTS, unreadable


@on_sqlite
async def test_grpc_resumes_after_a_cursor(stack: Stack) -> None:
    broadcast_id = await send(stack, RECIPIENTS)
    whole = await watch(stack, broadcast_id)
    assert all(m.cursor for m in whole[:-1])
    async with stack.stub() as stub:
        call = stub.WatchBroadcast(
            pb.WatchBroadcastRequest(broadcast_id=broadcast_id, after=whole[4].cursor),
            metadata=stack.metadata,
        )
        rest = [message async for message in call]
    assert [m.result.user_id for m in rest[:-1]] == [m.result.user_id for m in whole[5:-1]]
    assert rest[0].progress.sent + rest[0].progress.failed == 6
    assert rest[-1].progress == whole[-1].progress
