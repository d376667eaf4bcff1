"""Telegram's flood control, simulated with sliding windows.

Each limit is "at most ``count`` messages in any ``per_seconds`` window": per bot overall
(or the paid-broadcast limit when a call passes ``allow_paid_broadcast=true``), per private
chat, and per group chat (any negative id). A send over any limit is refused with 429
``Too Many Requests: retry after N`` where N (whole seconds, at least 1) is when the oldest
counted message leaves the fullest window; a refused send is not counted. Only accepted
sends count; an accepted delete or edit of a sent message counts as one send (see
:mod:`tgbroadcast.simulator.edits`). The clock is injectable so tests can move time without
waiting.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` messages in any window of ``per_seconds``."""

    count: int
    per_seconds: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.per_seconds <= 0:
            raise ValueError("a limit needs count >= 1 and per_seconds > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimits:
    """Which limits apply; ``None`` disables one. The default disables them all."""

    bot: Limit | None = None
    paid_bot: Limit | None = None
    private_chat: Limit | None = None
    group_chat: Limit | None = None

    @classmethod
    def off(cls) -> RateLimits:
        return cls()

    @classmethod
    def telegram(cls) -> RateLimits:
        """The limits of Telegram's FAQ: 30/s per bot (1000/s paid), about 1/s per chat with
        short bursts tolerated, 20/min per group."""
        return cls(
            bot=Limit(30, 1.0),
            paid_bot=Limit(1000, 1.0),
            private_chat=Limit(3, 3.0),
            group_chat=Limit(20, 60.0),
        )

    @property
    def enabled(self) -> bool:
        return any((self.bot, self.paid_bot, self.private_chat, self.group_chat))

    def to_json(self) -> dict[str, Any]:
        def one(limit: Limit | None) -> list[float] | None:
            return None if limit is None else [limit.count, limit.per_seconds]

        return {
            "bot": one(self.bot),
            "paid_bot": one(self.paid_bot),
            "private_chat": one(self.private_chat),
            "group_chat": one(self.group_chat),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RateLimits:
        """``{"preset": "telegram" | "off"}`` or the :meth:`to_json` form."""
        preset = data.get("preset")
        if preset == "telegram":
            return cls.telegram()
        if preset == "off":
            return cls.off()
        if preset is not None:
            raise ValueError(f"unknown rate limit preset {preset!r}")

        def one(name: str) -> Limit | None:
            value = data.get(name)
            if value is None:
                return None
            count, per_seconds = value
            return Limit(int(count), float(per_seconds))

        return cls(
            bot=one("bot"),
            paid_bot=one("paid_bot"),
            private_chat=one("private_chat"),
            group_chat=one("group_chat"),
        )


class RateLimiter:
    """Counts accepted sends in sliding windows and answers whether the next one may go."""

    def __init__(self, limits: RateLimits, *, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._windows: dict[tuple[str, int, int], deque[float]] = {}

    def clear(self) -> None:
        self._windows.clear()

    def acquire(self, *, bot_id: int, chat_id: int, paid: bool = False) -> int | None:
        """Count a send and return ``None``, or return ``retry_after`` seconds and count
        nothing."""
        if not self.limits.enabled:
            return None
        bot_limit = self.limits.paid_bot if paid else self.limits.bot
        chat_limit = self.limits.private_chat if chat_id > 0 else self.limits.group_chat
        applicable = [
            (("paid" if paid else "bot", bot_id, 0), bot_limit),
            (("chat", bot_id, chat_id), chat_limit),
        ]
        now = self._clock()
        waits: list[float] = []
        windows: list[deque[float]] = []
        for key, limit in applicable:
            if limit is None:
                continue
            window = self._windows.setdefault(key, deque())
            while window and window[0] <= now - limit.per_seconds:
                window.popleft()
            if len(window) >= limit.count:
                waits.append(window[0] + limit.per_seconds - now)
            windows.append(window)
        if waits:
            return max(1, math.ceil(max(waits)))
        for window in windows:
            window.append(now)
        return None
