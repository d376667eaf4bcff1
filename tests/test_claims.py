"""Per-recipient claims in SQL, on every backend: exclusive between tokens, taken over once
lapsed, extended by renewal, dropped by release and by a final outcome, never on a final
recipient."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from tests.fixtures.results import sent
from tgbroadcast.core.domain.model import Content, NewBroadcast
from tgbroadcast.core.store import Store, create_engine
from tgbroadcast.core.store.tables import deliveries
from tgbroadcast.worker.claims import ClaimTokens, JobClaims

LEASE = 60.0


async def create(store: Store, user_ids: range) -> int:
    broadcast = await store.create_broadcast(
        NewBroadcast(content=Content(message="hi"), user_ids=tuple(user_ids))
    )
    return broadcast.id


async def claims_in_sql(database_url: str, broadcast_id: int) -> dict[int, str | None]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(deliveries.c.user_id, deliveries.c.claimed_by).where(
                    deliveries.c.broadcast_id == broadcast_id
                )
            )
            return {row.user_id: row.claimed_by for row in rows}
    finally:
        await engine.dispose()


async def lapse(database_url: str, broadcast_id: int, token: str) -> None:
    """As if ``token``'s holder had died a lease ago."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(deliveries)
                .where(deliveries.c.broadcast_id == broadcast_id, deliveries.c.claimed_by == token)
                .values(claimed_until=datetime.now(UTC) - timedelta(seconds=LEASE))
            )
    finally:
        await engine.dispose()


async def test_concurrent_claims_on_overlapping_batches_are_disjoint(store: Store) -> None:
    broadcast_id = await create(store, range(1, 251))
    await store.record_results([sent(broadcast_id, 1)])
    # Four tokens race, each for a batch overlapping its neighbours' by half.
    batches = {f"w{n}-1": list(range(1 + 50 * n, 101 + 50 * n)) for n in range(4)}
    results = await asyncio.gather(
        *(
            store.claim_recipients(broadcast_id, ids, token=token, lease_seconds=LEASE)
            for token, ids in batches.items()
        )
    )
    held = dict(zip(batches, (result.held for result in results), strict=True))
    everyone: set[int] = set()
    for token, mine in held.items():
        assert not mine & everyone, token  # nobody held by two tokens
        everyone |= mine
        assert mine <= set(batches[token])
    assert everyone == set(range(2, 251))  # every pending one is held by someone; 1 is final
    for token, result in zip(batches, results, strict=True):
        # What a token did not get is either final or reported busy (held by another).
        assert result.busy == set(batches[token]) - result.held - {1}
        assert (result.busy_until is None) == (not result.busy)
    # Asking again changes nothing: each token keeps its own, gets nobody else's.
    again = await store.claim_recipients(
        broadcast_id, list(range(1, 251)), token="w0-1", lease_seconds=LEASE
    )
    assert again.held == held["w0-1"]
    assert again.busy == set(range(2, 251)) - held["w0-1"]


async def test_a_lapsed_claim_is_taken_over(store: Store, database_url: str) -> None:
    broadcast_id = await create(store, range(1, 11))
    first = await store.claim_recipients(
        broadcast_id, list(range(1, 11)), token="dead-1", lease_seconds=LEASE
    )
    assert first.held == set(range(1, 11))
    blocked = await store.claim_recipients(
        broadcast_id, list(range(1, 11)), token="alive-1", lease_seconds=LEASE
    )
    assert blocked.held == frozenset()
    assert blocked.busy == set(range(1, 11))
    assert blocked.busy_until is not None
    assert blocked.busy_until > datetime.now(UTC)
    await lapse(database_url, broadcast_id, "dead-1")
    taken = await store.claim_recipients(
        broadcast_id, list(range(1, 11)), token="alive-1", lease_seconds=LEASE
    )
    assert taken.held == set(range(1, 11))
    assert taken.busy == frozenset()
    # The old holder coming back cannot renew what was taken over.
    renewed = await store.claim_recipients(
        broadcast_id, list(range(1, 11)), token="dead-1", lease_seconds=LEASE
    )
    assert renewed.held == frozenset()
    assert set((await claims_in_sql(database_url, broadcast_id)).values()) == {"alive-1"}


async def test_renewal_extends_a_claim_and_a_lapsed_one_is_renewed_if_untaken(
    store: Store, database_url: str
) -> None:
    broadcast_id = await create(store, range(1, 4))
    short = await store.claim_recipients(broadcast_id, [1, 2, 3], token="t-1", lease_seconds=LEASE)
    longer = await store.claim_recipients(
        broadcast_id, [1, 2, 3], token="t-1", lease_seconds=LEASE * 10
    )
    assert short.held == longer.held == {1, 2, 3}
    other = await store.claim_recipients(broadcast_id, [1, 2, 3], token="t-2", lease_seconds=LEASE)
    assert other.busy_until is not None
    assert other.busy_until > datetime.now(UTC) + timedelta(seconds=LEASE * 5)
    # Lapsed, but nobody took it: its holder renews it.
    await lapse(database_url, broadcast_id, "t-1")
    back = await store.claim_recipients(broadcast_id, [1, 2, 3], token="t-1", lease_seconds=LEASE)
    assert back.held == {1, 2, 3}


async def test_final_recipients_are_never_claimed_and_recording_drops_the_claim(
    store: Store, database_url: str
) -> None:
    broadcast_id = await create(store, range(1, 5))
    await store.record_results([sent(broadcast_id, 1)])
    claimed = await store.claim_recipients(
        broadcast_id, [1, 2, 3, 4, 99], token="t-1", lease_seconds=LEASE
    )
    assert claimed.held == {2, 3, 4}  # 99: not a recipient
    assert claimed.busy == frozenset()
    await store.record_results([sent(broadcast_id, 2)])
    assert await claims_in_sql(database_url, broadcast_id) == {
        1: None,
        2: None,
        3: "t-1",
        4: "t-1",
    }
    # Lapsed or not, a final recipient stays unclaimed.
    await lapse(database_url, broadcast_id, "t-1")
    late = await store.claim_recipients(broadcast_id, [1, 2], token="t-2", lease_seconds=LEASE)
    assert (late.held, late.busy) == (frozenset(), frozenset())


async def test_release_frees_only_the_tokens_own_claims(store: Store, database_url: str) -> None:
    broadcast_id = await create(store, range(1, 7))
    await store.claim_recipients(broadcast_id, [1, 2, 3], token="a-1", lease_seconds=LEASE)
    await store.claim_recipients(broadcast_id, [4, 5, 6], token="b-1", lease_seconds=LEASE)
    assert await store.release_claims(broadcast_id, [1, 2, 3, 4, 5, 6], token="a-1") == 3
    assert await store.release_claims(broadcast_id, [], token="a-1") == 0
    taken = await store.claim_recipients(
        broadcast_id, [1, 2, 3, 4], token="c-1", lease_seconds=LEASE
    )
    assert taken.held == {1, 2, 3}
    assert taken.busy == {4}
    assert await claims_in_sql(database_url, broadcast_id) == {
        1: "c-1",
        2: "c-1",
        3: "c-1",
        4: "b-1",
        5: "b-1",
        6: "b-1",
    }


async def test_tokens_fit_the_column_and_are_checked(store: Store) -> None:
    broadcast_id = await create(store, range(1, 2))
    tokens = ClaimTokens()
    token = tokens.next()
    assert token != tokens.next()
    assert token.startswith(tokens.worker_id)
    long_token = f"{tokens.worker_id}-{2**63}"
    assert len(long_token) <= 32
    held = await store.claim_recipients(broadcast_id, [1], token=long_token, lease_seconds=LEASE)
    assert held.held == {1}
    for bad in ("", "x" * 33):
        with pytest.raises(ValueError, match="claim token"):
            await store.claim_recipients(broadcast_id, [1], token=bad, lease_seconds=LEASE)


async def test_job_claims_hold_renew_and_release(store: Store, database_url: str) -> None:
    broadcast_id = await create(store, range(1, 6))
    await store.claim_recipients(broadcast_id, [5], token="other-1", lease_seconds=LEASE)
    claims = JobClaims(
        store=store, broadcast_id=broadcast_id, token="job-1", lease=LEASE, margin=LEASE / 3
    )
    assert not claims.holds(1)  # nothing taken yet
    claimed = await claims.take([1, 2, 3, 4, 5])
    assert claimed.held == {1, 2, 3, 4}
    assert claimed.busy == {5}
    assert [claims.holds(u) for u in range(1, 6)] == [True, True, True, True, False]
    await store.record_results([sent(broadcast_id, 1)])
    await claims.renew()
    assert claims.held == {2, 3, 4}  # the final one dropped out
    assert await claims.release({1, 2}) == 2  # 3 and 4 were not recorded
    assert not claims.holds(3)
    assert await claims_in_sql(database_url, broadcast_id) == {
        1: None,
        2: "job-1",  # "recorded" here, but not really: its claim stays until it lapses
        3: None,
        4: None,
        5: "other-1",
    }
    with pytest.raises(ValueError, match="margin"):
        JobClaims(store=store, broadcast_id=broadcast_id, token="t", lease=1.0, margin=1.0)
