"""A broadcast's recipient ids as the service holds them: 8 bytes each, not a Python object each.

A request may name a million chat ids. As Python integers in a list or tuple they are 36 MB,
and every copy of them (the transport's, validation's, the store's) is as many objects again;
as an array of signed 64-bit integers they are 8 MB and copied with one ``memcpy``. The
transports hand the core :func:`packed_ids`; validation makes them :class:`DistinctIds`, which
the store writes as they are (it drops repeats from any other sequence first).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

from tgbroadcast.core.domain.errors import FieldViolation

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

if TYPE_CHECKING:
    _Int64Array = array[int]
else:  # ``array`` takes no type argument at run time before Python 3.12
    _Int64Array = array


class DistinctIds(_Int64Array):
    """Chat ids without repeats, in the order first named, as signed 64-bit integers: what
    :func:`checked_ids` returns. Slices and copies are plain arrays (nothing says they are
    still distinct)."""

    __slots__ = ()


def packed_ids(user_ids: Iterable[int]) -> Sequence[int]:
    """A request's recipient ids as the transports hand them to the core: an array of signed
    64-bit integers when every one fits, else as given, for validation to name those that do
    not. The transport's own list of them can then go before the broadcast is written."""
    values = user_ids if isinstance(user_ids, Sequence) else tuple(user_ids)
    try:
        return array("q", values)
    except (OverflowError, TypeError):
        return tuple(values)


def checked_ids(ids: Sequence[int], max_ids: int, violations: list[FieldViolation]) -> DistinctIds:
    """A request's ``user_ids`` (at least one) without repeats, or none if one is bad: a
    violation for each id that is no chat id (zero, or beyond 64 bits; the first 20), and for
    more than ``max_ids`` distinct ones."""
    unique = dict.fromkeys(ids)
    # Checked one by one only when one is bad: min and max run in C; a packed id fits.
    packed = isinstance(ids, array) and ids.typecode == "q"
    bad = 0 in unique or not (packed or (min(ids) >= INT64_MIN and max(ids) <= INT64_MAX))
    count = len(unique)
    distinct = DistinctIds("q", () if bad else (ids if count == len(ids) else unique))
    del unique  # a million entries: not held while the rest is checked
    for index, user_id in enumerate(ids if bad else ()):
        if user_id == 0 or not INT64_MIN <= user_id <= INT64_MAX:
            violations.append(
                FieldViolation(f"user_ids[{index}]", f"{user_id} is not a Telegram chat id")
            )
            if len(violations) >= 20:
                break
    if count > max_ids:
        violations.append(
            FieldViolation(
                "user_ids", f"names {count} distinct recipients; at most {max_ids} per request"
            )
        )
    return distinct
