"""The garbage collector around a service's start-up.

Start-up builds what lives as long as the process: the aiogram models a worker uses,
SQLAlchemy's tables and compiled statements, the gRPC and HTTP servers. Collecting while it is
built walks all of it again at each full collection — about half a second of a worker's start
when it still built every one of aiogram's ~600 models (four full collections of 20-180 ms each,
measured with ``gc.callbacks``). So the collector is
off until the service is ready; then one collection drops start-up's garbage, and what is left
is frozen (``gc.freeze``): no later collection walks it, and a full one in a running worker takes
a few milliseconds instead of 150.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def starting() -> Iterator[Callable[[], None]]:
    """Pause the garbage collector; the yielded ``ready()``, called once the service is up,
    collects start-up's garbage, freezes what is left and turns the collector on again. On
    leaving without ``ready()`` (a failed start, a stop during it) the collector is on again
    too. A collector that was off before stays off."""
    was_enabled = gc.isenabled()
    gc.disable()

    def ready() -> None:
        gc.collect()
        gc.freeze()
        if was_enabled:
            gc.enable()

    try:
        yield ready
    finally:
        if was_enabled:
            gc.enable()
