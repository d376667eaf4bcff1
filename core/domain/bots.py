"""A bot created through the API, as the store keeps it.

Configured bots (``telegram.token``, ``bots:``) are never stored; the runtime view of every
bot is ``tgbroadcast.core.bots``. A stored bot's token is kept only sealed
(``token_sealed``, a Fernet token opened with the server's secret keys) and as its SHA-256
(``token_hash``), which lets a second bot with the same token be refused without opening
any row: the token itself is never in the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredBot:
    """One row of ``bots``. ``None`` limits and ``api_url`` mean the ``telegram:`` section's."""

    name: str
    """``[a-z0-9_-]{1,32}``; unique, and never that of a configured bot."""
    bot_id: int
    """Telegram's id of the bot: the number before the token's colon."""
    username: str | None
    """The bot's username as ``getMe`` answered when it was created."""
    token_sealed: str
    """The token sealed with the newest secret key (never the token)."""
    token_hash: str
    """SHA-256 of the token, 64 lowercase hex digits; unique across stored bots."""
    rate_limit: float | None
    paid_rate_limit: float | None
    api_url: str | None
    created_at: datetime
    created_by: str
    """The name of the API token that created it."""
