"""Who did what: every broadcast records the name of the API token that sent it, and every
pause, resume and cancel who asked and when — over gRPC and REST, on every backend, and never
a token itself (not in an answer, not in a row)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from alembic import command
from google.protobuf import json_format
from sqlalchemy import select

from tests.fixtures.environ import API_TOKEN, SECOND_API_TOKEN
from tests.fixtures.held_calls import HoldingSimulator
from tests.fixtures.old_schema import run_migration
from tests.fixtures.stack import Backend, Stack, start_stack
from tgbroadcast.core.domain.errors import FailedPrecondition
from tgbroadcast.core.domain.model import (
    SYSTEM_ACTOR,
    Broadcast,
    BroadcastStatus,
    Content,
    ControlAction,
    NewBroadcast,
)
from tgbroadcast.core.domain.states import Command
from tgbroadcast.core.store import Store, create_engine
from tgbroadcast.core.store.tables import broadcast_actions, broadcasts
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc

ALICE_TOKEN = "alice-token-0123456789"
BOB_TOKEN = "bob-token-0123456789"
NAMED = {"TGB_SERVER_API_TOKENS": f"alice:{ALICE_TOKEN},bob:{BOB_TOKEN}"}
"""Two named tokens, next to the suite's two bare ones (``TGB_SERVER_API_TOKEN``)."""
TOKENS = (ALICE_TOKEN, BOB_TOKEN, API_TOKEN, SECOND_API_TOKEN)


def fingerprint(token: str) -> str:
    """The name an unnamed token is known by."""
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:12]


class Seen:
    """Every answer body the test received, to show no token is in any of them."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def assert_no_token(self) -> None:
        assert self.bodies
        for body in self.bodies:
            for token in TOKENS:
                assert token not in body


class Rest:
    """REST calls as one token's holder."""

    def __init__(self, stack: Stack, token: str, seen: Seen) -> None:
        self._url = stack.http_url
        self._headers = {"Authorization": f"Bearer {token}"}
        self._seen = seen

    async def call(
        self, method: str, path: str, body: Any = None, *, expect: tuple[int, ...] = (200, 202)
    ) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self._url + path, json=body, headers=self._headers) as answer,
        ):
            text = await answer.text()
        self._seen.bodies.append(text)
        assert answer.status in expect, text
        return json.loads(text)

    async def send(self, user_ids: list[int]) -> int:
        sent = await self.call("POST", "/v1/broadcasts", {"message": "hi", "user_ids": user_ids})
        broadcast_id: int = sent["broadcast_id"]
        return broadcast_id

    async def move(self, broadcast_id: int, action: str) -> dict[str, Any]:
        moved: dict[str, Any] = await self.call("POST", f"/v1/broadcasts/{broadcast_id}/{action}")
        return moved

    async def get(self, broadcast_id: int) -> dict[str, Any]:
        found: dict[str, Any] = await self.call("GET", f"/v1/broadcasts/{broadcast_id}")
        return found


class Grpc:
    """gRPC calls as one token's holder; answers as REST-shaped JSON for comparison."""

    def __init__(self, stub: pb_grpc.BroadcastServiceAsyncStub, token: str, seen: Seen) -> None:
        self._stub = stub
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._seen = seen

    def _json(self, message: pb.Broadcast) -> dict[str, Any]:
        self._seen.bodies.append(str(message))
        self._seen.bodies.append(message.SerializeToString().decode("utf-8", "replace"))
        return {
            "broadcast_id": message.broadcast_id,
            "created_by": message.created_by,
            "actions": [
                {
                    "action": pb.ControlAction.Name(action.action)
                    .removeprefix("CONTROL_ACTION_")
                    .lower(),
                    "actor": action.actor,
                    "at": json_format.MessageToJson(action.at).strip('"'),
                }
                for action in message.actions
            ],
        }

    async def send(self, user_ids: list[int]) -> int:
        sent = await self._stub.SendMessage(
            pb.SendMessageRequest(message="hi", user_ids=user_ids), metadata=self._metadata
        )
        self._seen.bodies.append(str(sent))
        return sent.broadcast_id

    async def move(self, broadcast_id: int, action: str) -> dict[str, Any]:
        moved: pb.PauseBroadcastResponse | pb.ResumeBroadcastResponse | pb.CancelBroadcastResponse
        if action == "pause":
            moved = await self._stub.PauseBroadcast(
                pb.PauseBroadcastRequest(broadcast_id=broadcast_id), metadata=self._metadata
            )
        elif action == "resume":
            moved = await self._stub.ResumeBroadcast(
                pb.ResumeBroadcastRequest(broadcast_id=broadcast_id), metadata=self._metadata
            )
        else:
            moved = await self._stub.CancelBroadcast(
                pb.CancelBroadcastRequest(broadcast_id=broadcast_id), metadata=self._metadata
            )
        return self._json(moved.broadcast)

    async def get(self, broadcast_id: int) -> dict[str, Any]:
        found = await self._stub.GetBroadcast(
            pb.GetBroadcastRequest(broadcast_id=broadcast_id), metadata=self._metadata
        )
        return self._json(found.broadcast)

    async def listed(self) -> dict[int, dict[str, Any]]:
        page = await self._stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=self._metadata)
        return {b.broadcast_id: self._json(b) for b in page.broadcasts}


def who(answer: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """``created_by`` and the (action, actor) history of a REST-shaped broadcast."""
    return answer["created_by"], [(a["action"], a["actor"]) for a in answer["actions"]]


def times(answer: dict[str, Any]) -> list[datetime]:
    return [datetime.fromisoformat(a["at"].replace("Z", "+00:00")) for a in answer["actions"]]


@pytest.fixture
async def held_stack(backend: Backend) -> AsyncIterator[Stack]:
    """The stack with two named tokens, and every sendMessage held: a broadcast stays queued
    (no outcome is recorded) until the test ends, so it can be paused at any moment."""
    async with HoldingSimulator() as simulator, start_stack(backend, simulator, NAMED) as stack:
        held = simulator.hold("sendMessage")
        try:
            yield stack
        finally:
            held.release()


async def test_who_sent_paused_resumed_and_cancelled_over_both_transports(
    held_stack: Stack,
) -> None:
    stack, seen = held_stack, Seen()
    async with stack.stub() as stub:
        rest = {"alice": Rest(stack, ALICE_TOKEN, seen), "bob": Rest(stack, BOB_TOKEN, seen)}
        grpc_ = {"alice": Grpc(stub, ALICE_TOKEN, seen), "bob": Grpc(stub, BOB_TOKEN, seen)}
        by_rest = await rest["alice"].send([1, 2])
        by_grpc = await grpc_["alice"].send([3, 4])
        expected: list[tuple[str, str]] = []
        # Each transport pauses, resumes and cancels each broadcast once, alternately.
        moves = [("pause", "bob"), ("resume", "alice"), ("cancel", "bob")]
        for index, (action, actor) in enumerate(moves):
            expected.append((action, actor))
            first, second = (rest, grpc_) if index % 2 == 0 else (grpc_, rest)
            started = datetime.now(UTC)
            answer = await first[actor].move(by_rest, action)
            assert who(answer) == ("alice", expected)
            assert started <= times(answer)[-1] <= datetime.now(UTC)
            answer = await second[actor].move(by_grpc, action)
            assert who(answer) == ("alice", expected)

        for broadcast_id in (by_rest, by_grpc):
            over_rest = await rest["bob"].get(broadcast_id)
            over_grpc = await grpc_["bob"].get(broadcast_id)
            assert over_rest["status"] == "cancelled"
            assert who(over_rest) == who(over_grpc) == ("alice", moves)
            assert times(over_rest) == times(over_grpc) == sorted(times(over_rest))
            assert over_rest["actions"][-1]["at"] == over_rest["finished_at"]  # one commit

        listed = await rest["alice"].call("GET", "/v1/broadcasts")
        over_rest_list = {b["broadcast_id"]: who(b) for b in listed["broadcasts"]}
        over_grpc_list = {i: who(b) for i, b in (await grpc_["alice"].listed()).items()}
        assert (
            over_rest_list == over_grpc_list == dict.fromkeys((by_rest, by_grpc), ("alice", moves))
        )

    rows = await database_rows(stack)
    assert rows["broadcasts"] == {(by_rest, "alice"), (by_grpc, "alice")}
    recorded = [(action, actor) for _, action, actor in rows["broadcast_actions"]]
    assert sorted(recorded) == sorted(moves * 2)
    seen.assert_no_token()


async def test_unnamed_tokens_are_named_by_fingerprint_and_refusals_record_nothing(
    held_stack: Stack,
) -> None:
    stack, seen = held_stack, Seen()
    first, second = fingerprint(API_TOKEN), fingerprint(SECOND_API_TOKEN)
    async with stack.stub() as stub:
        broadcast_id = await Rest(stack, API_TOKEN, seen).send([5])
        cancelled = await Grpc(stub, SECOND_API_TOKEN, seen).move(broadcast_id, "cancel")
        assert who(cancelled) == (first, [("cancel", second)])
        # A refused move (cancelled already) is not an action.
        refused = await Rest(stack, ALICE_TOKEN, seen).call(
            "POST", f"/v1/broadcasts/{broadcast_id}/pause", expect=(409,)
        )
        assert refused["state"] == "cancelled"
        # The idempotency key is the request's, not the caller's: a replay by another token
        # returns the broadcast as its first sender created it.
        keyed = {"message": "hi", "user_ids": [6], "idempotency_key": "audit-replay"}
        first_send = await Rest(stack, BOB_TOKEN, seen).call("POST", "/v1/broadcasts", keyed)
        replay = await Rest(stack, ALICE_TOKEN, seen).call("POST", "/v1/broadcasts", keyed)
        by_bob = first_send["broadcast_id"]
        assert (replay["broadcast_id"], replay["replayed"]) == (by_bob, True)
        assert who(await Grpc(stub, ALICE_TOKEN, seen).get(by_bob)) == ("bob", [])
        assert who(await Rest(stack, ALICE_TOKEN, seen).get(broadcast_id)) == (
            first,
            [("cancel", second)],
        )
    rows = await database_rows(stack)
    assert rows["broadcasts"] == {(broadcast_id, first), (by_bob, "bob")}
    assert [(b, a, who_) for b, a, who_ in rows["broadcast_actions"]] == [
        (broadcast_id, "cancel", second)
    ]
    seen.assert_no_token()


async def database_rows(stack: Stack) -> dict[str, Any]:
    """What the database holds about who did what, read directly; no token in any column of
    either table."""
    engine = create_engine(stack.settings.database.url)
    try:
        async with engine.connect() as connection:
            broadcast_rows = (await connection.execute(select(broadcasts))).all()
            action_rows = (
                await connection.execute(select(broadcast_actions).order_by(broadcast_actions.c.id))
            ).all()
    finally:
        await engine.dispose()
    for row in (*broadcast_rows, *action_rows):
        text = repr(tuple(row))
        for token in TOKENS:
            assert token not in text
    return {
        "broadcasts": {(row.id, row.created_by) for row in broadcast_rows},
        "broadcast_actions": [(row.broadcast_id, row.action, row.actor) for row in action_rows],
    }


# -- the store ------------------------------------------------------------------------------


def to(*user_ids: int) -> NewBroadcast:
    return NewBroadcast(content=Content(message="hi"), user_ids=user_ids)


async def test_store_records_each_move_with_its_actor_once(store: Store) -> None:
    created = await store.create_broadcast(to(1, 2), created_by="alice")
    assert (created.created_by, created.actions) == ("alice", ())
    paused = await store.move_broadcast(created.id, Command.PAUSE, actor="bob")
    with pytest.raises(FailedPrecondition):
        await store.move_broadcast(created.id, Command.PAUSE, actor="carol")
    resumed = await store.move_broadcast(created.id, Command.RESUME, actor="alice")
    assert [(a.action, a.actor) for a in resumed.actions] == [
        (ControlAction.PAUSE, "bob"),
        (ControlAction.RESUME, "alice"),
    ]
    assert paused.actions == resumed.actions[:1]
    assert resumed.actions[1].at == resumed.resumed_at
    assert await store.get_broadcast(created.id, actions=True) == resumed
    assert (await store.get_broadcast(created.id)).actions == ()  # the workers' cheap read
    listed = await store.list_broadcasts(statuses=(), before=None, limit=10)
    assert [b.actions for b in listed] == [resumed.actions]


async def test_racing_movers_record_exactly_the_moves_made(store: Store) -> None:
    created = await store.create_broadcast(to(1, 2, 3), created_by="alice")
    outcomes = await asyncio.gather(
        *(store.move_broadcast(created.id, Command.CANCEL, actor=f"c{i}") for i in range(4)),
        *(store.move_broadcast(created.id, Command.PAUSE, actor=f"p{i}") for i in range(4)),
        return_exceptions=True,
    )
    moved = [outcome for outcome in outcomes if isinstance(outcome, Broadcast)]
    final = await store.get_broadcast(created.id, actions=True)
    assert final.status is BroadcastStatus.CANCELLED
    assert len(final.actions) == len(moved)
    assert final.actions[-1].action is ControlAction.CANCEL
    assert final.actions[-1].at == final.finished_at


async def test_scheduler_start_and_unnamed_moves(store: Store) -> None:
    """The scheduler's start is no action; a move without an actor is the system's."""
    created = await store.create_broadcast(
        NewBroadcast(content=to(1).content, user_ids=(1,), send_at=datetime(2999, 1, 1, tzinfo=UTC))
    )
    assert created.created_by == ""
    started = await store.move_broadcast(created.id, Command.START)
    assert started.actions == ()
    cancelled = await store.move_broadcast(created.id, Command.CANCEL)
    assert [(a.action, a.actor) for a in cancelled.actions] == [
        (ControlAction.CANCEL, SYSTEM_ACTOR)
    ]
    with pytest.raises(ValueError, match="at most 64"):
        await store.create_broadcast(to(1), created_by="x" * 65)


# -- the migration --------------------------------------------------------------------------


async def test_migration_keeps_older_broadcasts_and_downgrades(database_url: str) -> None:
    await run_migration(database_url, command.upgrade, "0004")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            inserted = await connection.execute(
                broadcasts.insert().values(
                    status="completed",
                    message="old",
                    media_type="text",
                    all_users=False,
                    total=0,
                    sent=0,
                    failed=0,
                    created_at=datetime.now(UTC),
                )
            )
            assert inserted.inserted_primary_key is not None
            old_id = int(inserted.inserted_primary_key[0])
    finally:
        await engine.dispose()
    async with Store.open(database_url) as store:
        await store.migrate()
        old = await store.get_broadcast(old_id, actions=True)
        assert (old.content.message, old.created_by, old.actions) == ("old", "", ())
    await run_migration(database_url, command.downgrade, "0004")
    await run_migration(database_url, command.upgrade, "head")
    async with Store.open(database_url) as store:
        new = await store.create_broadcast(to(1), created_by="alice")
        moved = await store.move_broadcast(new.id, Command.CANCEL, actor="bob")
        assert (moved.created_by, [a.actor for a in moved.actions]) == ("alice", ["bob"])
