"""A job fetched from a tier's shared consumer, and how the worker holding it settles it."""

from __future__ import annotations

from collections.abc import Awaitable

import nats.errors
from nats.aio.msg import Msg

from tgbroadcast.core.domain.errors import QueueError
from tgbroadcast.core.queue.payloads import Job

_ACK_TIMEOUT = 5.0
"""Seconds an ``ack`` waits for the server's confirmation."""


class ReceivedJob:
    """One fetched job message. Settle it exactly once: ``ack``, ``nak`` or ``term``.

    ``in_progress`` may be called any number of times before that, to restart AckWait while
    a long job runs; without it the job is redelivered to some worker after AckWait.
    """

    __slots__ = ("_msg", "job", "num_delivered")

    def __init__(self, job: Job, msg: Msg) -> None:
        self.job = job
        self.num_delivered: int = msg.metadata.num_delivered
        self._msg = msg

    def __repr__(self) -> str:
        return f"ReceivedJob(job={self.job!r}, num_delivered={self.num_delivered})"

    @property
    def headers(self) -> dict[str, str]:
        """The message's headers: ``traceparent`` among them when its publisher was traced."""
        return self._msg.headers or {}

    async def ack(self) -> None:
        """Done: returns once the server confirmed; the job then leaves the stream."""
        await self._settle("ack", self._msg.ack_sync(timeout=_ACK_TIMEOUT))

    async def nak(self, *, delay: float | None = None) -> None:
        """Not done: deliver again, after ``delay`` seconds when given."""
        await self._settle("nak", self._msg.nak(delay=delay))

    async def in_progress(self) -> None:
        """Still working: restart the AckWait timer."""
        await self._settle("in_progress", self._msg.in_progress())

    async def term(self) -> None:
        """Give up on this job for good: never delivered again."""
        await self._settle("term", self._msg.term())

    async def _settle(self, action: str, operation: Awaitable[object]) -> None:
        try:
            await operation
        except nats.errors.Error as exc:
            raise QueueError(f"{action} of job {self.job.msg_id} failed: {exc!r}") from exc
