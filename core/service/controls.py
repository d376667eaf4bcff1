"""The core's lifecycle operations: list, cancel, pause, resume, recall and edit broadcasts.

Who asked is an explicit ``actor`` (the API token's name, passed in by the transport: the
core never reads a request's context); each move is recorded with it, and listed broadcasts
carry their recorded actions. Who may see which broadcasts is an explicit ``visible`` too
(the bots of the caller's API token, :mod:`.bot_access`): a broadcast of another bot is not
listed, and moving it is ``NotFound`` exactly as for one that does not exist.

A mixin of :class:`~tgbroadcast.core.service.broadcasting.BroadcastingService` (both transports call
these through it). The moves and what they guarantee are :mod:`tgbroadcast.core.domain.states`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from tgbroadcast.core.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument
from tgbroadcast.core.domain.model import Broadcast, BroadcastStatus
from tgbroadcast.core.domain.states import RECALL_SETTLE, Command
from tgbroadcast.core.queue import ChangeKind, FinishedEvent, Queue
from tgbroadcast.core.rules import page_tokens
from tgbroadcast.core.rules.bot_names import validate_bot_name
from tgbroadcast.core.rules.edits import EditRequest, validate_edit
from tgbroadcast.core.service.announcing import announce
from tgbroadcast.core.service.bot_access import (
    KnownBots,
    Visible,
    check_visible,
    may_see,
    visible_broadcast,
)
from tgbroadcast.core.service.dispatch import Dispatcher
from tgbroadcast.core.store import Store

logger = logging.getLogger(__name__)

_STATUS_NAMES: Final = ", ".join(status.value for status in BroadcastStatus)


def list_filter(
    bot: str, statuses: Sequence[str]
) -> tuple[frozenset[BroadcastStatus], list[FieldViolation]]:
    """The statuses of a list's filter (lower-case names), and what is wrong with it: a
    malformed ``bot`` name (empty: any bot), an unknown status (``statuses[i]``)."""
    violations: list[FieldViolation] = []
    if bot:
        try:
            validate_bot_name(bot)
        except InvalidArgument as exc:
            violations.extend(exc.violations)
    wanted: set[BroadcastStatus] = set()
    for index, name in enumerate(statuses):
        try:
            wanted.add(BroadcastStatus(name))
        except ValueError:
            violations.append(
                FieldViolation(
                    f"statuses[{index}]", f"unknown status {name!r}; one of {_STATUS_NAMES}"
                )
            )
    return frozenset(wanted), violations


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastsPage:
    """Broadcasts newest first; ``next_page_token`` is empty on the last page."""

    broadcasts: tuple[Broadcast, ...]
    next_page_token: str


class LifecycleOperations:
    """List, cancel, pause, resume, recall, edit. Needs ``_store``, ``_queue`` and
    ``_dispatcher``."""

    _store: Store
    _queue: Queue
    _dispatcher: Dispatcher
    _bots: KnownBots

    async def list_broadcasts(
        self,
        *,
        statuses: Sequence[str],
        page_size: int,
        page_token: str,
        bot: str = "",
        visible: Visible = None,
    ) -> BroadcastsPage:
        """Broadcasts in any of ``statuses`` (lower-case names; all when empty), newest
        first, ``page_size`` (default 100, at most 1000) at a time; only the bot ``bot``'s
        when given (a bot deleted since may be named: its broadcasts stay), and only those
        of ``visible`` bots (filtered in SQL)."""
        wanted, violations = list_filter(bot, statuses)
        violations += page_tokens.page_size_violations(page_size)
        before: int | None = None
        if page_token:
            try:
                before = page_tokens.decode(page_tokens.BROADCASTS, page_token)
            except ValueError as exc:
                violations.append(FieldViolation(page_tokens.FIELD, str(exc)))
        if violations:
            raise InvalidArgument(violations)
        limit = page_size or page_tokens.DEFAULT_PAGE_SIZE
        bots = visible
        if bot:
            bots = (bot,) if may_see(visible, bot) else ()
        found = await self._store.list_broadcasts(
            statuses=wanted, before=before, limit=limit + 1, bots=bots
        )
        page = tuple(found[:limit])
        more = len(found) > limit
        return BroadcastsPage(
            broadcasts=page,
            next_page_token=page_tokens.encode(page_tokens.BROADCASTS, page[-1].id) if more else "",
        )

    async def cancel_broadcast(
        self, broadcast_id: int, *, actor: str, visible: Visible = None
    ) -> Broadcast:
        """Stop a scheduled, queued, running or paused broadcast for good (see
        :mod:`tgbroadcast.core.domain.states`); ``FailedPrecondition`` naming any other state."""
        await check_visible(self._store, broadcast_id, visible)
        broadcast = await self._store.move_broadcast(broadcast_id, Command.CANCEL, actor=actor)
        logger.info("broadcast cancelled", extra={"broadcast_id": broadcast_id, "actor": actor})
        try:  # watchers learn it at once; without the event they see it within a second
            await self._queue.publish_events(
                [FinishedEvent(broadcast_id=broadcast_id, status=BroadcastStatus.CANCELLED)]
            )
        except Exception as exc:
            logger.warning(
                "publishing a cancellation failed",
                extra={"broadcast_id": broadcast_id, "error": repr(exc)},
            )
        await announce(self._queue, broadcast, ChangeKind.STATUS)
        return broadcast

    async def pause_broadcast(
        self, broadcast_id: int, *, actor: str, visible: Visible = None
    ) -> Broadcast:
        """Hold a queued or running broadcast; ``FailedPrecondition`` naming any other state."""
        await check_visible(self._store, broadcast_id, visible)
        broadcast = await self._store.move_broadcast(broadcast_id, Command.PAUSE, actor=actor)
        logger.info("broadcast paused", extra={"broadcast_id": broadcast_id, "actor": actor})
        await announce(self._queue, broadcast, ChangeKind.STATUS)
        return broadcast

    async def resume_broadcast(
        self, broadcast_id: int, *, actor: str, visible: Visible = None
    ) -> Broadcast:
        """Continue a paused broadcast with its pending recipients as a new generation of
        jobs; ``FailedPrecondition`` naming any state but paused."""
        await check_visible(self._store, broadcast_id, visible)
        broadcast = await self._store.move_broadcast(broadcast_id, Command.RESUME, actor=actor)
        logger.info(
            "broadcast resumed",
            extra={
                "broadcast_id": broadcast_id,
                "status": broadcast.status.value,
                "actor": actor,
            },
        )
        await announce(self._queue, broadcast, ChangeKind.STATUS)
        self._dispatcher.dispatch(broadcast_id)
        return broadcast

    async def recall_broadcast(
        self, broadcast_id: int, *, actor: str, visible: Visible = None
    ) -> Broadcast:
        """Delete a broadcast's messages from every chat that received them (see
        :mod:`tgbroadcast.core.domain.states`): it moves to ``recalling`` at once (nothing more
        is sent), and its recall jobs are published once every worker has seen that
        (``RECALL_SETTLE``). ``FailedPrecondition`` for a scheduled broadcast (nothing was
        sent: cancel it), for one recalling or recalled already, and for one whose bot was
        deleted (state ``bot_deleted``)."""
        found = await visible_broadcast(self._store, broadcast_id, visible)
        if await self._bots.lookup(found.bot) is None:  # no worker would ever delete them
            raise FailedPrecondition(
                f"broadcast {broadcast_id} was sent by bot {found.bot!r}, which was deleted: "
                "its messages cannot be recalled",
                state="bot_deleted",
            )
        broadcast = await self._store.move_broadcast(broadcast_id, Command.RECALL, actor=actor)
        logger.info("broadcast recalled", extra={"broadcast_id": broadcast_id, "actor": actor})
        await announce(self._queue, broadcast, ChangeKind.STATUS)
        asyncio.get_running_loop().call_later(
            RECALL_SETTLE, self._dispatcher.dispatch, broadcast_id
        )
        return broadcast

    async def edit_broadcast(
        self, broadcast_id: int, request: EditRequest, *, actor: str, visible: Visible = None
    ) -> Broadcast:
        """Replace a broadcast's content (see :mod:`tgbroadcast.core.rules.edits`) as its next
        version: recipients not sent yet get it, and once every worker has seen it
        (``EDIT_SETTLE``) edit jobs apply it to every message sent with an older one (see
        :mod:`tgbroadcast.core.domain.states`). ``InvalidArgument`` for content the broadcast
        cannot take; ``FailedPrecondition`` for a recalling or recalled broadcast, a forward
        (state ``forward``), and one whose bot was deleted (state ``bot_deleted``)."""
        found = await visible_broadcast(self._store, broadcast_id, visible)
        if await self._bots.lookup(found.bot) is None:  # no worker would ever edit them
            raise FailedPrecondition(
                f"broadcast {broadcast_id} was sent by bot {found.bot!r}, which was deleted: "
                "its messages cannot be edited",
                state="bot_deleted",
            )
        if found.variants:
            raise FailedPrecondition(
                f"broadcast {broadcast_id} has variants: an edit would give every recipient one "
                "content; recall it and send it again instead",
                state="variants",
            )
        edit = validate_edit(request, found.content, broadcast_id=broadcast_id)
        broadcast = await self._store.edit_broadcast(
            broadcast_id, edit, actor=actor, now=datetime.now(UTC)
        )
        logger.info(
            "broadcast edited",
            extra={
                "broadcast_id": broadcast_id,
                "version": broadcast.content_version,
                "actor": actor,
            },
        )
        await announce(self._queue, broadcast, ChangeKind.STATUS, moved=False)
        self._dispatcher.dispatch(broadcast_id)
        return broadcast
