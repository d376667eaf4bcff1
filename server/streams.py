"""The open watch streams of one server process: bounded, and told to end when it drains.

Both transports' watch streams — gRPC ``WatchBroadcast`` and the REST Server-Sent Events
route — take a :class:`WatchSlot` from one :class:`Watchers` while they are open. Each open
stream holds a NATS consumer, so ``server.max_watchers`` bounds them: one more is refused
(:class:`TooManyWatchers` → 429 / ``RESOURCE_EXHAUSTED``) until one closes. Each transport
may hold its own view (:meth:`Watchers.for_transport`) of the one bound, so its streams are
also counted on their own (the ``tgb_watchers{transport}`` metric).

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
    """At most ``limit`` open watch streams; :meth:`close` ends them all.

    :meth:`for_transport` gives each transport a view that shares the bound, the drain and
    the count, and counts its own streams too (:meth:`open_for`, for metrics).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._shared = _Shared()
        self._transport = ""

    def for_transport(self, transport: str) -> Watchers:
        """The same bound, whose streams are counted as ``transport``'s (``grpc``, ``sse``)."""
        view = Watchers(self.limit)
        view._shared = self._shared
        view._transport = transport
        return view

    @property
    def open(self) -> int:
        """Streams open now, of every transport."""
        return self._shared.open

    def open_for(self, transport: str) -> int:
        """Streams open now through :meth:`for_transport` ``(transport)``'s view."""
        return self._shared.by_transport.get(transport, 0)

    def acquire(self) -> WatchSlot:
        """A slot for a new stream; release it when the stream ends (:meth:`WatchSlot.release`).

        ``ShuttingDown`` while draining, ``TooManyWatchers`` when ``limit`` are open.
        """
        shared = self._shared
        if shared.closing:
            raise ShuttingDown()
        if shared.open >= self.limit:
            raise TooManyWatchers(self.limit)
        shared.open += 1
        shared.by_transport[self._transport] = shared.by_transport.get(self._transport, 0) + 1
        shared.empty.clear()
        return WatchSlot(self)

    def close(self) -> None:
        """Tell every open stream to end; refuse new ones from now on."""
        self._shared.closing = True
        signal = self._signal()
        if not signal.done():
            signal.set_result(None)

    async def wait_closed(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bounded wait
        """Whether every stream ended within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._shared.empty.wait()
        except TimeoutError:
            return False
        return True

    def _signal(self) -> asyncio.Future[None]:
        """Done once :meth:`close` was called (shared by every waiting stream)."""
        shared = self._shared
        if shared.closed is None:
            shared.closed = asyncio.get_running_loop().create_future()
            if shared.closing:
                shared.closed.set_result(None)
        return shared.closed

    def _release(self) -> None:
        shared = self._shared
        shared.open -= 1
        shared.by_transport[self._transport] -= 1
        if shared.open == 0:
            shared.empty.set()


class _Shared:
    """The state of one bound, shared by its transports' views."""

    def __init__(self) -> None:
        self.open = 0
        self.by_transport: dict[str, int] = {}
        self.closing = False
        self.closed: asyncio.Future[None] | None = None
        self.empty = asyncio.Event()
        self.empty.set()


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
