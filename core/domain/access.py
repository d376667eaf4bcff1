"""What an API token may do: its scopes, and the bots it may use.

The scopes are fixed here; which request needs which is the table in
:mod:`tgbroadcast.server.scopes`, the tokens' grants are configured in
``server.api_tokens`` (:mod:`tgbroadcast.core.config.tokens`).
"""

from __future__ import annotations

from typing import Final

BROADCASTS_SEND: Final = "broadcasts:send"
"""Send a message (a broadcast) and preview one."""
BROADCASTS_READ: Final = "broadcasts:read"
"""Read broadcasts: get, list, watch, their deliveries and reports."""
BROADCASTS_CONTROL: Final = "broadcasts:control"
"""Pause, resume and cancel a broadcast."""
USERS_WRITE: Final = "users:write"
"""Upsert, import and delete users (and so their tags)."""
USERS_READ: Final = "users:read"
"""Get and list users."""
BOTS_ADMIN: Final = "bots:admin"
"""Manage the bots themselves."""

SCOPES: Final = frozenset(
    {BROADCASTS_SEND, BROADCASTS_READ, BROADCASTS_CONTROL, USERS_WRITE, USERS_READ, BOTS_ADMIN}
)
ALL_BOTS: Final = "*"
"""In a token's bots: every bot, present and future."""
DEFAULT_BOT: Final = "default"
"""The bot ``telegram.token`` is: the only one while the service has one."""
