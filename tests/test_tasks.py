"""Stopping background loops (``tgbroadcast.core.tasks``): a loop waiting between turns stops
when it is cancelled, whatever else happens at that moment."""

from __future__ import annotations

import asyncio

import pytest

from tgbroadcast.core.tasks import cancel_and_wait, wait_event


async def test_a_cancellation_as_the_event_is_set_stops_the_loop() -> None:
    """Python 3.11's ``asyncio.wait_for(event.wait(), ...)`` returned as if nothing happened
    when cancelled in the very turn the event was set: the loop went on for ever (a webhook
    notifier's stop hung in CI)."""
    event, waiting = asyncio.Event(), asyncio.Event()
    turns = 0

    async def loop() -> None:
        nonlocal turns
        while True:
            turns += 1
            waiting.set()
            await wait_event(event, 3600)
            event.clear()

    task = asyncio.create_task(loop())
    await waiting.wait()
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert turns == 1


async def test_wait_event_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert not await wait_event(event, 0.001)
    event.set()
    assert await wait_event(event, 3600)
    waiter = asyncio.create_task(wait_event(asyncio.Event(), 3600))
    await cancel_and_wait(waiter)
    assert waiter.cancelled()
