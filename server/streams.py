"""The open watch streams of one server process: bounded, and told to end when it drains.

Both transports' watch streams — gRPC ``WatchBroadcast`` and the REST Server-Sent Events
route — take a :class:`WatchSlot` from one :class:`Watchers` while they are open. Each open
stream holds a NATS consumer, so ``server.max_watchers`` bounds them: one more is refused
(:class:`TooManyWatchers` → 429 / ``RESOURCE_EXHAUSTED``) until one closes.

When the process drains, :meth:`Watchers.close` wakes every stream at once: each one's
:meth:`WatchSlot.wait` raises :class:`StreamClosing`, and the transport tells its client
(SSE ``event: shutdown``, gRPC ``UNAVAILABLE`` "server shutting down") so it reconnects to
another instance. From then on new streams are refused (:class:`ShuttingDown`).

May import: :mod:`tgbroadcast.core.domain`, :mod:`tgbroadcast.core.tasks`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from tgbroadcast.core.tasks import cancel_and_wait

T = TypeVar("T")

SHUTTING_DOWN: Final = "server shutting down"
DEFAULT_MAX_WATCHERS: Final = 1000
"""``server.max_watchers``'s default."""


class WatchRefused(Exception):
    """A new watch stream is not accepted now."""


class TooManyWatchers(WatchRefused):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"too many open watch streams on this server (server.max_watchers = {limit}); "
            "try again later"
        )


class ShuttingDown(WatchRefused):
    def __init__(self) -> None:
        super().__init__(f"{SHUTTING_DOWN}; reconnect to another instance")


class StreamClosing(Exception):
    """The process drains: the stream must tell its client and end now.

    The read it interrupted is cancelled but not waited for (its clean-up — deleting a NATS
    consumer, say — must not delay telling the client): tell the client first, then
    :meth:`settle` before closing what the read was reading.
    """

    def __init__(self, interrupted: asyncio.Future[Any] | None = None) -> None:
        super().__init__("the server is draining")
        self._interrupted = interrupted

    async def settle(self) -> None:
        """Returns once the interrupted read has ended."""
        await cancel_and_wait(self._interrupted)


class Watchers:
    """At most ``limit`` open watch streams; :meth:`close` ends them all."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._open = 0
        self._closing = False
        self._closed: asyncio.Future[None] | None = None
        self._empty = asyncio.Event()
        self._empty.set()

    @property
    def open(self) -> int:
        """Streams open now."""
        return self._open

    def acquire(self) -> WatchSlot:
        """A slot for a new stream; release it when the stream ends (:meth:`WatchSlot.release`).

        ``ShuttingDown`` while draining, ``TooManyWatchers`` when ``limit`` are open.
        """
        if self._closing:
            raise ShuttingDown()
        if self._open >= self.limit:
            raise TooManyWatchers(self.limit)
        self._open += 1
        self._empty.clear()
        return WatchSlot(self)

    def close(self) -> None:
        """Tell every open stream to end; refuse new ones from now on."""
        self._closing = True
        signal = self._signal()
        if not signal.done():
            signal.set_result(None)

    async def wait_closed(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bounded wait
        """Whether every stream ended within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._empty.wait()
        except TimeoutError:
            return False
        return True

    def _signal(self) -> asyncio.Future[None]:
        """Done once :meth:`close` was called (shared by every waiting stream)."""
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
            if self._closing:
                self._closed.set_result(None)
        return self._closed

    def _release(self) -> None:
        self._open -= 1
        if self._open == 0:
            self._empty.set()


class WatchSlot:
    """One open stream's place in :class:`Watchers`."""

    def __init__(self, watchers: Watchers) -> None:
        self._watchers = watchers
        self._released = False

    def release(self) -> None:
        """Give the place back (once; later calls do nothing)."""
        if not self._released:
            self._released = True
            self._watchers._release()

    async def wait(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:  # noqa: ASYNC109
        """``awaitable``'s result; ``TimeoutError`` after ``timeout`` seconds (it is cancelled),
        :class:`StreamClosing` as soon as the process drains (it is cancelled too, and the
        exception holds it: see :meth:`StreamClosing.settle`)."""
        signal = self._watchers._signal()
        task = asyncio.ensure_future(awaitable)
        if not signal.done():
            try:
                await asyncio.wait(
                    (task, signal), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            except BaseException:
                await cancel_and_wait(task)
                raise
            if task.done():
                return task.result()
            if not signal.done():
                await cancel_and_wait(task)
                raise TimeoutError
        task.cancel()
        raise StreamClosing(task)
