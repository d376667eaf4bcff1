"""Long flood waits park (#15.8): a 429 whose ``retry_after`` exceeds ``worker.park_after``
parks the bot's sending — its broadcasts show ``throttled_until``, the workers give their jobs
back (no recipient held, no job in hand) and sending resumes by itself when the wait is over;
nobody is lost or sent twice. A wait of hours is tested with a park of one second."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

import aiohttp
from sqlalchemy import func, select

from tests.fixtures.nats import wait_until
from tests.fixtures.stack import Backend, Stack, on_sqlite, start_stack
from tests.fixtures.watching import watch
from tests.test_recall import rest
from tgbroadcast.core.store import create_engine
from tgbroadcast.core.store.tables import deliveries
from tgbroadcast.simulator import Simulator
from tgbroadcast.simulator.faults import Fault
from tgbroadcast.v1 import broadcast_pb2 as pb

PARK = {"TGB_WORKER_PARK_AFTER": "1", "TGB_TELEGRAM_RATE_LIMIT": "20"}


async def held_claims(stack: Stack, broadcast_id: int) -> int:
    """Recipients of the broadcast some job holds right now."""
    engine = create_engine(stack.settings.database.url)
    try:
        async with engine.connect() as connection:
            held = await connection.scalar(
                select(func.count()).where(
                    deliveries.c.broadcast_id == broadcast_id,
                    deliveries.c.claimed_until > datetime.now(UTC),
                )
            )
    finally:
        await engine.dispose()
    return int(held or 0)


async def parked_metric(stack: Stack) -> float:
    """``tgb_parked_until_seconds`` of the bot ``default``."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.http_url}/metrics") as page,
    ):
        text = await page.text()
    for line in text.splitlines():
        if line.startswith('tgb_parked_until_seconds{bot="default"}'):
            return float(line.split()[-1])
    return 0.0


@on_sqlite
async def test_a_long_flood_wait_parks_the_bot_and_sending_resumes_by_itself(
    backend: Backend, simulator: Simulator
) -> None:
    async with start_stack(backend, simulator, PARK) as stack:
        users = list(range(6001, 6061))
        simulator.faults.inject(Fault.too_many_requests(4), times=1, method="sendMessage")
        code, accepted = await rest(
            stack, "POST", "/v1/broadcasts", {"message": "sale", "user_ids": users}
        )
        assert code == 202
        broadcast_id = accepted["broadcast_id"]

        async def parked() -> bool:
            _, body = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
            return bool(body["throttled_until"])

        await wait_until(parked)
        _, body = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
        throttled = datetime.fromisoformat(body["throttled_until"]).timestamp()
        messages = await watch(stack, broadcast_id)
        async with stack.stub() as stub:
            got = await stub.GetBroadcast(
                pb.GetBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
            )
    assert messages[-1].progress.status == pb.BROADCAST_STATUS_COMPLETED
    assert messages[-1].progress.sent == len(users)
    assert not got.broadcast.HasField("throttled_until")  # over: no longer shown
    calls = [c for c in simulator.calls if c.method == "sendMessage"]
    (refused,) = [c for c in calls if c.error_code == 429]
    assert throttled >= refused.at + 3.5
    sent = [c for c in calls if c.ok]
    assert Counter(int(c.params["chat_id"]) for c in sent) == dict.fromkeys(users, 1)
    # Nothing was sent during the wait: every send after the 429 came once it was over.
    after = [c.at for c in sent if c.at > refused.at]
    assert after
    assert min(after) >= refused.at + 4 - 0.05


@on_sqlite
async def test_an_hours_long_flood_wait_holds_nothing(
    backend: Backend, simulator: Simulator
) -> None:
    async with start_stack(backend, simulator, PARK) as stack:
        users = list(range(7001, 7101))
        simulator.faults.inject(Fault.too_many_requests(7200), times=1, method="sendMessage")
        code, accepted = await rest(
            stack, "POST", "/v1/broadcasts", {"message": "sale", "user_ids": users}
        )
        assert code == 202
        broadcast_id = accepted["broadcast_id"]

        async def given_back() -> bool:
            _, body = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
            return (
                bool(body["throttled_until"])
                and await held_claims(stack, broadcast_id) == 0
                and await parked_metric(stack) > time.time() + 7000
            )

        await wait_until(given_back)
        _, body = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
        assert datetime.fromisoformat(body["throttled_until"]).timestamp() > time.time() + 7000
        assert body["status"] in ("queued", "running")
        # The recipients wait, unsent and unheld: none lost, and a cancel stops them for good.
        assert body["pending"] + body["sent"] == len(users)
        code, cancelled = await rest(stack, "POST", f"/v1/broadcasts/{broadcast_id}/cancel")
        assert (code, cancelled["status"]) == (200, "cancelled")
    assert sum(1 for c in simulator.calls if c.method == "sendMessage" and c.ok) == body["sent"]


@on_sqlite
async def test_an_edit_parks_and_resumes_as_sends_do(
    backend: Backend, simulator: Simulator
) -> None:
    async with start_stack(backend, simulator, PARK) as stack:
        users = list(range(9001, 9041))
        code, accepted = await rest(
            stack, "POST", "/v1/broadcasts", {"message": "old", "user_ids": users}
        )
        assert code == 202
        broadcast_id = accepted["broadcast_id"]
        assert (await watch(stack, broadcast_id))[-1].progress.sent == len(users)
        simulator.faults.inject(Fault.too_many_requests(3), times=1, method="editMessageText")
        code, _ = await rest(
            stack, "POST", f"/v1/broadcasts/{broadcast_id}/edit", {"message": "new"}
        )
        assert code == 200
        messages = await watch(stack, broadcast_id)
    assert messages[-1].progress.edited == len(users)
    edits = [c for c in simulator.calls if c.method == "editMessageText"]
    (refused,) = [c for c in edits if c.error_code == 429]
    done = [c for c in edits if c.ok]
    assert Counter(int(c.params["chat_id"]) for c in done) == dict.fromkeys(users, 1)
    assert min(c.at for c in done if c.at > refused.at) >= refused.at + 3 - 0.05
