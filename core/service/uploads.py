"""Album items uploaded through the API: their bytes wait in the queue's media store (one
object per item) and only their names go to SQL, like a single uploaded media file."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from tgbroadcast.core.domain.model import Content
from tgbroadcast.core.rules.rich_content import AlbumItemInput


async def stash_album(
    content: Content,
    items: Sequence[AlbumItemInput],
    put_media: Callable[[str, bytes], Awaitable[None]],
) -> Content:
    """``content`` with each uploaded album item's ``media_upload`` set, after its bytes
    were stored with ``put_media``. ``items`` are the request's, in the album's order."""
    album = list(content.options.album)
    for index, item in enumerate(items):
        if item.media_data:
            name = f"upload-{uuid.uuid4().hex}"
            await put_media(name, item.media_data)
            album[index] = replace(album[index], media_upload=name)
    return replace(content, options=replace(content.options, album=tuple(album)))
