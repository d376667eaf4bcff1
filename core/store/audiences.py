"""Which users a :class:`~tgbroadcast.core.domain.model.UserFilter` selects, as SQL on ``users``.

A filter is resolved entirely in the database (``INSERT INTO deliveries .. SELECT .. FROM
users WHERE ..`` for a broadcast, a keyset-paged ``SELECT`` for ListUsers): no user is loaded
into Python to decide whether it matches. Only one bot's users are ever selected (the
primary key ``(bot, id)`` keeps them together). Tags are an ``EXISTS`` on ``user_tags`` (its
primary key ``(bot, user_id, tag)`` answers it), so a user with several matching tags is
selected once; language codes are an ``IN`` list on ``users.language_code`` (indexed with
the bot).
"""

from __future__ import annotations

import json

from sqlalchemy import ColumnElement, select, true

from tgbroadcast.core.domain.model import UserFilter
from tgbroadcast.core.store.tables import user_tags, users


def conditions(
    user_filter: UserFilter | None, *, bot: str, active_only: bool = False
) -> list[ColumnElement[bool]]:
    """The ``WHERE`` conditions on ``users`` for the bot's users matching the filter (all of
    them for ``None`` or an empty filter).

    Every criterion given must match: at least one of the tags, and one of the language
    codes. Tags and language codes are compared as stored (validation lower-cases both).
    """
    where: list[ColumnElement[bool]] = [users.c.bot == bot]
    if active_only:
        where.append(users.c.active == true())
    if user_filter is None:
        return where
    if user_filter.language_codes:
        where.append(users.c.language_code.in_(user_filter.language_codes))
    if user_filter.tags:
        where.append(
            select(user_tags.c.user_id)
            .where(
                user_tags.c.bot == users.c.bot,
                user_tags.c.user_id == users.c.id,
                user_tags.c.tag.in_(user_filter.tags),
            )
            .exists()
        )
    return where


def to_json(user_filter: UserFilter) -> str:
    """The filter as stored in ``broadcasts.audience``."""
    return json.dumps(
        {"tags": list(user_filter.tags), "language_codes": list(user_filter.language_codes)},
        separators=(",", ":"),
    )


def from_json(text: str) -> UserFilter:
    """The filter stored by :func:`to_json`."""
    data = json.loads(text)
    return UserFilter(
        tags=tuple(data.get("tags", ())), language_codes=tuple(data.get("language_codes", ()))
    )
