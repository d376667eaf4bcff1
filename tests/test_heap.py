"""The garbage collector around start-up (:mod:`tgbroadcast.launcher.heap`): off while the
service starts, then start-up's garbage collected, what lives frozen, and the collector on."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from tgbroadcast.launcher import heap


class _Node:
    """A cycle's member: only the collector frees it."""

    def __init__(self) -> None:
        self.partner: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    first, second = _Node(), _Node()
    first.partner, second.partner = second, first
    return weakref.ref(first)


@pytest.fixture(autouse=True)
def _collector_as_found() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process's objects back in the collector's sight
    gc.enable()


def test_start_up_runs_without_the_collector_and_ready_collects_freezes_and_turns_it_on() -> None:
    with heap.starting() as ready:
        assert not gc.isenabled()
        garbage = _cycle()
        lives = _Node()
        frozen_before = gc.get_freeze_count()
        ready()
        assert gc.isenabled()
        assert garbage() is None  # start-up's garbage collected before the freeze
        assert gc.get_freeze_count() > frozen_before  # what lives (``lives`` among it) frozen
        assert all(obj is not lives for obj in gc.get_objects(generation=2))
    assert gc.isenabled()


def test_a_failed_start_turns_the_collector_on_again() -> None:
    seen: list[bool] = []
    frozen_before = gc.get_freeze_count()

    def start() -> None:
        with heap.starting():
            seen.append(gc.isenabled())
            raise RuntimeError("no database")

    with pytest.raises(RuntimeError, match="no database"):
        start()
    assert seen == [False]
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen_before  # nothing frozen without ready()


def test_a_collector_switched_off_before_stays_off() -> None:
    gc.disable()
    with heap.starting() as ready:
        ready()
        assert not gc.isenabled()
    assert not gc.isenabled()
