"""What workers keep in SQL beside outcomes: the file_id of a broadcast's media (one fetch
or upload per broadcast, media version and variant), and a bot's parked sending (a long flood
wait)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tgbroadcast.core.store import broadcasts
from tgbroadcast.core.store.tables import variant_file_ids

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from typing import TypeVar

    T = TypeVar("T")


class SendingRows:
    """:class:`~.store.Store`'s methods for media file_ids and parks (a mixin: the store
    brings its engine and retried write transactions)."""

    if TYPE_CHECKING:
        _engine: AsyncEngine

        async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T: ...

    async def mark_throttled(self, bot: str, until: datetime) -> int:
        """The bot's sending is parked until ``until``: its unfinished broadcasts show it."""
        return await self._write(
            lambda connection: broadcasts.mark_throttled(connection, bot, until)
        )

    async def media_file_id(
        self, broadcast_id: int, media_version: int = 1, variant: int = 0
    ) -> str | None:
        """The file_id Telegram gave the broadcast's media (of ``media_version``: an edit may
        replace it; of the variant at position ``variant``), once a send stored it."""
        async with self._engine.connect() as connection:
            if variant == 0:
                return await broadcasts.file_id(connection, broadcast_id, media_version)
            found = await connection.execute(
                select(variant_file_ids.c.file_id).where(
                    variant_file_ids.c.broadcast_id == broadcast_id,
                    variant_file_ids.c.variant == variant,
                )
            )
            value: str | None = found.scalar_one_or_none()
            return value

    async def store_media_file_id(
        self, broadcast_id: int, file_id: str, media_version: int = 1, variant: int = 0
    ) -> None:
        """Remember the media's file_id; the first one stored for ``media_version`` (and the
        variant) stays."""
        if variant == 0:
            await self._write(
                lambda connection: broadcasts.store_file_id(
                    connection, broadcast_id, file_id, media_version
                )
            )
            return
        with contextlib.suppress(IntegrityError):  # another send stored its first: it stays
            await self._write(
                lambda connection: _insert_variant_file_id(
                    connection, broadcast_id, variant, file_id
                )
            )


async def _insert_variant_file_id(
    connection: AsyncConnection, broadcast_id: int, variant: int, file_id: str
) -> None:
    await connection.execute(
        variant_file_ids.insert().values(
            broadcast_id=broadcast_id, variant=variant, file_id=file_id
        )
    )
