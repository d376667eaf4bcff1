"""Change notices: a broadcast was created, moved to another status, or had outcomes recorded.

A notice is a hint, never the truth: it names the broadcast (id and bot) and the kind of
change; whoever acts on it reads the broadcast from SQL. The process that made a change
publishes its notice after the commit: an API server for a creation and its lifecycle moves,
the scheduler for a start, a worker for each group commit of outcomes (the moves it made with
it: ``running``, ``completed``), for the content circuit breaker's ``failed`` and for the end
of a recall or an edit.

Notices travel on core NATS, on one subject, ``<prefix>.changes``, outside every stream:
nothing is stored, every subscriber of every process gets each notice published after its
subscription reached the server (:meth:`ChangeNotices.subscribe_changes` returns only then).
Delivery is at most once: a notice published while NATS cannot be reached is lost (publishing
logs it and never raises; the next change of the broadcast brings it up to date).

A mixin of :class:`~.jetstream.Queue` (through :class:`~.watching.EventWatching`): it needs the
queue's connection and names.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from tgbroadcast.core.queue.names import QueueNames, check_bot
from tgbroadcast.core.queue.payloads import loads_object

logger = logging.getLogger(__name__)


class ChangeKind(enum.StrEnum):
    """What happened to a broadcast."""

    CREATED = "created"
    STATUS = "status"
    """It moved to another status (or started or ended an edit)."""
    PROGRESS = "progress"
    """Outcomes of it were recorded (its counters moved); a move may have come with them."""


@dataclass(frozen=True, slots=True)
class Change:
    """One notice: broadcast ``broadcast_id`` of bot ``bot`` changed this way."""

    broadcast_id: int
    bot: str
    kind: ChangeKind

    def encode(self) -> bytes:
        return json.dumps(
            {"id": self.broadcast_id, "bot": self.bot, "kind": self.kind.value},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Change:
        """Parse a notice; ``ValueError`` when it is not one."""
        obj = loads_object(data)
        broadcast_id, bot = obj.get("id"), obj.get("bot")
        if not isinstance(broadcast_id, int) or isinstance(broadcast_id, bool) or broadcast_id < 1:
            raise ValueError("id must be a positive integer")
        kind = obj.get("kind")
        if not isinstance(bot, str) or not isinstance(kind, str):
            raise ValueError("bot and kind must be strings")
        return cls(broadcast_id, check_bot(bot), ChangeKind(kind))


def changes_subject(names: QueueNames) -> str:
    """The subject of every change notice under ``names``' prefix."""
    return f"{names.prefix}.changes"


class ChangeNotices:
    """Publishing and subscribing to change notices; see the module's docstring."""

    _nc: NatsClient
    _names: QueueNames

    async def notify(self, *changes: Change) -> None:
        """Publish the notices; never raises (a notice that cannot be published is logged
        and lost)."""
        subject = changes_subject(self._names)
        for change in changes:
            try:
                await self._nc.publish(subject, change.encode())
            except (nats.errors.Error, OSError) as exc:
                logger.info(
                    "a change notice was not published",
                    extra={"broadcast_id": change.broadcast_id, "error": repr(exc)},
                )

    async def subscribe_changes(self, deliver: Callable[[Change], None]) -> Subscription:
        """Call ``deliver`` with every notice published from now on (the server has the
        subscription when this returns), until the subscription is unsubscribed. Malformed
        notices are logged and skipped. ``QueueError``-free: NATS errors are raised as they
        are (``nats.errors.Error``)."""

        async def received(msg: Msg) -> None:
            try:
                change = Change.decode(msg.data)
            except ValueError as exc:
                logger.warning("skipping a malformed change notice: %s", exc)
                return
            deliver(change)

        sub = await self._nc.subscribe(changes_subject(self._names), cb=received)
        await self._nc.flush()
        return sub
