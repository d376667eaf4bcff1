"""Edit jobs: giving an edited broadcast's sent messages its new content.

Guarantees (any number of worker processes; the rest is :mod:`.followups`'):

* An edit job covers the recipients of one send batch (:meth:`Store.edit_batches`) for one
  content version, and holds its ``SENT`` recipients whose messages are of an older version.
  A job of a version that is no longer the latest is dropped: the newest edit's jobs cover
  every recipient behind it, and apply the newest content.
* Each recipient's message takes the one ``editMessage*`` call its kind takes
  (:meth:`TelegramSender.edit`): the text; the caption (an album's first message's), or the
  media too when the recipient's messages predate the media's replacement; the keyboard of a
  video note or sticker. A copy's caption edit that Telegram refuses because the copied
  message is a text ("there is no caption in the message to edit") is made as a text edit.
  A personalized broadcast's new text is rendered for each recipient from their profile; a
  rendering Telegram would refuse fails that recipient alone.
* Outcomes: ``edited`` (Telegram's "message is not modified" included: the message already
  carries the content); ``not_found`` when Telegram does not find the message; ``failed`` for
  any other refusal ("message can't be edited", ...) or when every attempt of a transient
  error failed. Each is recorded once per version (the first wins) with the version it
  applied, then published as an edit event. The worker that records the last one ends the
  edit (``editing`` false).
* A worker killed during an edit loses only what it had not recorded; edits answered but not
  recorded are made again, and Telegram answers "message is not modified", counted
  ``edited``: nothing is reported wrong and no recipient is left with older content.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime

from tgbroadcast.core.domain.errors import PermanentError
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    DeliveryResult,
    EditOutcome,
    MediaType,
    UserProfile,
)
from tgbroadcast.core.queue import Change, ChangeKind, EditEvent, Event, Job
from tgbroadcast.core.rules import clicks
from tgbroadcast.core.rules.templates import personalized, rendered_problem
from tgbroadcast.core.store import EditResult, SentClaim, SentTarget
from tgbroadcast.worker.followups import Claimer, FollowUpJobs, Hold, sent_result
from tgbroadcast.worker.telegram import Gate

logger = logging.getLogger(__name__)

NOT_MODIFIED = "message is not modified"
_NOT_FOUND = "message to edit not found"
_NO_CAPTION = "there is no caption in the message to edit"
_ENDED = frozenset({BroadcastStatus.RECALLING, BroadcastStatus.RECALLED})


class Editor(FollowUpJobs[EditResult]):
    """Runs one bot's edit jobs (a lane's, beside its :class:`Deliverer`)."""

    kind = "edit"

    def _active(self, broadcast: Broadcast, job: Job) -> bool:
        return (
            broadcast.editing
            and job.edit == broadcast.content_version
            and broadcast.status not in _ENDED
        )

    def _claimer(self, broadcast: Broadcast) -> Claimer:
        def claim(
            user_ids: Sequence[int], token: str, now: datetime, until: datetime
        ) -> Awaitable[SentClaim]:
            return self._store.claim_edit(
                broadcast.id,
                user_ids,
                version=broadcast.content_version,
                token=token,
                now=now,
                until=until,
            )

        return claim

    async def _prepare(
        self, broadcast: Broadcast, held: Sequence[SentTarget]
    ) -> Mapping[int, UserProfile]:
        """The recipients' profiles when the content is personalized (one query per job)."""
        if not broadcast.content.options.personalize or not held:
            return {}
        return await self._store.profiles([t.user_id for t in held], bot=broadcast.bot)

    async def _outcome(
        self, broadcast: Broadcast, target: SentTarget, prepared: object, hold: Hold
    ) -> EditResult | None:
        def result(outcome: EditOutcome, error: str | None = None) -> EditResult:
            return EditResult(
                broadcast_id=broadcast.id,
                user_id=target.user_id,
                outcome=outcome,
                version=broadcast.content_version,
                error=error,
            )

        if not target.message_ids:
            return result(EditOutcome.FAILED, "no message id was recorded for this delivery")
        profiles: Mapping[int, UserProfile] = prepared if isinstance(prepared, Mapping) else {}
        content = personalized(broadcast.content, target.user_id, profiles.get(target.user_id))
        if content.options.personalize and (problem := rendered_problem(content)):
            return result(EditOutcome.FAILED, problem)
        content = clicks.for_recipient(content, broadcast, target.user_id, 0)  # no variants
        media_changed = target.content_version < broadcast.media_version
        as_text = False

        async def edit(gate: Gate) -> None:
            await self._sender.edit(
                target.user_id,
                target.message_ids,
                content,
                media_changed=media_changed,
                as_text=as_text,
                broadcast_id=broadcast.id,
                gate=gate,
            )

        answer = await self._call(broadcast, target, hold, edit)
        if (
            content.media_type is MediaType.COPY
            and isinstance(answer, PermanentError)
            and _NO_CAPTION in answer.description.lower()
        ):  # a copy of a text message: its text is what the caption stands for
            as_text = True
            answer = await self._call(broadcast, target, hold, edit)
        if answer is True:
            return result(EditOutcome.EDITED)
        if answer is False:
            return None
        if isinstance(answer, PermanentError):
            text = answer.description.lower()
            if NOT_MODIFIED in text:
                return result(EditOutcome.EDITED)
            if _NOT_FOUND in text:
                return result(EditOutcome.NOT_FOUND)
        return result(EditOutcome.FAILED, answer.description)

    async def _record(self, results: Sequence[EditResult]) -> dict[int, int]:
        return await self._store.record_edits(results)

    def _event(
        self, broadcast: Broadcast, result: EditResult, target: SentTarget, ordinal: int
    ) -> Event:
        self._metrics.edits.labels(outcome=result.outcome.value, bot=self._bot).inc()
        delivery = sent_result(
            broadcast.id,
            target,
            content_version=result.version,
            edit=result.outcome,
            edit_error=result.error,
        )
        return EditEvent(result=delivery, ordinal=ordinal)

    async def _finish(self, broadcast: Broadcast) -> None:
        ended = await self._store.finish_edit(
            broadcast.id, version=broadcast.content_version, now=datetime.now(UTC)
        )
        if ended is not None:
            logger.info(
                "broadcast edited everywhere",
                extra={"broadcast_id": broadcast.id, "version": broadcast.content_version},
            )
            await self._queue.notify(Change(broadcast.id, broadcast.bot, ChangeKind.STATUS))

    def _replayed(self, broadcast: Broadcast, results: Sequence[DeliveryResult]) -> list[Event]:
        return [
            EditEvent(result=r)
            for r in results
            if r.edit is not None and r.content_version == broadcast.content_version
        ]
