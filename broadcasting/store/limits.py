"""How much one statement may carry, so no backend's parameter or packet limit is hit."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final, TypeVar

T = TypeVar("T")

ROWS_PER_STATEMENT: Final = 5_000
"""Rows per executemany call; the drivers split further to respect parameter limits."""

IDS_PER_STATEMENT: Final = 20_000
"""Recipients per bulk delivery insert (a ~300 kB parameter: inside every packet limit)."""

IDS_PER_IN_LIST: Final = 500
"""Values per ``IN (...)`` list: below SQLite's oldest limit of 999 bound parameters."""


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``, in order."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
