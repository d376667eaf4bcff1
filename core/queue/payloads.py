"""What travels on the queue: jobs, delivery and status events, and their JSON encoding.

Payloads are compact JSON with datetimes in ISO 8601 UTC. Decoding validates the shape and
raises ``ValueError`` on anything else, so a malformed message never reaches a worker or a
watcher as a half-valid value.
"""

from __future__ import annotations

import hashlib
import json
import operator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.model import (
    BroadcastStatus,
    DeliveryResult,
    DeliveryState,
    EditOutcome,
    RecallOutcome,
)
from tgbroadcast.core.queue.names import check_bot

JOB_SIZE = 100
"""Recipients per job, as the dispatcher cuts them (a worker takes more jobs while fewer
than this wait to be sent)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A batch of recipients of one broadcast: ``user_ids`` ascending, distinct, non-empty.

    ``generation`` is the broadcast's job generation when the job was cut (0 until it is
    first resumed; see :mod:`tgbroadcast.core.domain.states`): workers drop jobs of an older one.
    ``paid``: the broadcast is a paid one; its jobs travel apart from the free ones, so the
    two budgets never wait for each other's jobs.
    ``bot``: the broadcast's bot; each bot's jobs travel apart too (payload key ``bot``,
    written only for a bot other than ``default``: a job without it — every job queued
    before bots existed — is the bot ``default``'s).
    """

    broadcast_id: int
    user_ids: tuple[int, ...]
    generation: int = 0
    paid: bool = False
    bot: str = DEFAULT_BOT
    recall: bool = False
    """A recall job (RecallBroadcast): delete the messages its recipients were sent."""
    edit: int = 0
    """An edit job (EditBroadcast) to this content version: edit the messages its recipients
    were sent with an older one (0: not an edit job). Its ``generation`` is the dispatch that
    cut it (each dispatch of an edit publishes jobs of its own)."""

    def __post_init__(self) -> None:
        if not _is_int(self.broadcast_id) or self.broadcast_id < 1:
            raise ValueError(f"broadcast_id must be a positive int, got {self.broadcast_id!r}")
        if not self.user_ids:
            raise ValueError("a job needs at least one user id")
        # (Both checks run in C: a dispatch cuts a job per hundred recipients.)
        if not set(map(type, self.user_ids)) <= {int}:
            raise ValueError("user_ids must be ints")
        if not all(map(operator.lt, self.user_ids, islice(self.user_ids, 1, None))):
            raise ValueError("user_ids must be ascending and distinct")
        if not _is_int(self.generation) or self.generation < 0:
            raise ValueError(f"generation must be a non-negative int, got {self.generation!r}")
        if not _is_int(self.edit) or self.edit < 0 or (self.edit and self.recall):
            raise ValueError(f"edit must be a non-negative int, not on a recall, got {self.edit!r}")
        check_bot(self.bot)

    @property
    def msg_id(self) -> str:
        """The ``Nats-Msg-Id``: the same for the same content, different for any other
        (a bot other than ``default`` is part of it)."""
        return self._msg_id(_joined(self.user_ids))

    def encode(self) -> bytes:
        return self._encode(_joined(self.user_ids))

    def encoded(self) -> tuple[bytes, str]:
        """``(encode(), msg_id)``, the ids written out once for both (a dispatch publishes
        a job per hundred recipients: the ids' text was half of a job's cost)."""
        ids = _joined(self.user_ids)
        return self._encode(ids), self._msg_id(ids)

    def _msg_id(self, ids: str) -> str:
        digest = hashlib.sha256(ids.encode()).hexdigest()[:16]
        kind = "v" if self.recall else f"e{self.edit}" if self.edit else "j"
        msg_id = f"{kind}.{self.broadcast_id}.{self.user_ids[0]}.{len(self.user_ids)}.{digest}"
        if self.generation:
            msg_id = f"{msg_id}.g{self.generation}"
        return msg_id if self.bot == DEFAULT_BOT else f"{msg_id}.b.{self.bot}"

    def _encode(self, ids: str) -> bytes:
        # The ids are ints (checked above): their JSON array is their decimal text, joined.
        extra: dict[str, Any] = {}
        if self.generation:
            extra["generation"] = self.generation
        if self.paid:
            extra["paid"] = True
        if self.bot != DEFAULT_BOT:
            extra["bot"] = self.bot
        if self.recall:
            extra["recall"] = True
        if self.edit:
            extra["edit"] = self.edit
        head = f'{{"broadcast_id":{self.broadcast_id},"user_ids":[{ids}]'
        return (head + ("," + _dumps_text(extra)[1:] if extra else "}")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Job:
        """Parse a job message; ``ValueError`` when it is not one."""
        obj = loads_object(data)
        user_ids = obj.get("user_ids")
        if not isinstance(user_ids, list):
            raise ValueError("user_ids must be a list")
        generation = _get_int(obj, "generation") if "generation" in obj else 0
        paid = obj.get("paid", False)
        if not isinstance(paid, bool):
            raise ValueError("paid must be a boolean")
        bot = _get_str(obj, "bot") if "bot" in obj else DEFAULT_BOT
        recall = obj.get("recall", False)
        if not isinstance(recall, bool):
            raise ValueError("recall must be a boolean")
        return cls(
            recall=recall,
            edit=_get_int(obj, "edit") if "edit" in obj else 0,
            broadcast_id=_get_int(obj, "broadcast_id"),
            user_ids=tuple(user_ids),
            generation=generation,
            paid=paid,
            bot=bot,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultEvent:
    """One recipient reached its final state."""

    result: DeliveryResult
    ordinal: int = 0
    """Its place among the broadcast's settled recipients (:attr:`.Recorded.ordinals`: 1 for
    the first recorded); 0 when not known (an event re-published from the database after a
    worker died, or written by a release before these numbers). A watch *from now* drops the
    outcomes numbered within the counters it started from (they were counted there)."""

    @property
    def broadcast_id(self) -> int:
        return self.result.broadcast_id

    @property
    def msg_id(self) -> str:
        return f"r.{self.result.broadcast_id}.{self.result.user_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecallEvent:
    """One sent recipient's recall has its outcome (``result.recall`` is set)."""

    result: DeliveryResult
    ordinal: int = 0
    """Its place among the broadcast's recall outcomes (1 for the first recorded); 0 when not
    known (re-published from the database, or written by a release before these numbers). A
    watch *from now* drops those within the ``recalled`` it started from."""

    def __post_init__(self) -> None:
        if self.result.recall is None:
            raise ValueError("a recall event needs a recall outcome")

    @property
    def broadcast_id(self) -> int:
        return self.result.broadcast_id

    @property
    def msg_id(self) -> str:
        return f"v.{self.result.broadcast_id}.{self.result.user_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class EditEvent:
    """One sent recipient's edit has its outcome (``result.edit`` is set, and
    ``result.content_version`` is the version the edit applied)."""

    result: DeliveryResult
    ordinal: int = 0
    """Its place among the outcomes of its version's edit (1 for the first recorded); 0 when
    not counted (an older version's, recorded after a newer edit began) or not known (as a
    :class:`RecallEvent`'s). A watch *from now* drops those within the ``edited`` it started
    from, of the version it started at."""

    def __post_init__(self) -> None:
        if self.result.edit is None:
            raise ValueError("an edit event needs an edit outcome")

    @property
    def broadcast_id(self) -> int:
        return self.result.broadcast_id

    @property
    def msg_id(self) -> str:
        r = self.result
        return f"e.{r.broadcast_id}.{r.content_version}.{r.user_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClickEvent:
    """A sent recipient opened one of its message's tracked links for the first time
    (``result.click`` is the link's URL, ``link`` its position in the message)."""

    result: DeliveryResult
    link: int

    def __post_init__(self) -> None:
        if self.result.click is None:
            raise ValueError("a click event needs the link clicked")

    @property
    def broadcast_id(self) -> int:
        return self.result.broadcast_id

    @property
    def msg_id(self) -> str:
        return f"c.{self.result.broadcast_id}.{self.result.user_id}.{self.link}"


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishedEvent:
    """The broadcast reached a final status; no result events follow for it."""

    broadcast_id: int
    status: BroadcastStatus

    @property
    def msg_id(self) -> str:
        """One per broadcast, and one more for its recall (which ends it a second time)."""
        if self.status is BroadcastStatus.RECALLED:
            return f"f.{self.broadcast_id}.recalled"
        return f"f.{self.broadcast_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusEvent:
    """The broadcast moved to a status that is not final (paused, resumed, started,
    recalling): the outcomes after it in the stream were recorded in that status or later.
    ``at`` is when the move was made (a broadcast may be paused, resumed and paused again:
    each move is an event of its own)."""

    broadcast_id: int
    status: BroadcastStatus
    at: datetime

    @property
    def msg_id(self) -> str:
        micros = int(self.at.timestamp() * 1_000_000)
        return f"m.{self.broadcast_id}.{self.status.value}.{micros}"


Event = ResultEvent | RecallEvent | EditEvent | ClickEvent | FinishedEvent | StatusEvent


@dataclass(frozen=True, slots=True)
class Idle:
    """Yielded by ``Queue.watch`` when nothing arrived for ``idle_after`` seconds."""


def encode_event(event: Event) -> bytes:
    if isinstance(event, ResultEvent | RecallEvent | EditEvent | ClickEvent):
        r = event.result
        if not r.state.is_final:
            raise ValueError("a result event needs a final delivery state")
        kind = "result"
        extra: dict[str, Any] = {}
        if r.content_version != 1:
            extra["content_version"] = r.content_version
        if r.variant is not None:
            extra["variant"] = r.variant
        if isinstance(event, RecallEvent):
            assert r.recall is not None
            kind = "recall"
            extra["recall"] = r.recall.value
            if r.recall_error is not None:
                extra["recall_error"] = r.recall_error
        elif isinstance(event, ClickEvent):
            kind = "click"
            extra |= {"click": r.click, "link": event.link}
        elif isinstance(event, EditEvent):
            assert r.edit is not None
            kind = "edit"
            extra["edit"] = r.edit.value
            if r.edit_error is not None:
                extra["edit_error"] = r.edit_error
        if not isinstance(event, ClickEvent) and event.ordinal:
            extra["ordinal"] = event.ordinal
        return _dumps(
            {
                "type": kind,
                "broadcast_id": r.broadcast_id,
                "user_id": r.user_id,
                "state": r.state.value,
                "finished_at": _format_datetime(r.finished_at),
                "message_id": r.message_id,
                "error": r.error,
                # Only an album's: one more key on every event would be bytes for nothing.
                **({"message_ids": list(r.message_ids)} if r.message_ids else {}),
                **extra,
            }
        )
    if isinstance(event, StatusEvent):
        return _dumps(
            {
                "type": "status",
                "broadcast_id": event.broadcast_id,
                "status": event.status.value,
                "at": _format_datetime(event.at),
            }
        )
    return _dumps(
        {"type": "finished", "broadcast_id": event.broadcast_id, "status": event.status.value}
    )


def decode_event(data: bytes) -> Event:
    """Parse an event message; ``ValueError`` when it is not one."""
    obj = loads_object(data)
    kind = obj.get("type")
    broadcast_id = _get_int(obj, "broadcast_id")
    if kind == "finished":
        status = BroadcastStatus(_get_str(obj, "status"))
        if not status.is_final:
            raise ValueError(f"a finished event needs a final status, got {status.value}")
        return FinishedEvent(broadcast_id=broadcast_id, status=status)
    if kind == "status":
        status = BroadcastStatus(_get_str(obj, "status"))
        if status.is_final:
            raise ValueError(f"a status event needs a status that is not final, got {status}")
        at = _parse_datetime(_get_str(obj, "at"))
        return StatusEvent(broadcast_id=broadcast_id, status=status, at=at)
    if kind not in ("result", "recall", "edit", "click"):
        raise ValueError(f"unknown event type {kind!r}")
    state = DeliveryState(_get_str(obj, "state"))
    if not state.is_final:
        raise ValueError("a result event needs a final delivery state")
    message_id = obj.get("message_id")
    error = obj.get("error")
    message_ids = obj.get("message_ids") or []
    if not isinstance(message_ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in message_ids
    ):
        raise ValueError("message_ids must be a list of integers")
    result = DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=_get_int(obj, "user_id"),
        state=state,
        finished_at=_parse_datetime(_get_str(obj, "finished_at")),
        message_id=None if message_id is None else _get_int(obj, "message_id"),
        error=None if error is None else _get_str(obj, "error"),
        message_ids=tuple(message_ids),
        content_version=_get_int(obj, "content_version") if "content_version" in obj else 1,
        variant=_get_str(obj, "variant") if "variant" in obj else None,
    )
    if kind == "click":
        return ClickEvent(
            result=replace(result, click=_get_str(obj, "click")), link=_get_int(obj, "link")
        )
    ordinal = _get_int(obj, "ordinal") if "ordinal" in obj else 0
    if ordinal < 0:
        raise ValueError("ordinal must not be negative")
    if kind == "result":
        return ResultEvent(result=result, ordinal=ordinal)
    if kind == "edit":
        edit_error = obj.get("edit_error")
        return EditEvent(
            result=replace(
                result,
                edit=EditOutcome(_get_str(obj, "edit")),
                edit_error=None if edit_error is None else _get_str(obj, "edit_error"),
            ),
            ordinal=ordinal,
        )
    recall_error = obj.get("recall_error")
    return RecallEvent(
        result=replace(
            result,
            recall=RecallOutcome(_get_str(obj, "recall")),
            recall_error=None if recall_error is None else _get_str(obj, "recall_error"),
        ),
        ordinal=ordinal,
    )


def _dumps(obj: dict[str, Any]) -> bytes:
    return _dumps_text(obj).encode()


def _dumps_text(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _joined(user_ids: tuple[int, ...]) -> str:
    return ",".join(map(str, user_ids))


def loads_object(data: bytes) -> dict[str, Any]:
    """A JSON object from ``data``; ``ValueError`` for anything else."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _get_int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not _is_int(value):
        raise ValueError(f"{key} must be an int")
    assert isinstance(value, int)
    return value


def _get_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _parse_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("datetime without a time zone")
    return value.astimezone(UTC)
