"""A watch's updates and the place it is at: what :mod:`.watching` streams, and the position
each update is made at (moved in place as the events come; its cursor, :mod:`.cursors`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tgbroadcast.core.domain.model import (
    BroadcastStatus,
    DeliveryResult,
    DeliveryState,
    EditOutcome,
    RecallOutcome,
)
from tgbroadcast.core.service.cursors import (
    NO_FLOOR,
    Cursor,
    Floor,
    Replayed,
    spelled,
    with_floor,
    with_replayed,
)

STATUS_KIND = "status"
"""The kind of a status move's update (it has no result)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchUpdate:
    """One message of a watch: a recipient's outcome (``None`` on the closing update), the
    counters including it, and the cursor to resume after it.

    The watchers of a broadcast at the same place share the very same updates
    (:class:`.watching.SharedSteps`). Its :attr:`cursor` is spelled when asked for (a batched gRPC
    message spells only its last's).
    """

    result: DeliveryResult | None
    status: BroadcastStatus
    total: int
    sent: int
    failed: int
    position: str = ""
    """The cursor's kind (``s`` or ``u``); empty: no cursor (an empty replay's end)."""
    seq: int = 0
    """The stream sequence or user id the cursor is after."""
    version: int = 1
    """The content version ``edited`` counts the outcomes of."""
    recalled: int = 0
    """Recall outcomes so far (this one included)."""
    edited: int = 0
    """Outcomes of the newest edit seen so far (this one included)."""
    outcome_counts: Mapping[DeliveryState, int] | None = None
    """A watch *from now*'s opening only: the outcomes its counters hold, by kind."""
    recall_counts: Mapping[RecallOutcome, int] | None = None
    """A watch *from now*'s opening only: the recall outcomes its ``recalled`` holds."""
    edit_counts: Mapping[EditOutcome, int] | None = None
    """A watch *from now*'s opening only: the outcomes of its version's edit ``edited``
    holds."""
    floor: Floor = NO_FLOOR
    """A watch *from now*'s opening only: its floor (:class:`.cursors.Cursor`), which its
    cursor carries; the updates after it are shared, and a stream adds the floor to theirs."""
    replayed: Replayed | None = None
    """What the replay this watch went on from showed (its own updates, never shared)."""
    kind: str = "result"
    """What this update is: a delivery's ``result``, a ``recall``'s or an ``edit``'s outcome,
    or a recipient's first ``click`` on a tracked link (a replay's one update per recipient
    is a ``result`` carrying the others' outcomes); or, without a ``result``, a ``status``
    move of a followed broadcast (paused, resumed, started, recalling)."""

    @property
    def pending(self) -> int:
        return self.total - self.sent - self.failed

    @property
    def cursor(self) -> str:
        """Where a watch resumes after this update (:class:`Cursor`, spelled)."""
        if not self.position:
            return ""
        text = spelled(
            self.position,
            self.seq,
            self.sent,
            self.failed,
            self.recalled,
            self.edited,
            self.version,
        )
        if self.floor is not NO_FLOOR:
            text = with_floor(text, self.floor)
        return text if self.replayed is None else with_replayed(text, self.replayed)

    @property
    def closing(self) -> bool:
        """Whether this is the watch's last update (its final status and counters)."""
        return self.result is None and self.kind != STATUS_KIND


class At:
    """A watch's position as it moves: a :class:`Cursor` changed in place, one per watch (a
    new frozen cursor per outcome per watcher was a tenth of a streaming server's CPU)."""

    __slots__ = (
        "edited",
        "failed",
        "floor",
        "kind",
        "recalled",
        "replayed",
        "sent",
        "seq",
        "version",
    )

    def __init__(self, cursor: Cursor) -> None:
        self.floor = cursor.floor
        self.replayed = cursor.replayed
        self.kind = cursor.kind
        self.seq = cursor.seq
        self.sent = cursor.sent
        self.failed = cursor.failed
        self.recalled = cursor.recalled
        self.edited = cursor.edited
        self.version = cursor.version

    def place(self) -> tuple[int, int, int, int, int, int]:
        """Its sequence and counters (:class:`.watching.SharedSteps`' key; not the floor, which only
        matters to the outcomes numbered within it)."""
        return (self.seq, self.sent, self.failed, self.recalled, self.edited, self.version)

    def update(
        self,
        result: DeliveryResult | None,
        status: BroadcastStatus,
        total: int,
        kind: str = "result",
        *,
        positioned: bool = True,
    ) -> WatchUpdate:
        """The update at this position (without a cursor unless ``positioned``)."""
        return WatchUpdate(
            result=result,
            status=status,
            total=total,
            sent=self.sent,
            failed=self.failed,
            position=self.kind if positioned else "",
            seq=self.seq,
            version=self.version,
            recalled=self.recalled,
            edited=self.edited,
            kind=kind,
            replayed=self.replayed,
        )
