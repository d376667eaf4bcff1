"""The record of every Bot API call the simulator answered, for tests and benchmarks.

A call is recorded once, when its answer is decided (a hung call when the hang starts), in
the order the answers were decided; ``seq`` numbers them from 1. A record holds the bot's
id, never its token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

MediaSource = Literal["url", "file_id", "upload"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One Bot API call and its answer.

    ``method`` is the spec's spelling when the method is known (``sendMessage`` even if
    called as ``sendmessage``). ``params`` are the parsed parameters (uploads described by
    name and size), or the raw ones if parsing failed. ``media`` says how the media was given.
    ``error_code`` is ``None`` when Telegram would have said ``ok``.
    """

    seq: int
    at: float
    bot_id: int
    method: str
    params: Mapping[str, Any]
    media: MediaSource | None
    error_code: int | None
    description: str | None
    result: Any = None

    @property
    def ok(self) -> bool:
        return self.error_code is None

    @property
    def chat_id(self) -> int | str | None:
        """The ``chat_id`` parameter (numeric strings as ints: form bodies carry strings)."""
        value = self.params.get("chat_id")
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return value if isinstance(value, int | str) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "bot_id": self.bot_id,
            "method": self.method,
            "params": dict(self.params),
            "media": self.media,
            "error_code": self.error_code,
            "description": self.description,
            "result": self.result,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Call:
        """The inverse of :meth:`to_json` (for clients of the control API)."""
        return cls(
            seq=int(data["seq"]),
            at=float(data["at"]),
            bot_id=int(data["bot_id"]),
            method=str(data["method"]),
            params=dict(data["params"]),
            media=cast("MediaSource | None", data.get("media")),
            error_code=data.get("error_code"),
            description=data.get("description"),
            result=data.get("result"),
        )


class Recorder:
    """The calls, in order. Not thread-safe: one event loop owns it."""

    def __init__(self) -> None:
        self._calls: list[Call] = []
        self._seq = 0

    def record(
        self,
        *,
        at: float,
        bot_id: int,
        method: str,
        params: Mapping[str, Any],
        media: MediaSource | None,
        error_code: int | None,
        description: str | None,
        result: Any = None,
    ) -> Call:
        self._seq += 1
        call = Call(
            seq=self._seq,
            at=at,
            bot_id=bot_id,
            method=method,
            params=params,
            media=media,
            error_code=error_code,
            description=description,
            result=result,
        )
        self._calls.append(call)
        return call

    @property
    def calls(self) -> tuple[Call, ...]:
        return tuple(self._calls)

    def __len__(self) -> int:
        return len(self._calls)

    def select(
        self,
        *,
        chat_id: int | None = None,
        method: str | None = None,
        since: int = 0,
    ) -> list[Call]:
        """Calls after ``seq`` ``since``, to ``chat_id`` / ``method`` (case-insensitive)."""
        wanted = method.lower() if method else None
        return [
            call
            for call in self._iter_since(since)
            if (chat_id is None or call.chat_id == chat_id)
            and (wanted is None or call.method.lower() == wanted)
        ]

    def _iter_since(self, since: int) -> Iterable[Call]:
        # seq is dense from 1, so the calls after `since` start at index `since - first + 1`.
        if not self._calls:
            return ()
        first = self._calls[0].seq
        return self._calls[max(0, since - first + 1) :]

    def clear(self) -> None:
        """Forget the calls; ``seq`` keeps counting so pollers never see a number twice."""
        self._calls.clear()
