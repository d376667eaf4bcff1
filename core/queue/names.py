"""What the queue's objects are called under one ``prefix``: streams, subjects, consumers and
the media bucket. Several deployments share one NATS server by using different prefixes.

Jobs travel per bot and tier. The bot ``default`` keeps the subjects and consumers of the
single-bot versions (``<prefix>.jobs``, ``<prefix>.jobs.paid``; ``workers``,
``workers-paid``), so jobs queued before an upgrade are served by the same consumers after
it. Any other bot ``b`` has ``<prefix>.jobs.free.b`` and ``<prefix>.jobs.paid.b``, taken by
``workers-free-b`` and ``workers-paid-b``. No two of these subjects overlap (a work-queue
stream requires it), and no two consumer names collide whatever the bot names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from tgbroadcast.core.domain.access import DEFAULT_BOT

WORKERS_CONSUMER = "workers"
"""The durable pull consumer on the jobs stream shared by every worker (free broadcasts of
the bot ``default``)."""
PAID_WORKERS_CONSUMER = "workers-paid"
"""The same for the paid broadcasts' jobs of the bot ``default``."""
_FREE_TIER: Final = "free"
_PAID_TIER: Final = "paid"

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BOT_RE = re.compile(r"[a-z0-9_-]{1,32}")
"""A bot's name (``BOT_NAME`` of the configuration): a single subject token, never a
wildcard."""


def check_bot(bot: str) -> str:
    """``bot`` if it is a bot's name (it becomes a subject token), else ``ValueError``."""
    if not isinstance(bot, str) or not _BOT_RE.fullmatch(bot):
        raise ValueError(f"bot must match {_BOT_RE.pattern}, got {bot!r}")
    return bot


@dataclass(frozen=True, slots=True)
class QueueNames:
    """The stream, subject and consumer names for one ``prefix``."""

    prefix: str

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"prefix must match {_PREFIX_RE.pattern}, got {self.prefix!r}")

    @property
    def jobs_stream(self) -> str:
        return f"{self.prefix.upper()}_JOBS"

    @property
    def events_stream(self) -> str:
        return f"{self.prefix.upper()}_EVENTS"

    @property
    def media_bucket(self) -> str:
        """The object store holding media uploaded through the API until workers sent it."""
        return f"{self.prefix.upper()}_MEDIA"

    @property
    def jobs_subject(self) -> str:
        """Free jobs of the bot ``default``."""
        return f"{self.prefix}.jobs"

    @property
    def paid_jobs_subject(self) -> str:
        """Paid jobs of the bot ``default``."""
        return f"{self.prefix}.jobs.paid"

    @property
    def jobs_stream_subjects(self) -> list[str]:
        """Every subject of the jobs stream: the bot ``default``'s two, then every other
        bot's (one wildcard per tier)."""
        return [
            self.jobs_subject,
            self.paid_jobs_subject,
            f"{self.prefix}.jobs.{_FREE_TIER}.*",
            f"{self.prefix}.jobs.{_PAID_TIER}.*",
        ]

    def jobs_consumer(self, *, paid: bool, bot: str = DEFAULT_BOT) -> tuple[str, str]:
        """The durable consumer of one bot's jobs of one tier, and the subject it takes."""
        if bot == DEFAULT_BOT:
            if paid:
                return PAID_WORKERS_CONSUMER, self.paid_jobs_subject
            return WORKERS_CONSUMER, self.jobs_subject
        tier = _PAID_TIER if paid else _FREE_TIER
        check_bot(bot)
        return f"workers-{tier}-{bot}", f"{self.prefix}.jobs.{tier}.{bot}"

    def jobs_subject_of(self, *, paid: bool, bot: str = DEFAULT_BOT) -> str:
        """Where a job of ``bot`` and tier is published."""
        return self.jobs_consumer(paid=paid, bot=bot)[1]

    def consumer_owner(self, consumer: str) -> tuple[str, bool] | None:
        """The bot and tier (``True``: paid) a jobs consumer serves; None for another name."""
        if consumer == WORKERS_CONSUMER:
            return DEFAULT_BOT, False
        if consumer == PAID_WORKERS_CONSUMER:
            return DEFAULT_BOT, True
        for tier, paid in ((_FREE_TIER, False), (_PAID_TIER, True)):
            head = f"workers-{tier}-"
            if consumer.startswith(head) and _BOT_RE.fullmatch(bot := consumer[len(head) :]):
                return bot, paid
        return None

    def subject_owner(self, subject: str) -> tuple[str, bool] | None:
        """The bot and tier (``True``: paid) of a jobs subject; None for another subject."""
        if subject == self.jobs_subject:
            return DEFAULT_BOT, False
        if subject == self.paid_jobs_subject:
            return DEFAULT_BOT, True
        for tier, paid in ((_FREE_TIER, False), (_PAID_TIER, True)):
            head = f"{self.prefix}.jobs.{tier}."
            if subject.startswith(head) and _BOT_RE.fullmatch(bot := subject[len(head) :]):
                return bot, paid
        return None

    @property
    def events_wildcard(self) -> str:
        return f"{self.prefix}.events.*"

    def events_subject(self, broadcast_id: int) -> str:
        return f"{self.prefix}.events.{broadcast_id}"
