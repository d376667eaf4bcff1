"""Paid broadcasts' Stars budget: ``max_stars``.

Telegram charges 0.1 Star for each message of a paid broadcast sent above the free 30 per
second. ``max_stars`` caps what a broadcast may spend: once the service's estimate of its
spend reaches it, the rest is sent at the free rate (see
:mod:`tgbroadcast.worker.delivery`).
"""

from __future__ import annotations

from typing import Final

from tgbroadcast.core.domain.errors import FieldViolation

MAX_STARS: Final = 10**9
"""The largest budget accepted (a billion Stars: more than any bot holds)."""
FREE_RATE: Final = 30.0
"""Messages per second Telegram sends free of charge."""
STAR_MILLI_PER_MESSAGE: Final = 100
"""0.1 Star per charged message, in thousandths."""


def max_stars(
    value: int, allow_paid_broadcast: bool, violations: list[FieldViolation]
) -> int | None:
    """The budget asked for (``0``: none)."""
    if not value:
        return None
    if not allow_paid_broadcast:
        violations.append(
            FieldViolation("max_stars", "is only for paid broadcasts (allow_paid_broadcast)")
        )
    elif not 1 <= value <= MAX_STARS:
        violations.append(FieldViolation("max_stars", f"must be between 1 and {MAX_STARS}"))
    return value


def star_milli_per_message(paid_rate: float) -> int:
    """The estimated cost of one message sent at ``paid_rate`` per second, in thousandths of
    a Star: the share of the messages above the free 30 per second, 0.1 Star each."""
    if paid_rate <= FREE_RATE:
        return 0
    return round(STAR_MILLI_PER_MESSAGE * (1.0 - FREE_RATE / paid_rate))
