"""Pacing sends to the bot's rate budget.

:class:`Pacer` spaces sends evenly at ``rate`` per second (a GCRA with no burst), so no
one-second window ever holds more than ``rate`` sends from this process. A 429's
``retry_after`` pauses every send of the process until it has passed.
"""

from __future__ import annotations

import asyncio
import time


class Pacer:
    """Evenly spaced permits at ``rate`` per second, shared by every task of a process."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate
        self._next = 0.0

    async def acquire(self) -> None:
        """Wait for this caller's slot. Slots are handed out in call order."""
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def pause(self, seconds: float) -> None:
        """No slot starts sooner than ``seconds`` from now (Telegram's ``retry_after``)."""
        self._next = max(self._next, time.monotonic() + seconds)
