"""A recall's or an edit's job records its outcomes in groups (``worker.followups.Outcomes``):
one found alone while others of the job hold a call slot waits a moment for them, so at a paced
rate they share a transaction and a publish; one whose job has nobody else calling is written
at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from tgbroadcast.core.domain.model import Broadcast, BroadcastStatus, Content
from tgbroadcast.core.store import SentTarget
from tgbroadcast.worker.followups import FollowUpJobs, Outcomes

NOW = datetime(2026, 12, 7, tzinfo=UTC)
BROADCAST = Broadcast(
    id=7,
    content=Content(message="hi"),
    status=BroadcastStatus.RECALLING,
    total=3,
    sent=3,
    failed=0,
    created_at=NOW,
)


class Recording:
    """The job's side of recording, standing in: each write's user ids, and its publishes."""

    def __init__(self) -> None:
        self.writes: list[list[int]] = []
        self.published: list[list[str]] = []
        self._queue = self

    async def _record(self, results: Sequence[int]) -> dict[int, int]:
        self.writes.append(list(results))
        return dict.fromkeys(results, 0)

    def _event(self, broadcast: Broadcast, result: int, target: SentTarget, ordinal: int) -> str:
        return f"event {result}"

    async def publish_events(self, events: Sequence[str]) -> None:
        self.published.append(list(events))

    async def notify(self, *changes: object) -> None:
        pass


def target(user_id: int) -> SentTarget:
    return SentTarget(user_id=user_id, message_ids=(user_id,), sent_at=NOW)


def outcomes(recording: Recording, calling: int) -> Outcomes[Any]:
    """A job's outcomes with ``calling`` of its recipients holding a call slot."""
    written: Outcomes[Any] = Outcomes(cast(FollowUpJobs[Any], recording), BROADCAST)
    written.calling = calling
    return written


async def test_an_outcome_alone_waits_for_the_others_in_flight() -> None:
    recording = Recording()
    written = outcomes(recording, 3)
    # The second comes while the first waits (started after it, in the same turn).
    await asyncio.gather(written.add(1, target(1)), written.add(2, target(2)))
    assert recording.writes == [[1, 2]]  # one transaction
    assert recording.published == [["event 1", "event 2"]]  # one publish
    assert written.recorded == {1, 2}


async def test_an_outcome_is_written_at_once_when_nobody_else_of_its_job_is_calling() -> None:
    """The job's last call (its siblings recorded, or ended without an outcome: their slots
    given back): nobody to wait for — two arriving in one turn are written one by one."""
    recording = Recording()
    written = outcomes(recording, 1)
    await asyncio.gather(written.add(1, target(1)), written.add(2, target(2)))
    assert recording.writes == [[1], [2]]


async def test_an_outcome_waits_for_company_a_moment_only() -> None:
    """One alone while others of its job are still calling (slower) is written all the same,
    after ``LINGER``, not when they come."""
    recording = Recording()
    written = outcomes(recording, 3)
    async with asyncio.timeout(60):  # a bound for a wait that never ends, not a measure
        await written.add(1, target(1))
    assert recording.writes == [[1]]
