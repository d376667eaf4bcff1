"""The completion webhook: claimed once in SQL (every backend), signed, retried, delivered to a
real HTTP receiver, and never logging its secret."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fixtures.stack import Backend, Stack, open_backend, start_stack
from tgbroadcast.core.background.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookNotifier,
    verify,
)
from tgbroadcast.core.config import WebhookSettings, load_settings
from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.core.domain.model import Content, DeliveryResult, DeliveryState, NewBroadcast
from tgbroadcast.core.store import Store, create_engine
from tgbroadcast.core.store.tables import broadcasts
from tgbroadcast.simulator import ChatState, Fault, Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

SECRET = "webhook-secret-0123456789abcdef"
WEBHOOK_ENV = {
    "TGB_WEBHOOK_SECRET": SECRET,
    "TGB_WEBHOOK_POLL_INTERVAL": "0.05",
    "TGB_WEBHOOK_BACKOFF_BASE": "0.01",
    "TGB_WEBHOOK_BACKOFF_CAP": "0.05",
    "TGB_WEBHOOK_MAX_ATTEMPTS": "3",
    # The receivers listen on 127.0.0.1 (see tests/test_webhook_ssrf.py for the refusals).
    "TGB_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
}
AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
WAIT = 60.0
"""Upper bound for a condition the test waits for (never reached when things work)."""


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = WAIT) -> None:
    """Return once ``check()`` is true; fail after ``within`` seconds. The condition lives in
    the database, so there is no event to wait on: it is polled."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


# -- a real receiver -------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    answers: list[int]
    """Statuses answered in order; 200 once they run out."""
    received: list[tuple[bytes, Mapping[str, str]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at the first request."""
    hold: asyncio.Event | None = None
    """When given, requests are answered only once it is set."""


@asynccontextmanager
async def receiver(answers: list[int]) -> AsyncIterator[Receiver]:
    hook = Receiver(url="", answers=list(answers))

    async def handle(request: web.Request) -> web.Response:
        hook.received.append((await request.read(), dict(request.headers)))
        hook.arrived.set()
        if hook.hold is not None:
            await hook.hold.wait()
        status = hook.answers.pop(0) if hook.answers else 200
        return web.Response(status=status, text="ok" if status < 300 else "nope")

    app = web.Application()
    app.router.add_post("/hooks/tgb", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        hook.url = f"http://127.0.0.1:{port}/hooks/tgb?token=receiver-private"
        yield hook
    finally:
        await runner.cleanup()


async def send(stack: Stack, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(stack.http_url + "/v1/broadcasts", json=body, headers=stack.auth) as r,
    ):
        return r.status, await r.json(content_type=None)


async def get_broadcast(stack: Stack, broadcast_id: int) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.http_url}/v1/broadcasts/{broadcast_id}", headers=stack.auth) as r,
    ):
        assert r.status == 200
        return await r.json()


@asynccontextmanager
async def database(url: str) -> AsyncIterator[AsyncEngine]:
    """A second way into the database: the store has no reader for a webhook's state (the
    service reads it only to claim the webhook)."""
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def webhook_state(engine: AsyncEngine, broadcast_id: int) -> str | None:
    """The broadcast's ``callback_state`` column (``None`` without a webhook)."""
    statement = select(broadcasts.c.callback_state).where(broadcasts.c.id == broadcast_id)
    async with engine.connect() as connection:
        state: str | None = await connection.scalar(statement)
    return state


def settled(engine: AsyncEngine, broadcast_id: int) -> Callable[[], Awaitable[bool]]:
    """A check that the broadcast's webhook reached a final state."""

    async def check() -> bool:
        return await webhook_state(engine, broadcast_id) in ("delivered", "failed")

    return check


# -- end to end ------------------------------------------------------------------------------------


async def test_webhook_is_signed_retried_and_delivered(
    backend: Backend, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    simulator.chats.declare(702, ChatState.BLOCKED)
    async with (
        receiver([500, 500]) as hook,
        start_stack(backend, simulator, WEBHOOK_ENV) as stack,
        database(stack.settings.database.url) as engine,
    ):
        status, accepted = await send(
            stack, {"message": "hi", "user_ids": [701, 702, 703], "callback_url": hook.url}
        )
        assert status == 202, accepted
        broadcast_id = accepted["broadcast_id"]
        await eventually(settled(engine, broadcast_id))
        assert await webhook_state(engine, broadcast_id) == "delivered"
        shown = await get_broadcast(stack, broadcast_id)
    assert len(hook.received) == 3  # two 500s, then the 200
    bodies = {body for body, _ in hook.received}
    assert len(bodies) == 1  # the same summary every attempt
    body, headers = hook.received[-1]
    assert headers["Content-Type"] == "application/json"
    timestamp = headers[TIMESTAMP_HEADER]
    # The documented scheme, computed here rather than by the module under test.
    signed = timestamp.encode() + b"." + body
    expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected
    assert abs(int(timestamp) - time.time()) < 3600
    assert verify(body, headers[SIGNATURE_HEADER], timestamp, SECRET)
    assert not verify(body, headers[SIGNATURE_HEADER], timestamp, SECRET + "x")
    assert not verify(body + b" ", headers[SIGNATURE_HEADER], timestamp, SECRET)
    # The timestamp is signed: another one does not verify, and an old request is stale.
    assert not verify(body, headers[SIGNATURE_HEADER], str(int(timestamp) + 1), SECRET)
    later = int(timestamp) + 301
    assert not verify(body, headers[SIGNATURE_HEADER], timestamp, SECRET, now=later)
    assert verify(body, headers[SIGNATURE_HEADER], timestamp, SECRET, now=later, tolerance=400)
    assert not verify(body, headers[SIGNATURE_HEADER], "yesterday", SECRET)
    summary = json.loads(body)
    assert summary == {
        key: shown[key]
        for key in (
            "broadcast_id",
            "bot",
            "status",
            "total",
            "sent",
            "failed",
            "pending",
            "outcome_counts",
            "error",
            "created_at",
            "finished_at",
        )
    }
    assert summary["status"] == "completed"
    assert summary["outcome_counts"] == {"sent": 2, "blocked": 1}
    assert shown["callback_url"] == hook.url
    assert SECRET not in caplog.text
    ours = [r for r in caplog.records if r.name.startswith("tgbroadcast.")]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours)
    assert "webhook delivered" in logged
    assert "receiver-private" not in logged  # URLs are logged without their query


@pytest.mark.parametrize(
    ("answers", "attempts"),
    [([500, 502, 503, 500], 3), ([404], 1), ([301], 1)],
    ids=["5xx until max_attempts", "4xx is final", "redirects are not followed"],
)
async def test_webhook_gives_up_as_failed(
    tmp_path: Path, simulator: Simulator, answers: list[int], attempts: int
) -> None:
    async with (
        receiver(answers) as hook,
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, WEBHOOK_ENV) as stack,
        database(stack.settings.database.url) as engine,
    ):
        _, accepted = await send(
            stack, {"message": "hi", "user_ids": [801], "callback_url": hook.url}
        )
        broadcast_id = accepted["broadcast_id"]
        await eventually(settled(engine, broadcast_id))
        assert await webhook_state(engine, broadcast_id) == "failed"
    assert len(hook.received) == attempts


async def test_callback_url_is_validated(tmp_path: Path, simulator: Simulator) -> None:
    async with open_backend("sqlite", tmp_path) as backend:
        async with start_stack(backend, simulator) as plain:
            status, problem = await send(
                plain, {"message": "hi", "user_ids": [1], "callback_url": "https://example.com/h"}
            )
            assert status == 400
            assert problem["errors"] == [
                {
                    "field": "callback_url",
                    "message": "needs a webhook secret on the server "
                    "(webhook.secret / TGB_WEBHOOK_SECRET)",
                }
            ]
        async with start_stack(backend, simulator, WEBHOOK_ENV) as stack:
            for bad in (
                "ftp://example.com/h",
                "example.com/h",
                "https:///no-host",
                "https://example.com/" + "a" * 2040,
                "https://exa mple.com/",
                "http://example.com:99999/",
            ):
                status, problem = await send(
                    stack, {"message": "hi", "user_ids": [1], "callback_url": bad}
                )
                assert status == 400, bad
                assert [e["field"] for e in problem["errors"]] == ["callback_url"], bad
            async with stack.stub() as stub:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.SendMessage(
                        pb.SendMessageRequest(
                            message="hi", user_ids=[1], callback_url="mailto:x@example.com"
                        ),
                        metadata=stack.metadata,
                    )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "callback_url" in (refused.value.details() or "")


async def test_a_webhook_in_flight_at_shutdown_is_delivered_after_restart(
    tmp_path: Path, simulator: Simulator
) -> None:
    async with receiver([]) as hook, open_backend("sqlite", tmp_path) as backend:
        hook.hold = asyncio.Event()
        async with start_stack(backend, simulator, WEBHOOK_ENV) as stack:
            _, accepted = await send(
                stack, {"message": "hi", "user_ids": [901], "callback_url": hook.url}
            )
            broadcast_id = accepted["broadcast_id"]
            async with asyncio.timeout(WAIT):
                await hook.arrived.wait()  # the POST is in flight when the server stops
        async with database(stack.settings.database.url) as engine:
            assert await webhook_state(engine, broadcast_id) == "pending"  # handed back
            hook.hold.set()
            async with start_stack(backend, simulator, WEBHOOK_ENV):
                await eventually(settled(engine, broadcast_id))
                assert await webhook_state(engine, broadcast_id) == "delivered"
    assert len(hook.received) == 2
    assert hook.received[0][0] == hook.received[1][0]


async def test_a_cancelled_broadcast_sends_its_webhook(
    tmp_path: Path, simulator: Simulator
) -> None:
    # The recipient's send hangs, so the broadcast is still running when it is cancelled.
    simulator.faults.inject(Fault.hang(5.0), times=1, chat_id=951)
    async with (
        receiver([]) as hook,
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, WEBHOOK_ENV) as stack,
        database(stack.settings.database.url) as engine,
    ):
        _, accepted = await send(
            stack, {"message": "hi", "user_ids": [951], "callback_url": hook.url}
        )
        broadcast_id = accepted["broadcast_id"]
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{stack.http_url}/v1/broadcasts/{broadcast_id}/cancel", headers=stack.auth
            ) as response,
        ):
            assert response.status == 200, await response.text()
        async with asyncio.timeout(WAIT):
            await hook.arrived.wait()
        await eventually(settled(engine, broadcast_id))
    summary = json.loads(hook.received[0][0])
    assert summary["broadcast_id"] == broadcast_id
    assert summary["status"] == "cancelled"
    assert summary["finished_at"] is not None


async def test_a_webhook_waiting_for_its_retry_frees_its_slot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With one slot, a webhook whose receiver fails waits for its retry in SQL while the
    next one is delivered (a sleeping attempt would hold the only slot for minutes)."""
    caplog.set_level(logging.INFO, logger="tgbroadcast.core.background.webhooks")
    settings = WebhookSettings(
        secret=SECRET,
        max_attempts=3,
        backoff_base=100.0,
        backoff_cap=300.0,
        poll_interval=0.05,
        allow_private_networks=True,
    )
    url = f"sqlite+aiosqlite:///{tmp_path / 'hooks.db'}"
    async with (
        receiver([500] * 10) as failing,
        receiver([]) as working,
        Store.open(url) as store,
        database(url) as engine,
    ):
        await store.migrate()
        waiting = await finished(store, failing.url)
        async with WebhookNotifier(store=store, settings=settings, concurrency=1):
            async with asyncio.timeout(WAIT):
                await failing.arrived.wait()
            delivered = await finished(store, working.url)

            await eventually(settled(engine, delivered))
            assert await webhook_state(engine, delivered) == "delivered"
            assert await webhook_state(engine, waiting) == "pending"  # due later, not held
    assert "webhook attempt failed; retrying" in caplog.text
    assert len(working.received) == 1


# -- the claim, on every backend ---------------------------------------------------------------


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with database(database_url) as opened:
        yield opened


async def finished(store: Store, callback_url: str | None) -> int:
    broadcast = await store.create_broadcast(
        NewBroadcast(content=Content(message="hi"), user_ids=(5,), callback_url=callback_url)
    )
    await store.record_results(
        [
            DeliveryResult(
                broadcast_id=broadcast.id,
                user_id=5,
                state=DeliveryState.SENT,
                finished_at=AT,
                message_id=1,
            )
        ]
    )
    return broadcast.id


async def test_only_final_broadcasts_with_a_callback_are_claimed(
    store: Store, engine: AsyncEngine
) -> None:
    running = await store.create_broadcast(
        NewBroadcast(content=Content(message="hi"), user_ids=(1, 2), callback_url="http://a/h")
    )
    await finished(store, None)
    assert await webhook_state(engine, running.id) == "pending"
    assert await store.claim_callback(lease_seconds=60) is None
    done = await finished(store, "http://b/h")
    claim = await store.claim_callback(lease_seconds=60)
    assert claim is not None
    assert (claim.broadcast_id, claim.url) == (done, "http://b/h")
    assert (await store.get_broadcast(done)).callback_url == "http://b/h"


async def test_a_claim_is_held_by_one_server_until_settled(
    store: Store, engine: AsyncEngine
) -> None:
    broadcast_id = await finished(store, "http://a/h")
    first = await store.claim_callback(lease_seconds=60)
    assert first is not None
    assert first.attempt == 1
    assert await store.claim_callback(lease_seconds=60) is None  # held: nobody else gets it
    assert await store.settle_callback(first, "delivered") is True
    assert await store.settle_callback(first, "failed") is False  # settled: no longer held
    assert await webhook_state(engine, broadcast_id) == "delivered"
    assert await store.claim_callback(lease_seconds=60) is None


async def test_a_retry_waits_in_sql_and_counts_its_attempts(
    store: Store, engine: AsyncEngine
) -> None:
    broadcast_id = await finished(store, "http://a/h")
    first = await store.claim_callback(lease_seconds=60)
    assert first is not None
    assert await store.defer_callback(first, delay_seconds=3600) is True
    assert await webhook_state(engine, broadcast_id) == "pending"
    assert await store.claim_callback(lease_seconds=60) is None  # not due for an hour
    assert await store.settle_callback(first, "delivered") is False  # handed back
    other = await finished(store, "http://b/h")
    newer = await store.claim_callback(lease_seconds=60)  # the waiting one hides nothing
    assert newer is not None
    assert (newer.broadcast_id, newer.attempt) == (other, 1)
    assert await store.defer_callback(newer, delay_seconds=0) is True
    retry = await store.claim_callback(lease_seconds=60)
    assert retry is not None
    assert (retry.broadcast_id, retry.attempt) == (other, 2)
    # Handed back at shutdown: due at once, and the unfinished attempt is not counted.
    assert await store.release_callback(retry) is True
    again = await store.claim_callback(lease_seconds=60)
    assert again is not None
    assert (again.broadcast_id, again.attempt) == (other, 2)


async def test_held_webhooks_never_hide_due_ones(store: Store) -> None:
    """More webhooks held than one claim reads: every due one is still claimed."""
    created = [await finished(store, f"http://h{n}/h") for n in range(40)]
    claims = [await store.claim_callback(lease_seconds=60) for _ in created]
    assert sorted(c.broadcast_id for c in claims if c is not None) == created
    assert await store.claim_callback(lease_seconds=60) is None


async def test_a_lapsed_claim_is_taken_over_and_a_released_one_is_due_again(
    store: Store, engine: AsyncEngine
) -> None:
    broadcast_id = await finished(store, "http://a/h")
    crashed = await store.claim_callback(lease_seconds=-5)  # its server died: lease lapsed
    assert crashed is not None
    taken = await store.claim_callback(lease_seconds=60)
    assert taken is not None
    assert taken.broadcast_id == broadcast_id
    assert taken.attempt == 2  # the crashed server's attempt counts
    assert await store.defer_callback(crashed, delay_seconds=0) is False
    assert await store.settle_callback(crashed, "failed") is False
    assert await store.release_callback(taken) is True
    assert await webhook_state(engine, broadcast_id) == "pending"
    again = await store.claim_callback(lease_seconds=60)
    assert again is not None
    assert await store.settle_callback(again, "failed") is True
    assert await webhook_state(engine, broadcast_id) == "failed"


async def test_two_stores_racing_claim_once(database_url: str, store: Store) -> None:
    for _ in range(5):
        await finished(store, "http://a/h")
    async with Store.open(database_url) as other:
        claims = await asyncio.gather(
            *(s.claim_callback(lease_seconds=60) for s in (store, other) * 5)
        )
    ids = [c.broadcast_id for c in claims if c is not None]
    assert len(ids) == 5
    assert len(set(ids)) == 5


# -- configuration -------------------------------------------------------------------------------


def test_webhook_settings_load_and_keep_the_secret_out_of_sight(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        environ={"TGB_WEBHOOK_SECRET": SECRET, "TGB_WEBHOOK_MAX_ATTEMPTS": "4"},
        base_dir=tmp_path,
    )
    assert settings.webhook.secret == SECRET
    assert settings.webhook.max_attempts == 4
    assert settings.webhook.timeout == 10.0
    assert settings.server.sse_heartbeat == 15.0
    assert SECRET not in repr(settings)
    with pytest.raises(ConfigError) as short:
        load_settings(None, environ={"TGB_WEBHOOK_SECRET": "short-secret"}, base_dir=tmp_path)
    assert short.value.key == "webhook.secret"
    assert "short-secret" not in str(short.value)
    with pytest.raises(ConfigError) as zero:
        load_settings(None, environ={"TGB_WEBHOOK_MAX_ATTEMPTS": "0"}, base_dir=tmp_path)
    assert zero.value.key == "webhook.max_attempts"
