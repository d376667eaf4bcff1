"""Injected faults: the next N matching calls fail the way Telegram's front end can fail.

A fault is armed with a count and an optional filter (method, chat). Each Bot API call that
reaches a known method takes the first armed fault that matches it, before its parameters
are validated; a fault used ``times`` times is disarmed. Faults never touch the simulator's
state: a faulted call sends nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tgbroadcast.simulator.envelope import BAD_GATEWAY_PAGE, Answer, BotApiError, too_many_requests


class FaultKind(enum.StrEnum):
    ERROR = "error"
    """A JSON error envelope with ``error_code`` (5xx, or any code) and ``description``."""
    HTML = "html"
    """An HTML 502 Bad Gateway page: not JSON at all."""
    HANG = "hang"
    """No answer for ``seconds`` (or until the simulator closes), then a 504 envelope."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """What a faulted call answers. Build one with the class methods."""

    kind: FaultKind
    error_code: int = 500
    description: str = "Internal Server Error"
    parameters: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def server_error(
        cls, error_code: int = 500, description: str = "Internal Server Error"
    ) -> Fault:
        if not 500 <= error_code <= 599:
            raise ValueError("a server error has a 5xx code")
        return cls(kind=FaultKind.ERROR, error_code=error_code, description=description)

    @classmethod
    def error(
        cls, error_code: int, description: str, parameters: Mapping[str, int] | None = None
    ) -> Fault:
        """Any envelope, e.g. ``error(400, "Bad Request: message is too long")``."""
        if not 400 <= error_code <= 599:
            raise ValueError("an error has a 4xx or 5xx code")
        return cls(
            kind=FaultKind.ERROR,
            error_code=error_code,
            description=description,
            parameters=dict(parameters or {}),
        )

    @classmethod
    def too_many_requests(cls, retry_after: int) -> Fault:
        failure = too_many_requests(retry_after)
        return cls.error(failure.error_code, failure.description, failure.parameters)

    @classmethod
    def bad_gateway_html(cls) -> Fault:
        return cls(kind=FaultKind.HTML, error_code=502, description="Bad Gateway")

    @classmethod
    def hang(cls, seconds: float = 60.0) -> Fault:
        if seconds <= 0:
            raise ValueError("a hang lasts a positive number of seconds")
        return cls(
            kind=FaultKind.HANG, error_code=504, description="Gateway Timeout", seconds=seconds
        )

    def answer(self) -> Answer:
        if self.kind is FaultKind.HTML:
            return Answer.html(self.error_code, BAD_GATEWAY_PAGE)
        failure = BotApiError(self.error_code, self.description, self.parameters)
        return Answer.failure(failure, hang=self.seconds if self.kind is FaultKind.HANG else 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "error_code": self.error_code,
            "description": self.description,
            "parameters": dict(self.parameters),
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """Parse the control API's form: ``{"kind": "server_error" | "error" | "retry_after" |
        "html" | "hang", ...}``. Raises ``ValueError`` with the reason."""
        kind = data.get("kind")
        if kind == "server_error":
            return cls.server_error(
                int(data.get("error_code", 500)),
                str(data.get("description", "Internal Server Error")),
            )
        if kind == "error":
            return cls.error(
                int(data["error_code"]), str(data["description"]), data.get("parameters")
            )
        if kind == "retry_after":
            return cls.too_many_requests(int(data["retry_after"]))
        if kind == "html":
            return cls.bad_gateway_html()
        if kind == "hang":
            return cls.hang(float(data.get("seconds", 60.0)))
        raise ValueError(f"unknown fault kind {kind!r}")


@dataclass(slots=True, kw_only=True)
class _Armed:
    fault: Fault
    remaining: int
    method: str | None
    chat_id: int | None

    def matches(self, method: str, chat_id: int | None) -> bool:
        if self.method is not None and self.method != method.lower():
            return False
        return self.chat_id is None or self.chat_id == chat_id


class Faults:
    """The armed faults, in the order they were injected."""

    def __init__(self) -> None:
        self._armed: list[_Armed] = []

    def inject(
        self,
        fault: Fault,
        *,
        times: int = 1,
        method: str | None = None,
        chat_id: int | None = None,
    ) -> None:
        """Make the next ``times`` calls (to ``method`` / ``chat_id`` if given) answer ``fault``."""
        if times < 1:
            raise ValueError("times must be at least 1")
        self._armed.append(
            _Armed(
                fault=fault,
                remaining=times,
                method=method.lower() if method else None,
                chat_id=chat_id,
            )
        )

    def take(self, method: str, chat_id: int | None) -> Fault | None:
        """The fault this call answers, if any (and count it)."""
        for armed in self._armed:
            if armed.matches(method, chat_id):
                armed.remaining -= 1
                if armed.remaining == 0:
                    self._armed.remove(armed)
                return armed.fault
        return None

    @property
    def pending(self) -> int:
        """How many faulted answers are still armed."""
        return sum(armed.remaining for armed in self._armed)

    def clear(self) -> None:
        self._armed.clear()
