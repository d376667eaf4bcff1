"""What the queue's objects are called under one ``prefix``: streams, subjects, consumers and
the media bucket. Several deployments share one NATS server by using different prefixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WORKERS_CONSUMER = "workers"
"""The durable pull consumer on the jobs stream shared by every worker (free broadcasts)."""
PAID_WORKERS_CONSUMER = "workers-paid"
"""The same for paid broadcasts' jobs."""

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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
        return f"{self.prefix}.jobs"

    @property
    def paid_jobs_subject(self) -> str:
        return f"{self.prefix}.jobs.paid"

    def jobs_consumer(self, *, paid: bool) -> tuple[str, str]:
        """The durable consumer of one tier's jobs, and the subject it takes."""
        if paid:
            return PAID_WORKERS_CONSUMER, self.paid_jobs_subject
        return WORKERS_CONSUMER, self.jobs_subject

    @property
    def events_wildcard(self) -> str:
        return f"{self.prefix}.events.*"

    def events_subject(self, broadcast_id: int) -> str:
        return f"{self.prefix}.events.{broadcast_id}"
