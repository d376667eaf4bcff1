"""Statements of an edit (EditBroadcast): the new content and its version, which recipients'
messages still carry an older one, holding them for one edit job at a time
(:mod:`.followups`), recording each one's outcome once, and the edit's end.

A recipient is *to edit* while it is ``SENT``, not recalled, and its ``content_version`` is
older than the broadcast's. :func:`record` writes an outcome only for a recipient still to
edit to that version (the first wins), setting its ``content_version``, and counts it in
``broadcasts.edited`` in the same transaction if that version is still the latest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    exists,
    false,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tgbroadcast.core.domain.errors import FailedPrecondition
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    ContentEdit,
    ControlAction,
    DeliveryState,
    EditOutcome,
)
from tgbroadcast.core.domain.states import EDITABLE, SENDABLE
from tgbroadcast.core.store import actions, followups
from tgbroadcast.core.store import broadcasts as broadcast_statements
from tgbroadcast.core.store.followups import SentClaim
from tgbroadcast.core.store.tables import SETTLED, broadcasts, deliveries

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from typing import TypeVar

    T = TypeVar("T")

_SENT: Final = DeliveryState.SENT.value
_EDITABLE: Final = sorted(state.value for state in EDITABLE)
_SENDABLE: Final = sorted(state.value for state in SENDABLE)


@dataclass(frozen=True, slots=True, kw_only=True)
class EditResult:
    """One recipient's edit outcome, as an edit job found it."""

    broadcast_id: int
    user_id: int
    outcome: EditOutcome
    version: int
    """The content version the job applied."""
    error: str | None = None


def _older(version: int | ColumnElement[int]) -> ColumnElement[bool]:
    """Sent, not recalled recipients whose messages are of a version before ``version``."""
    return and_(
        deliveries.c.recall.is_(None), func.coalesce(deliveries.c.content_version, 1) < version
    )


def _to_edit(version: int, now: datetime) -> ColumnElement[bool]:
    """Recipients an edit to ``version`` still has to deal with: sent with older content, or
    a send in flight (it may carry older content)."""
    return or_(and_(deliveries.c.state == _SENT, _older(version)), followups.in_flight(now))


async def start(
    connection: AsyncConnection,
    broadcast_id: int,
    edit: ContentEdit,
    *,
    actor: str,
    now: datetime,
) -> Broadcast:
    """Store the new content as the next version, recorded with ``actor``; the broadcast as
    it left it. A sendable one starts a new generation of jobs (see
    :mod:`tgbroadcast.core.domain.states`). ``NotFound``; ``FailedPrecondition`` naming a
    recalling or recalled broadcast's state."""
    # MySQL and MariaDB evaluate SET from left to right, each seeing the ones before: the
    # media's version is set first, from the content's version before this edit's.
    values: dict[str, Any] = {}
    if edit.media_url is not None:
        values = {
            "media_version": broadcasts.c.content_version + 1,
            "media_url": edit.media_url,
            "file_id": None,
            "media_upload": None,
            "media_filename": None,
        }
    values |= {
        "message": edit.message,
        "options": edit.options.to_json(),
        "content_version": broadcasts.c.content_version + 1,
        "edit_at": now,
        # A scheduled broadcast sent nothing: its edit is done when stored.
        "editing": broadcasts.c.status != BroadcastStatus.SCHEDULED.value,
        "edited": 0,
        "resumed_at": now,
        "dispatched": False,
    }
    moved = await connection.execute(
        update(broadcasts)
        .where(broadcasts.c.id == broadcast_id, broadcasts.c.status.in_(_EDITABLE))
        .ordered_values(*((broadcasts.c[name], value) for name, value in values.items()))
    )
    broadcast = await broadcast_statements.fetch(connection, broadcast_id)  # NotFound
    if moved.rowcount != 1:
        raise FailedPrecondition(
            f"broadcast {broadcast_id} is {broadcast.status.value}: its messages cannot be edited",
            state=broadcast.status.value,
        )
    await actions.record(connection, broadcast_id, ControlAction.EDIT, actor=actor, at=now)
    (with_actions,) = await actions.with_history(connection, [broadcast])
    return with_actions


async def claim(
    connection: AsyncConnection,
    broadcast_id: int,
    user_ids: Sequence[int],
    *,
    version: int,
    token: str,
    now: datetime,
    until: datetime,
) -> SentClaim:
    """Hold for ``token`` the sent recipients among ``user_ids`` whose messages are older
    than ``version`` (see :func:`.followups.claim`)."""
    return await followups.claim(
        connection,
        broadcast_id,
        user_ids,
        to_do=_older(version),
        token=token,
        now=now,
        until=until,
    )


_WRITING: Final = followups.writing(
    _older(bindparam("key_version", type_=Integer)),
    values={
        "content_version": bindparam("new_version", type_=Integer),
        "edit": bindparam("new_edit", type_=String),
        "edit_error": bindparam("new_edit_error", type_=Text),
    },
)
"""Recipients' edit outcomes, while their messages are of an older version (:func:`_older`)."""
_COUNT: Final = followups.counter(
    broadcasts.c.edited, broadcasts.c.content_version == bindparam("key_version", type_=Integer)
)
"""Counts a version's outcomes while it is the broadcast's latest."""


async def record(connection: AsyncConnection, results: Sequence[EditResult]) -> dict[int, int]:
    """Write each of one broadcast's ``results`` (of one version) whose recipient is still to
    edit to it (dropping its claim) and count them in its ``edited`` if that version is still
    the latest; the user ids written, each with its number among that version's outcomes (0:
    an older version's, not counted)."""
    keyed = {(result.broadcast_id, result.version) for result in results}
    if len(keyed) != 1:
        raise ValueError("record one broadcast's edit outcomes of one version at a time")
    broadcast_id, version = keyed.pop()
    keys = {"key_broadcast_id": broadcast_id, "key_version": version}
    rows = [
        {
            **keys,
            "key_user_id": result.user_id,
            "new_version": version,
            "new_edit": result.outcome.value,
            "new_edit_error": result.error,
        }
        for result in sorted(results, key=lambda r: r.user_id)
    ]
    written = await _WRITING.write_all(connection, rows, keys)
    return await _COUNT.count(connection, written, keys) if written else {}


async def finish(
    connection: AsyncConnection, broadcast_id: int, *, version: int, now: datetime
) -> Broadcast | None:
    """End the edit to ``version`` (still the latest) if nobody is left to edit to it; the
    broadcast if this call ended it. Sends in flight hold it open only while the broadcast no
    longer sends (they are older content then); a sending broadcast's are mostly of the new
    content, and one of the old recorded after the end opens the edit again
    (:func:`.deliveries.record`)."""
    older = exists().where(
        deliveries.c.broadcast_id == broadcast_id,
        deliveries.c.state == _SENT,
        SETTLED,
        _older(version),
    )
    # Sends in flight are pending recipients: none once every recipient is counted (the
    # pending ones are in no index but the primary key, which the search would read whole).
    settled = broadcasts.c.sent + broadcasts.c.failed >= broadcasts.c.total
    flying = exists().where(deliveries.c.broadcast_id == broadcast_id, followups.in_flight(now))
    moved = await connection.execute(
        update(broadcasts)
        .where(
            broadcasts.c.id == broadcast_id,
            broadcasts.c.editing == true(),
            broadcasts.c.content_version == version,
            ~older,
            or_(broadcasts.c.status.in_(_SENDABLE), settled, ~flying),
        )
        .values(editing=false())
    )
    if moved.rowcount != 1:
        return None
    return await broadcast_statements.fetch(connection, broadcast_id)


async def counts(
    connection: AsyncConnection, broadcast_id: int, version: int
) -> dict[EditOutcome, int]:
    """Recipients per outcome of the edit to ``version`` (outcomes nobody has are absent)."""
    statement = (
        select(deliveries.c.edit, func.count())
        .where(
            deliveries.c.broadcast_id == broadcast_id,
            deliveries.c.content_version == version,
            deliveries.c.edit.is_not(None),
        )
        .group_by(deliveries.c.edit)
    )
    return {EditOutcome(name): n for name, n in await connection.execute(statement)}


class EditRows:
    """:class:`~.store.Store`'s methods for edits (a mixin: the store brings its engine and
    retried write transactions)."""

    if TYPE_CHECKING:
        _engine: AsyncEngine

        async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T: ...

    async def edit_broadcast(
        self, broadcast_id: int, edit: ContentEdit, *, actor: str, now: datetime
    ) -> Broadcast:
        """Store the broadcast's new content; see :func:`start`."""
        return await self._write(
            lambda connection: start(connection, broadcast_id, edit, actor=actor, now=now)
        )

    def edit_batches(
        self,
        broadcast_id: int,
        *,
        version: int,
        batch_size: int,
        now: datetime,
        read_size: int = 10_000,
    ) -> AsyncIterator[tuple[int, ...]]:
        """The broadcast's recipients cut as :meth:`~.store.Store.job_batches` cuts them,
        leaving out batches with nobody to edit to ``version``."""
        return followups.flagged_batches(
            self._engine,
            broadcast_id,
            _to_edit(version, now),
            batch_size=batch_size,
            read_size=read_size,
        )

    async def claim_edit(
        self,
        broadcast_id: int,
        user_ids: Sequence[int],
        *,
        version: int,
        token: str,
        now: datetime,
        until: datetime,
    ) -> SentClaim:
        """Hold for ``token`` the sent recipients among ``user_ids`` still to edit; see
        :func:`claim`."""
        return await self._write(
            lambda connection: claim(
                connection,
                broadcast_id,
                user_ids,
                version=version,
                token=token,
                now=now,
                until=until,
            )
        )

    async def record_edits(self, results: Sequence[EditResult]) -> dict[int, int]:
        """Record one broadcast's edit outcomes of one version, each recipient's first only;
        the user ids recorded, each with its number among that version's outcomes (0: not
        counted)."""
        if not results:
            return {}
        return await self._write(lambda connection: record(connection, results))

    async def finish_edit(
        self, broadcast_id: int, *, version: int, now: datetime
    ) -> Broadcast | None:
        """End the edit once nobody is left to edit; the broadcast if this call ended it."""
        return await self._write(
            lambda connection: finish(connection, broadcast_id, version=version, now=now)
        )

    async def edit_counts(self, broadcast_id: int, version: int) -> dict[EditOutcome, int]:
        """Recipients per outcome of the edit to ``version``."""
        async with self._engine.connect() as connection:
            return await counts(connection, broadcast_id, version)
