"""Waiting for a wall-clock moment: rate slots and chat reservations are ``time.time()``
seconds because they cross machines."""

from __future__ import annotations

import asyncio
import time

__all__ = ["sleep_until"]


async def sleep_until(moment: float) -> None:
    """Sleep until the wall clock reads ``moment`` (at once if it has passed)."""
    while (delay := moment - time.time()) > 0:  # noqa: ASYNC110 - a clock, not an event
        await asyncio.sleep(delay)
