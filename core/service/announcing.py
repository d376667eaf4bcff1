"""Telling watchers that a broadcast changed, after the change was committed in SQL.

Two audiences, two channels (:mod:`tgbroadcast.core.queue`):

* the watchers of the broadcast (``WatchBroadcast``, its SSE stream) get a
  :class:`~tgbroadcast.core.queue.StatusEvent` on its events stream for every move to a status
  that is not final (a final one has its ``FinishedEvent``), in order with its outcomes: the
  outcomes streamed after it carry the new status;
* the watchers of the list (``WatchBroadcasts``, ``GET /v1/broadcasts/events``) get a change
  notice (:mod:`tgbroadcast.core.queue.changes`) for every creation, move and edit.

Announcing never raises: the change is committed already, and a watcher that missed the event
still sees the status when it next reads the broadcast (the watch re-reads it while idle).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from tgbroadcast.core.domain.model import Broadcast
from tgbroadcast.core.queue import Change, ChangeKind, Queue, StatusEvent

logger = logging.getLogger(__name__)


async def announce(
    queue: Queue, broadcast: Broadcast, kind: ChangeKind, *, moved: bool = True
) -> None:
    """``broadcast`` (as the change left it) was created (``CREATED``), or moved or edited
    (``STATUS``; an edit is not ``moved``): a status event when it moved to a status that is
    not final, and a change notice."""
    if kind is ChangeKind.STATUS and moved and not broadcast.status.is_final:
        event = StatusEvent(
            broadcast_id=broadcast.id, status=broadcast.status, at=datetime.now(UTC)
        )
        try:
            await queue.publish_events([event])
        except Exception as exc:
            logger.warning(
                "publishing a status event failed",
                extra={"broadcast_id": broadcast.id, "error": repr(exc)},
            )
    await queue.notify(Change(broadcast.id, broadcast.bot, kind))
