"""A bot's parked sending: a 429 whose ``retry_after`` exceeds ``worker.park_after``.

The rate limiter parks the bot (:class:`~tgbroadcast.worker.rate_tier.Parked`: no slot is
handed out, on any worker, until the wait is over); this is what the rest of the worker does
about it: the bot's unfinished broadcasts show ``throttled_until``, the gauge
``tgb_parked_until_seconds`` says when sending resumes, jobs are handed back until then
(:func:`~tgbroadcast.worker.followups.give_back_delay`) and no new one is taken.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Protocol

from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.store import Store

logger = logging.getLogger(__name__)


class ParkingLimiter(Protocol):
    def parked_until(self) -> float | None: ...


class Park:
    """One bot's park, as this worker process knows it."""

    def __init__(
        self, *, limiter: ParkingLimiter, store: Store, metrics: Metrics, bot: str
    ) -> None:
        self._limiter = limiter
        self._store = store
        self._metrics = metrics
        self._bot = bot

    def until(self) -> float | None:
        """When the bot's parked sending resumes (wall-clock seconds), while it is parked."""
        return self._limiter.parked_until()

    def over(self) -> None:
        """The park has ended here: sending resumes."""
        self._metrics.parked_until.labels(bot=self._bot).set(0)
        logger.info("the bot's parked sending resumes", extra={"bot": self._bot})

    async def note(self, retry_after: float) -> None:
        """After a 429 (the limiter paused): if it parked the bot, show its broadcasts
        ``throttled_until``."""
        until = self._limiter.parked_until()
        if until is None:
            return
        self._metrics.parked_until.labels(bot=self._bot).set(until)
        logger.warning(
            "flood wait longer than worker.park_after: the bot's sending is parked",
            extra={"bot": self._bot, "retry_after": retry_after, "until": until},
        )
        try:
            await self._store.mark_throttled(self._bot, datetime.fromtimestamp(until, UTC))
        except Exception as exc:  # only what the broadcasts show
            logger.warning("recording a park failed", extra={"bot": self._bot, "error": repr(exc)})
