"""A bot's name in a request (``bot`` fields and parameters): what the service accepts.

The same rule as the configuration's (``bots:`` names, ``tgbroadcast.core.config.tokens``):
1-32 characters of ``a-z``, ``0-9``, ``_`` and ``-``. A name that breaks it is refused
without being repeated (it may be anything a client sent).
"""

from __future__ import annotations

import re
from typing import Final

from tgbroadcast.core.domain.errors import InvalidArgument

BOT_NAME: Final = re.compile(r"[a-z0-9_-]{1,32}")
BOT_NAME_RULE: Final = "must be 1-32 characters of a-z, 0-9, _ and -"
FIELD: Final = "bot"


def validate_bot_name(name: str, field: str = FIELD) -> str:
    """``name`` when it is a bot's name; else :class:`InvalidArgument` on ``field``."""
    if not BOT_NAME.fullmatch(name):
        raise InvalidArgument.single(field, BOT_NAME_RULE)
    return name
