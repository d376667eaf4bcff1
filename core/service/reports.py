"""Delivery reports: a broadcast's recipients with their outcomes, paged or exported whole.

Guarantees:

* Rows come ordered by user id, keyset-paged: a page is one short query, no connection is
  held between pages, and a page token stays valid however the outcomes change meanwhile
  (a recipient that becomes final between two pages shows its state at the moment its page
  is read).
* ``pending`` selects recipients without a final outcome yet (a cancelled or failed
  broadcast's never-attempted recipients stay pending for good).
* An export holds one page in memory whatever the broadcast's size.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Final

from tgbroadcast.core.domain.errors import FieldViolation, InvalidArgument
from tgbroadcast.core.domain.model import Delivery, DeliveryState
from tgbroadcast.core.rules import page_tokens
from tgbroadcast.core.rules.page_tokens import validate_page
from tgbroadcast.core.service.bot_access import Visible, check_visible
from tgbroadcast.core.store import Store

EXPORT_PAGE: Final = 5000
"""Recipients read per query by an export."""

_OUTCOMES: Final = ", ".join(state.value for state in DeliveryState)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveriesPage:
    """One page of a broadcast's recipients; ``next_page_token`` is empty on the last."""

    deliveries: tuple[Delivery, ...]
    next_page_token: str


def validate_outcomes(outcomes: Sequence[str]) -> frozenset[DeliveryState]:
    """The states named by ``outcomes`` (lower-case names, ``pending`` included); empty means
    every state. ``InvalidArgument`` naming each unknown one."""
    states: set[DeliveryState] = set()
    violations: list[FieldViolation] = []
    for index, name in enumerate(outcomes):
        try:
            states.add(DeliveryState(name))
        except ValueError:
            violations.append(
                FieldViolation(
                    f"outcomes[{index}]", f"unknown outcome {name!r}; one of {_OUTCOMES}"
                )
            )
    if violations:
        raise InvalidArgument(violations)
    return frozenset(states)


async def list_deliveries(
    store: Store,
    broadcast_id: int,
    *,
    outcomes: Sequence[str],
    page_size: int,
    page_token: str,
    visible: Visible = None,
) -> DeliveriesPage:
    """One page (``page_size`` 0: 100; at most 1000); ``NotFound`` for an unknown broadcast
    or one whose bot is not ``visible``."""
    states = validate_outcomes(outcomes)
    kind = page_tokens.deliveries(broadcast_id)
    limit, after = validate_page(page_size, page_token, kind=kind, legacy=(page_tokens.USERS,))
    await check_visible(store, broadcast_id, visible)
    rows = await store.delivery_report(
        broadcast_id, states=states, after_user_id=after, limit=limit + 1
    )
    more = len(rows) > limit
    page = tuple(rows[:limit])
    return DeliveriesPage(
        deliveries=page,
        next_page_token=page_tokens.encode(kind, page[-1].user_id) if more else "",
    )


async def export_deliveries(
    store: Store,
    broadcast_id: int,
    *,
    outcomes: Sequence[str],
    page_size: int = EXPORT_PAGE,
    visible: Visible = None,
) -> AsyncGenerator[tuple[Delivery, ...], None]:
    """Every matching recipient, page by page (empty pages are not yielded).

    Validation and ``NotFound`` (also for a broadcast whose bot is not ``visible``) are
    raised by the first step, before anything is yielded.
    """
    states = validate_outcomes(outcomes)
    await check_visible(store, broadcast_id, visible)
    after: int | None = None
    while True:
        rows = await store.delivery_report(
            broadcast_id, states=states, after_user_id=after, limit=page_size
        )
        if rows:
            yield tuple(rows)
        if len(rows) < page_size:
            return
        after = rows[-1].user_id
