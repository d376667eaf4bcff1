"""Stopping background tasks: the one way an owner ends the loops it started.

The dispatcher, the scheduler, the webhook notifier and the worker's parts (fetch loops,
status reads, result recorder, rate limiter, chat pacing) run their loops as asyncio tasks
and stop them with :func:`cancel_and_wait` when they stop; between turns they wait with
:func:`wait_event`.

May import: nothing of ``tgbroadcast``.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (``None`` stands for a task never started) and return once every one
    has ended.

    How each ended — cancelled, with an error, or with a result it had already — is
    dropped: its owner is stopping and reads nothing from it. A task that catches the
    cancellation is waited for until it returns. If the caller is cancelled meanwhile, the
    tasks are cancelled again and the caller's cancellation goes on.
    """
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    await asyncio.gather(*started, return_exceptions=True)


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` is set within ``seconds``.

    Not ``asyncio.wait_for(event.wait(), seconds)``: on Python 3.11 that returns as if nothing
    happened when the waiting task is cancelled just as the event is set, so a loop stopped by
    :func:`cancel_and_wait` at that moment never stops (a webhook notifier's stop hung so in
    the test suite). ``asyncio.timeout`` lets the cancellation through."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
