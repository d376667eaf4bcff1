"""A watch's cursors: the opaque positions every update carries and a watch resumes after.

Spelled ``s<seq>.<sent>.<failed>[.<recalled>[.<edited>.<version>]][~<floor>][^<replayed>]``:
after stream sequence ``seq`` on the events stream (``u<user_id>...`` after a user id in a
replay), with the counters so far. ``~<floor>`` is a watch *from now*'s (:class:`Floor`): the
counters it opened with, ``<settled>[.<recalled>[.<edited>.<version>]]``. The outcomes
numbered within them — a delivery's place among the broadcast's settled recipients
(:attr:`~tgbroadcast.core.queue.ResultEvent.ordinal`), a recall's among its recall outcomes,
an edit's among its version's — were counted there, so a watch resumed from any of its
cursors still drops them when they arrive: an outcome recorded before the first stream opened
whose event came only after a reconnect is counted once.

``^<through>.<version>.<recalled>`` is a stream's that went on from a replay's cursor
(:class:`Replayed`): a finished broadcast is replayed from SQL in user id order, and a replay
resumed once the broadcast is being (or has since been) edited or recalled goes on on the
events stream from its start, dropping the events of what the replay had shown.

The watchers of a broadcast share their updates, spelled without a floor
(:attr:`.watch_updates.WatchUpdate.cursor`); the core tells a stream the floor its watch keeps
(``on_floor`` of :meth:`.broadcasting.BroadcastingService.watch`), and the stream adds it to
each cursor it spells (:func:`with_floor`): a few bytes appended to what is shared. A floor
no watch would spell (on a replay's cursor, past the cursor's counters) is not a cursor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from tgbroadcast.core.domain.model import Broadcast, DeliveryState, EditOutcome, RecallOutcome
from tgbroadcast.core.queue import ClickEvent, EditEvent, RecallEvent, ResultEvent

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_CURSOR = re.compile(
    r"([su])(-?\d{1,19})\.(\d{1,19})\.(\d{1,19})(?:\.(\d{1,19})(?:\.(\d{1,19})\.(\d{1,9}))?)?"
    r"(?:~(\d{1,19})(?:\.(\d{1,19})(?:\.(\d{1,19})\.(\d{1,9}))?)?)?"
    r"(?:\^(-?\d{1,19})\.(\d{1,9})\.([01]))?"
)


@dataclass(frozen=True, slots=True)
class Floor:
    """The counters a watch *from now* opened with: the outcomes numbered within them are
    counted there already (none: every field 0, false)."""

    settled: int = 0
    """The broadcast's ``sent + failed``."""
    recalled: int = 0
    edited: int = 0
    """The outcomes of the edit to ``version``."""
    version: int = 1

    def __bool__(self) -> bool:
        return bool(self.settled or self.recalled or self.edited)

    def __str__(self) -> str:
        """Spelled after a cursor's ``~``."""
        if self.edited:
            return f"{self.settled}.{self.recalled}.{self.edited}.{self.version}"
        return f"{self.settled}.{self.recalled}" if self.recalled else str(self.settled)

    def reaches(self, lowest: tuple[int, int, int]) -> bool:
        """Whether it holds any of the outcomes numbered from ``lowest`` (the lowest delivery,
        recall and edit numbers of some events, each of any version) on."""
        settled, recalled, edited = lowest
        return settled <= self.settled or recalled <= self.recalled or edited <= self.edited


@dataclass(frozen=True, slots=True)
class Replayed:
    """What a replay had shown when its watch went on on the events stream (a replay's
    cursor, ``u...``, resumed once the broadcast is edited or recalled): every outcome of the
    recipients up to user id ``through`` as the database held them then — their deliveries,
    their edits up to ``version``, and their recalls if ``recalled`` (a broadcast is recalled
    once). The stream's events of those are dropped; the others' are not."""

    through: int
    version: int = 1
    recalled: bool = False

    def __str__(self) -> str:
        """Spelled after a cursor's ``^``."""
        return f"{self.through}.{self.version}.{int(self.recalled)}"

    def holds(self, event: ResultEvent | RecallEvent | EditEvent | ClickEvent) -> bool:
        """Whether the replay showed this outcome (a ``click`` is never dropped: the replay
        counted the links opened before it, not which, and a repeated click moves no
        counter)."""
        result = event.result
        if result.user_id > self.through or isinstance(event, ClickEvent):
            return False
        if isinstance(event, RecallEvent):
            return self.recalled
        return result.content_version <= self.version if isinstance(event, EditEvent) else True


NO_FLOOR = Floor()
"""The one floor that holds nothing: :func:`floor_of` gives it for any such floor, so the
streams' hot paths tell it by identity."""


class KeptFloor:
    """The floor a stream's watch keeps, as the core tells it: pass it as ``on_floor`` to
    :meth:`.broadcasting.BroadcastingService.watch` (a watch from now's, or that of the stream
    cursor it resumes after), which calls it before the first update. ``suffix`` is the floor
    spelled as it ends a cursor, in bytes (``b"~..."``; empty without one), for a transport
    that appends it to the shared updates' cursors."""

    __slots__ = ("floor", "suffix")

    def __init__(self) -> None:
        self.floor = NO_FLOOR
        self.suffix = b""

    def __call__(self, floor: Floor) -> None:
        self.floor = floor
        self.suffix = f"~{floor}".encode() if floor else b""


def floor_of(*counters: int) -> Floor:
    """``Floor(*counters)``; :data:`NO_FLOOR` itself if it holds nothing."""
    floor = Floor(*counters)
    return floor if floor else NO_FLOOR


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a watch: after stream sequence ``seq`` (``kind`` ``s``) or after user id
    ``seq`` of a replay (``u``), with the counters so far."""

    kind: str
    seq: int
    sent: int
    failed: int
    recalled: int = 0
    edited: int = 0
    version: int = 1
    """The content version ``edited`` counts the outcomes of."""
    floor: Floor = NO_FLOOR
    """The outcomes numbered within it are counted already (a watch *from now*'s: the
    counters it started from)."""
    replayed: Replayed | None = None
    """A stream cursor's that goes on from a replay's: what that replay showed."""

    def __str__(self) -> str:
        text = spelled(
            self.kind, self.seq, self.sent, self.failed, self.recalled, self.edited, self.version
        )
        return with_replayed(with_floor(text, self.floor), self.replayed)

    def after_replay(self) -> Cursor:
        """A replay's cursor (``u``) as a cursor of the events stream from its start, with
        the counters so far and what the replay showed (dropped when its events come)."""
        replayed = Replayed(self.seq, self.version, self.recalled > 0)
        return Cursor(
            "s",
            0,
            self.sent,
            self.failed,
            self.recalled,
            self.edited,
            self.version,
            replayed=replayed,
        )

    @classmethod
    def now(
        cls,
        end: int,
        broadcast: Broadcast,
        outcome_counts: Mapping[DeliveryState, int],
        recall_counts: Mapping[RecallOutcome, int] | None = None,
        edit_counts: Mapping[EditOutcome, int] | None = None,
    ) -> Cursor:
        """A stream cursor before stream sequence ``end`` (the stream's end, read first) with
        ``broadcast``'s counters and, for ``sent`` and ``failed``, ``outcome_counts`` (both
        read after it; the counts last, in one statement); likewise ``recalled`` from
        ``recall_counts`` and ``edited`` from ``edit_counts`` (of ``broadcast``'s version)
        when given: a watch from it starts *from now*, its floor those counters."""
        sent = outcome_counts.get(DeliveryState.SENT, 0)
        settled = sum(outcome_counts.values())
        recalled = broadcast.recalled if recall_counts is None else sum(recall_counts.values())
        edited = broadcast.edited if edit_counts is None else sum(edit_counts.values())
        version = broadcast.content_version
        return cls(
            "s",
            max(0, end - 1),
            sent,
            settled - sent,
            recalled,
            edited,
            version,
            # An edit floor's version matters only with outcomes in it (as it is spelled).
            floor=floor_of(settled, recalled, edited, version if edited else 1),
        )

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        """The cursor ``text`` spells; None for anything else."""
        match = _CURSOR.fullmatch(text.strip())
        if match is None:
            return None
        kind, seq, sent, failed, recalled, edited, version, *rest = match.groups()
        below, (through, shown, recalls) = rest[:4], rest[4:]
        floor = floor_of(*(int(n) for n in below if n is not None))
        replayed = None
        if through is not None:
            replayed = Replayed(int(through), int(shown), recalls == "1")
        cursor = cls(
            kind,
            int(seq),
            int(sent),
            int(failed),
            int(recalled or 0),
            int(edited or 0),
            int(version or 1),
            floor,
            replayed,
        )
        if not _INT64_MIN <= cursor.seq <= _INT64_MAX or (kind == "s" and cursor.seq < 0):
            return None  # no stream sequence or user id is out there
        if floor and not _spelled_by_a_watch(cursor):
            return None
        if replayed is not None and (
            kind != "s" or floor or not _INT64_MIN <= replayed.through <= _INT64_MAX
        ):
            return None  # only a stream that went on from a replay spells one (never from now)
        return cursor


def spelled(
    kind: str, seq: int, sent: int, failed: int, recalled: int, edited: int, version: int
) -> str:
    """A cursor without a floor, spelled."""
    text = f"{kind}{seq}.{sent}.{failed}"
    if edited or version != 1:
        return f"{text}.{recalled}.{edited}.{version}"
    return f"{text}.{recalled}" if recalled else text


def with_floor(cursor: str, floor: Floor) -> str:
    """``cursor`` (spelled without a floor) with ``floor``; as it is without one, or with no
    cursor."""
    return f"{cursor}~{floor}" if floor and cursor else cursor


def with_replayed(cursor: str, replayed: Replayed | None) -> str:
    """``cursor`` with what the replay it went on from showed; as it is without one."""
    return cursor if replayed is None or not cursor else f"{cursor}^{replayed}"


def _spelled_by_a_watch(cursor: Cursor) -> bool:
    """Whether a watch could spell ``cursor``'s floor: a stream cursor's (a replay has none),
    within its counters (which start from the floor and only grow; an edit's go on from it
    while its version is the cursor's), of a broadcast with settled recipients."""
    floor = cursor.floor
    if cursor.kind != "s" or not floor.settled:
        return False
    if floor.settled > cursor.sent + cursor.failed or floor.recalled > cursor.recalled:
        return False
    if floor.edited and floor.version == cursor.version:
        return floor.edited <= cursor.edited
    return floor.version <= cursor.version
