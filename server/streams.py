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
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any, Final, Generic, TypeVar

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

    async def take(
        self,
        ahead: ReadAhead[T],
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        most: int = 64,
    ) -> list[T | BaseException | _End]:
        """At least one of ``ahead``'s items, and up to ``most`` of those already read;
        ``TimeoutError`` after ``timeout`` seconds without one; :class:`StreamClosing` as soon
        as the process drains (the reading is cancelled, and the exception holds it)."""
        signal = self._watchers._signal()
        if not signal.done():
            items = ahead.ready(most)
            if items:
                return items
            await ahead.arrival(signal, timeout)  # no task of its own: once per write
        if signal.done():
            ahead.task.cancel()
            raise StreamClosing(ahead.task)
        items = ahead.ready(most)
        if not items:
            raise TimeoutError
        return items

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


class ReadAhead(Generic[T]):
    """A stream's updates, which come in batches (:func:`one_by_one` makes batches of a
    source of single updates), read in a task of their own, at most ``ahead`` of the stream
    (a batch may overshoot it), so the stream takes every update already read at once
    (:meth:`WatchSlot.take`) instead of racing each one against the drain signal in a task
    of its own.

    An update source that ends puts :data:`END`; one that fails puts its exception. The
    source is closed when the task ends (:meth:`aclose`, or the drain cancelling it).

    The read-ahead is a plain deque with one waiter on each side, not an ``asyncio.Queue``:
    every outcome of a watched broadcast passes through one per watcher, and the queue's
    bookkeeping per item (its getters' and putters' futures, its task counter) was a tenth
    of a streaming server's CPU.
    """

    def __init__(
        self, batches: AsyncGenerator[Sequence[T], None], *, ahead: int, name: str
    ) -> None:
        self._items: deque[T | BaseException | _End] = deque()
        self._ahead = ahead
        self._arrived: asyncio.Future[None] | None = None
        """The stream waiting for an item (:meth:`arrival`)."""
        self._room: asyncio.Future[None] | None = None
        """The reading waiting for the stream to take some."""
        self.task = asyncio.create_task(self._read(batches), name=name)

    async def _read(self, batches: AsyncGenerator[Sequence[T], None]) -> None:
        try:
            # Closed here whatever ends the reading: cancelled while waiting for room, the
            # generator would otherwise stay open (and its watch with it) until the garbage
            # collector finds it.
            async with aclosing(batches):
                async for batch in batches:
                    self._put(batch)
                    while len(self._items) >= self._ahead:
                        self._room = asyncio.get_running_loop().create_future()
                        await self._room
            self._put((END,))
        except Exception as error:
            self._put((error,))

    def _put(self, batch: Sequence[T | BaseException | _End]) -> None:
        self._items.extend(batch)
        arrived = self._arrived
        if arrived is not None and not arrived.done():
            arrived.set_result(None)

    def _taken(self) -> None:
        room = self._room
        if room is not None and not room.done() and len(self._items) < self._ahead:
            room.set_result(None)

    def ready(self, most: int) -> list[T | BaseException | _End]:
        """Up to ``most`` items read already, without waiting."""
        items = self._items
        if not items:
            return []
        if len(items) <= most:
            taken = list(items)
            items.clear()
        else:
            taken = [items.popleft() for _ in range(most)]
        self._taken()
        return taken

    async def arrival(
        self,
        signal: asyncio.Future[None],
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> None:
        """Returns once an item is ready, ``signal`` is done or ``timeout`` seconds passed."""
        if self._items:
            return
        loop = asyncio.get_running_loop()
        arrived = self._arrived = loop.create_future()

        def wake(_: object = None) -> None:
            if not arrived.done():
                arrived.set_result(None)

        signal.add_done_callback(wake)
        timer = None if timeout is None else loop.call_later(timeout, wake)
        try:
            await arrived
        finally:
            signal.remove_done_callback(wake)
            if timer is not None:
                timer.cancel()

    async def aclose(self) -> None:
        await cancel_and_wait(self.task)


async def one_by_one(updates: AsyncGenerator[T, None]) -> AsyncGenerator[list[T], None]:
    """``updates`` as batches of one, for a :class:`ReadAhead` (``updates`` is closed with
    them)."""
    async with aclosing(updates):
        async for update in updates:
            yield [update]


class _End:
    """The end of a :class:`ReadAhead`'s updates."""


END: Final = _End()


K = TypeVar("K")


class PerUpdate(Generic[K, T]):
    """What a stream renders of one update, rendered once for every stream of it: the
    watchers of a broadcast share the very same outcome objects (one feed per broadcast,
    :mod:`tgbroadcast.core.queue.feeds`), so the latest ``size`` renderings are kept by the
    object's identity (and the object itself, so the identity stays its own)."""

    def __init__(self, render: Callable[[K], T], *, size: int = 8192) -> None:
        self._render = render
        self._size = size
        self._kept: OrderedDict[int, tuple[K, T]] = OrderedDict()

    def __call__(self, value: K) -> T:
        kept = self._kept.get(id(value))
        if kept is not None and kept[0] is value:
            return kept[1]
        rendered = self._render(value)
        if len(self._kept) >= self._size:
            self._kept.popitem(last=False)  # the oldest
        self._kept[id(value)] = (value, rendered)
        return rendered
