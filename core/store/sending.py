"""What workers keep in SQL beside outcomes: the file_id of a broadcast's media (one fetch
or upload per broadcast and media version), and a bot's parked sending (a long flood wait)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tgbroadcast.core.store import broadcasts

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

    async def media_file_id(self, broadcast_id: int, media_version: int = 1) -> str | None:
        """The file_id Telegram gave the broadcast's media (of ``media_version``: an edit may
        replace it), once a send stored it."""
        async with self._engine.connect() as connection:
            return await broadcasts.file_id(connection, broadcast_id, media_version)

    async def store_media_file_id(
        self, broadcast_id: int, file_id: str, media_version: int = 1
    ) -> None:
        """Remember the media's file_id; the first one stored for ``media_version`` stays."""
        await self._write(
            lambda connection: broadcasts.store_file_id(
                connection, broadcast_id, file_id, media_version
            )
        )
