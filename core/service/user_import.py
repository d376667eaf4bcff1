"""ImportUsers: users streamed in chunks, each chunk committed as it arrives.

Guarantees:

* Memory is bounded by one chunk (at most
  :data:`~tgbroadcast.core.rules.validation.MAX_USERS_PER_UPSERT` users): millions of users go
  through without being held at once.
* Each chunk is validated whole, then upserted in one transaction (as UpsertUsers would, but
  an id repeated in a chunk is allowed: the later occurrence's given fields win, exactly as
  if the rows were applied one after another).
* The first bad chunk stops the import with :class:`~tgbroadcast.core.domain.errors.ImportRefused`,
  naming the chunk (or, for CSV, the line) and the field; that chunk and everything after it
  is not written, every chunk before it stays committed and ``imported`` says how many users
  they held. Re-sending the whole import is safe: an upsert of the same users is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass

from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.errors import ImportRefused, InvalidArgument
from tgbroadcast.core.domain.model import UserProfile
from tgbroadcast.core.rules.validation import validate_users
from tgbroadcast.core.store import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ImportChunk:
    """One chunk of an import. ``location(i)`` is how errors name its ``i``-th user (a CSV
    line, ``"line 17"``); by default ``chunks[k].users[i]``."""

    users: Sequence[UserProfile]
    location: Callable[[int], str] | None = None


async def import_users(
    store: Store, chunks: AsyncIterable[ImportChunk], *, bot: str = DEFAULT_BOT
) -> int:
    """Validate and upsert every chunk in turn as the bot's users; returns the users imported
    (distinct ids per chunk, summed). An error raised by ``chunks`` itself (a transport's
    parse error, as :class:`InvalidArgument`) stops the import like a bad chunk."""
    imported = 0
    index = 0
    try:
        async for chunk in chunks:
            if chunk.users:
                field = f"chunks[{index}].users"
                profiles = validate_users(
                    chunk.users, field=field, location=chunk.location, allow_repeats=True
                )
                imported += await store.upsert_users(profiles, bot=bot)
            index += 1
    except ImportRefused:
        raise
    except InvalidArgument as exc:
        logger.info(
            "user import stopped by a bad chunk", extra={"chunk": index, "imported": imported}
        )
        raise ImportRefused(exc.violations, imported=imported) from None
    logger.info("users imported", extra={"chunks": index, "imported": imported, "bot": bot})
    return imported
