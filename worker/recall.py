"""Recall jobs: deleting a recalled broadcast's messages from the chats that received them.

Guarantees (any number of worker processes):

* A recall job covers the recipients of one send batch (:meth:`Store.recall_batches`) and
  holds its ``SENT`` recipients without a recall outcome (:mod:`.followups`); each
  recipient's messages go in one call — ``deleteMessage`` for one message,
  ``deleteMessages`` for an album's — at a slot of the bot's rate budget.
* Outcomes: ``deleted``; ``too_old`` when the messages are 48 hours old or more (no call is
  made) or Telegram says they can no longer be deleted; ``not_found`` when Telegram does not
  find the one message; ``failed`` for any other refusal, or when every attempt of a
  transient error (5xx, network) failed. Each is recorded in SQL once (the first wins) and
  then published as a recall event (watchers, SSE), in groups.
* A send still in flight is waited for (the job comes back): it is recorded, then recalled.
  The worker that records the last outcome moves the broadcast to ``recalled`` (the
  dispatcher does when nobody was sent anything).
* A worker killed during a recall loses only what it had not recorded: its claims lapse
  within a lease and JetStream redelivers the job; recipients whose delete was answered but
  not recorded are deleted again — Telegram then answers "message to delete not found", so
  at most the deletes in flight at the kill (``worker.concurrency``) are reported
  ``not_found`` instead of ``deleted``. A redelivered job publishes the events of the
  outcomes already recorded again (JetStream drops those it has).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta

from tgbroadcast.core.domain.errors import PermanentError
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    DeliveryResult,
    RecallOutcome,
)
from tgbroadcast.core.queue import Change, ChangeKind, Event, FinishedEvent, Job, RecallEvent
from tgbroadcast.core.store import RecallResult, SentClaim, SentTarget
from tgbroadcast.worker.followups import Claimer, FollowUpJobs, Hold, sent_result
from tgbroadcast.worker.telegram import Gate

logger = logging.getLogger(__name__)

DELETE_WINDOW = timedelta(hours=48)
"""How long after sending Telegram lets a bot delete a message."""

_TOO_OLD = "message can't be deleted"
_NOT_FOUND = "message to delete not found"


class Recaller(FollowUpJobs[RecallResult]):
    """Runs one bot's recall jobs (a lane's, beside its :class:`Deliverer`)."""

    kind = "recall"

    def _active(self, broadcast: Broadcast, job: Job) -> bool:
        return broadcast.status is BroadcastStatus.RECALLING  # recalled: nothing left

    def _claimer(self, broadcast: Broadcast) -> Claimer:
        def claim(
            user_ids: Sequence[int], token: str, now: datetime, until: datetime
        ) -> Awaitable[SentClaim]:
            return self._store.claim_recall(
                broadcast.id, user_ids, token=token, now=now, until=until
            )

        return claim

    async def _prepare(self, broadcast: Broadcast, held: Sequence[SentTarget]) -> object:
        return None

    async def _outcome(
        self, broadcast: Broadcast, target: SentTarget, prepared: object, hold: Hold
    ) -> RecallResult | None:
        def result(outcome: RecallOutcome, error: str | None = None) -> RecallResult:
            return RecallResult(
                broadcast_id=broadcast.id,
                user_id=target.user_id,
                outcome=outcome,
                at=datetime.now(UTC),
                error=error,
            )

        if not target.message_ids:
            return result(RecallOutcome.FAILED, "no message id was recorded for this delivery")
        if datetime.now(UTC) - target.sent_at >= DELETE_WINDOW:
            return result(RecallOutcome.TOO_OLD)

        async def delete(gate: Gate) -> None:
            await self._sender.delete(
                target.user_id, target.message_ids, broadcast_id=broadcast.id, gate=gate
            )

        answer = await self._call(broadcast, target, hold, delete)
        if answer is True:
            return result(RecallOutcome.DELETED)
        if answer is False:
            return None
        if isinstance(answer, PermanentError):
            text = answer.description.lower()
            if _NOT_FOUND in text:
                return result(RecallOutcome.NOT_FOUND)
            if _TOO_OLD in text:
                return result(RecallOutcome.TOO_OLD)
        return result(RecallOutcome.FAILED, answer.description)

    async def _record(self, results: Sequence[RecallResult]) -> dict[int, int]:
        return await self._store.record_recalls(results)

    def _event(
        self, broadcast: Broadcast, result: RecallResult, target: SentTarget, ordinal: int
    ) -> Event:
        self._metrics.recalls.labels(outcome=result.outcome.value, bot=self._bot).inc()
        delivery = sent_result(
            broadcast.id,
            target,
            recall=result.outcome,
            recall_error=result.error,
            content_version=target.content_version,
        )
        return RecallEvent(result=delivery, ordinal=ordinal)

    async def _finish(self, broadcast: Broadcast) -> None:
        finished = await self._store.finish_recall(broadcast.id, now=datetime.now(UTC))
        if finished is not None:
            logger.info("broadcast recalled", extra={"broadcast_id": broadcast.id})
            await self._queue.publish_events(
                [FinishedEvent(broadcast_id=broadcast.id, status=BroadcastStatus.RECALLED)]
            )
            await self._queue.notify(Change(broadcast.id, broadcast.bot, ChangeKind.STATUS))

    def _replayed(self, broadcast: Broadcast, results: Sequence[DeliveryResult]) -> list[Event]:
        return [RecallEvent(result=r) for r in results if r.recall is not None]
