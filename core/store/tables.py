"""The SQL schema, as SQLAlchemy Core tables.

The tables here describe what the Alembic migrations create; the migrations, not
``metadata.create_all()``, are what builds a database. Identifiers are BIGINT everywhere
(Telegram chat ids exceed 32 bits and are negative for groups); SQLite gets INTEGER for the
autoincrement key because only ``INTEGER PRIMARY KEY`` is its rowid.

Timestamps are :class:`UtcDateTime`: timezone-aware UTC datetimes in and out on every backend.

Users, their tags and broadcasts belong to a bot (a ``bot`` column, ``'default'`` for rows
older than bots): users are keyed by ``(bot, id)``; deliveries have no bot of their own, as
broadcast ids are unique across bots.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    literal_column,
    text,
    true,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.types import TypeDecorator, TypeEngine

from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.model import DeliveryState

MYSQL_TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}
"""Every table is InnoDB/utf8mb4 whatever the server's or the database's defaults are."""

STATE_LENGTH = 16
"""Width of the status/state/media type columns (the longest value is ``video_note``)."""


ACTOR_LENGTH = 64
"""Width of ``broadcasts.created_by`` and ``broadcast_actions.actor``: the longest API token
name the configuration accepts."""

CLAIM_TOKEN_LENGTH = 32
"""Width of ``deliveries.claimed_by``: the longest claim token a worker may use."""

BOT_NAME_LENGTH = 32
"""Width of the ``bot`` columns and ``bots.name``: the longest bot name
(``[a-z0-9_-]{1,32}``)."""


VARIANT_NAME_LENGTH = 32
"""Width of ``deliveries.variant``: the longest variant name."""

VariantsText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
"""``broadcasts.variants``: up to ten full contents, beyond MySQL's 64 KiB ``TEXT``."""


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time, stored as UTC, returned timezone-aware in UTC.

    PostgreSQL stores ``timestamptz``; MySQL/MariaDB ``DATETIME(6)`` holding UTC; SQLite its
    ISO text holding UTC. Microseconds survive on every backend. A naive datetime is refused
    (``ValueError``): the store never guesses a time zone.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: timestamps must be aware")
        utc = value.astimezone(UTC)
        if dialect.name == "postgresql":
            return utc
        return utc.replace(tzinfo=None)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """The usual processing, remembering the last value: bulk statements bind one
        ``now`` for every row, and a datetime is immutable, so it is converted once."""
        convert = super().bind_processor(dialect)
        if convert is None:
            return None
        last: tuple[object, Any] = (object(), None)

        def process(value: Any) -> Any:
            nonlocal last
            seen, converted = last
            if value is seen:
                return converted
            converted = convert(value)
            last = (value, converted)
            return converted

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _id_type() -> TypeEngine[int]:
    return BigInteger().with_variant(Integer(), "sqlite")


metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", BigInteger, nullable=False, autoincrement=False),
    Column("username", Text, nullable=True),
    Column("first_name", Text, nullable=True),
    Column("last_name", Text, nullable=True),
    Column("language_code", Text, nullable=True),
    Column("active", Boolean, nullable=False, server_default=true()),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Why the user is inactive ("blocked", "deactivated"), and since when.
    Column("blocked_reason", String(STATE_LENGTH), nullable=True),
    Column("blocked_at", UtcDateTime, nullable=True),
    # Whose user this is: the same Telegram id under two bots is two users.
    Column("bot", String(BOT_NAME_LENGTH), nullable=False, server_default=DEFAULT_BOT),
    PrimaryKeyConstraint("bot", "id"),
    # No index on ``active``: only active users are ever selected, nearly all of them, through
    # the primary key (migration 0016).
    # Only users with a language code (no filter selects NULL): a broadcast's new recipients
    # have none. MariaDB has no partial indexes and holds them all.
    Index(
        "ix_users_language_code",
        "bot",
        "language_code",
        mysql_length={"language_code": 16},
        postgresql_where=text("language_code IS NOT NULL"),
        sqlite_where=text("language_code IS NOT NULL"),
    ),
    **MYSQL_TABLE_OPTIONS,
)
"""A bot's users, by ``(bot, id)``."""

TAG_LENGTH = 64
"""The longest user tag."""

user_tags = Table(
    "user_tags",
    metadata,
    # Deliberately no foreign key: the store deletes a user's tags with the user.
    Column("user_id", BigInteger, nullable=False),
    Column("tag", String(TAG_LENGTH), nullable=False),
    Column("bot", String(BOT_NAME_LENGTH), nullable=False, server_default=DEFAULT_BOT),
    PrimaryKeyConstraint("bot", "user_id", "tag"),
    Index("ix_user_tags_tag", "bot", "tag", "user_id"),
    **MYSQL_TABLE_OPTIONS,
)

COUNTED_OUTCOMES: tuple[DeliveryState, ...] = (
    DeliveryState.BLOCKED,
    DeliveryState.DEACTIVATED,
    DeliveryState.CANT_INITIATE,
    DeliveryState.KICKED,
    DeliveryState.CHAT_NOT_FOUND,
    DeliveryState.BAD_REQUEST,
    DeliveryState.FAILED,
)
"""The failure outcomes a broadcast's row counts one by one (``count_<outcome>``), beside
``sent`` and ``failed`` (every recipient not delivered, so their sum when every recording
counted them)."""


def count_column(outcome: DeliveryState) -> str:
    """The ``broadcasts`` column counting a failure outcome's recipients."""
    return f"count_{outcome.value}"


broadcasts = Table(
    "broadcasts",
    metadata,
    Column("id", _id_type(), primary_key=True, autoincrement=True),
    Column("status", String(STATE_LENGTH), nullable=False),
    Column("message", Text, nullable=False),
    Column("media_type", String(STATE_LENGTH), nullable=False),
    Column("media_url", Text, nullable=True),
    Column("all_users", Boolean, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("sent", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("dispatched", Boolean, nullable=False, server_default=false()),
    Column("created_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    # Why a FAILED broadcast was stopped.
    Column("error", Text, nullable=True),
    Column("allow_paid_broadcast", Boolean, nullable=False, server_default=false()),
    # Telegram's file_id of the media, once the first send stored it: later sends reuse it.
    Column("file_id", Text, nullable=True),
    # Media uploaded through the API: its object in the queue's media store, and file name.
    Column("media_upload", Text, nullable=True),
    Column("media_filename", Text, nullable=True),
    # When a SCHEDULED broadcast starts, and when it went RUNNING.
    Column("send_at", UtcDateTime, nullable=True),
    Column("started_at", UtcDateTime, nullable=True),
    # The last resume of a paused broadcast: names the current generation of its jobs.
    Column("resumed_at", UtcDateTime, nullable=True),
    # The caller's idempotency key, and the SHA-256 of the request it came with.
    Column("idempotency_key", String(255), nullable=True),
    Column("request_hash", String(64), nullable=True),
    # JSON: the filter an audience was resolved from ({"tags": [...], "language_codes": [...]}).
    Column("audience", Text, nullable=True),
    # JSON: the content beyond the columns above (parse_mode, entities, reply_markup, flags,
    # link preview, album, source message, personalize); NULL for plain content.
    Column("options", Text, nullable=True),
    # The completion webhook, and whether it was delivered ("pending", "delivered", "failed").
    Column("callback_url", Text, nullable=True),
    Column("callback_state", String(STATE_LENGTH), nullable=True),
    # Attempts made so far, and when the webhook is next due (a retry's time, or when the
    # lease of the server holding it lapses); NULL: due at once.
    Column("callback_attempts", Integer, nullable=True),
    Column("callback_next_at", UtcDateTime, nullable=True),
    # The name of the API token that sent it ('' for broadcasts older than names).
    Column("created_by", String(ACTOR_LENGTH), nullable=False, server_default=""),
    # The bot it is sent by: its audience is that bot's users. Ids are unique across bots.
    Column("bot", String(BOT_NAME_LENGTH), nullable=False, server_default=DEFAULT_BOT),
    # RecallBroadcast: when it was asked for, and how many recipients' recalls are recorded.
    Column("recall_at", UtcDateTime, nullable=True),
    Column("recalled", BigInteger, nullable=False, server_default=text("0")),
    # EditBroadcast: the content's version (1 as sent, one more per edit; the content columns
    # hold the latest), the version whose edit last replaced the media, when the last edit was
    # asked for, whether its recipients are not all edited yet, and how many are.
    Column("content_version", Integer, nullable=False, server_default=text("1")),
    Column("media_version", Integer, nullable=False, server_default=text("1")),
    Column("edit_at", UtcDateTime, nullable=True),
    Column("editing", Boolean, nullable=False, server_default=false()),
    Column("edited", BigInteger, nullable=False, server_default=text("0")),
    # Until when the bot's sending is parked by a long flood wait (worker.park_after).
    Column("throttled_until", UtcDateTime, nullable=True),
    # A paid broadcast's Stars budget, the estimated spend of its paid sends (thousandths of a
    # Star), and when its paid sending stopped with the budget spent.
    Column("max_stars", BigInteger, nullable=True),
    Column("stars_spent_milli", BigInteger, nullable=False, server_default=text("0")),
    Column("paid_stopped_at", UtcDateTime, nullable=True),
    # JSON: its variants (name, weight, language codes and each one's content), NULL when it
    # has none; the content columns above then hold the first variant's.
    Column("variants", VariantsText, nullable=True),
    # Click tracking: the key signing its link codes (hex; NULL: not tracked), and the public
    # address its links lead through (server.public_url when it was sent).
    Column("click_key", String(64), nullable=True),
    Column("click_base", Text, nullable=True),
    # Recipients per failure outcome, counted as ``sent`` and ``failed`` are (GetBroadcast's
    # outcome_counts without reading the deliveries); NULL for a broadcast created before
    # them, whose outcomes are counted from its deliveries.
    *(Column(count_column(outcome), BigInteger, nullable=True) for outcome in COUNTED_OUTCOMES),
    Index("ix_broadcasts_dispatched", "dispatched"),
    Index("ix_broadcasts_status", "status", "id"),
    # The webhook notifier looks for webhooks not yet delivered or failed.
    Index("ix_broadcasts_callback_state", "callback_state"),
    # Listing one bot's broadcasts, newest first.
    Index("ix_broadcasts_bot", "bot", "id"),
    # Idempotency keys are per bot.
    UniqueConstraint("bot", "idempotency_key", name="uq_broadcasts_idempotency_key"),
    sqlite_autoincrement=True,
    **MYSQL_TABLE_OPTIONS,
)

_PENDING_LITERAL = f"'{DeliveryState.PENDING.value}'"
SETTLED_ONLY = f"state <> {_PENDING_LITERAL}"
"""``ix_deliveries_state``'s ``WHERE`` on PostgreSQL and SQLite."""

deliveries = Table(
    "deliveries",
    metadata,
    # Deliberately not a foreign key (broadcasts are never deleted; checking it slowed the
    # bulk insert of a million recipients by seconds).
    Column("broadcast_id", BigInteger, nullable=False),
    # The Telegram chat id; deliberately not a foreign key to users.
    Column("user_id", BigInteger, nullable=False),
    Column("state", String(STATE_LENGTH), nullable=False),
    Column("message_id", BigInteger, nullable=True),
    # Every message of the delivery when it produced several (an album's), as a JSON array of
    # their ids in order; NULL for one message (``message_id``).
    Column("message_ids", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("finished_at", UtcDateTime, nullable=True),
    # The job that holds a pending recipient (a worker's claim token) and until when: while
    # the claim lasts no other job sends to it. NULL when nobody holds it (and once final).
    Column("claimed_by", String(CLAIM_TOKEN_LENGTH), nullable=True),
    Column("claimed_until", UtcDateTime, nullable=True),
    # What RecallBroadcast did to a SENT recipient's messages (``RecallOutcome``), and
    # Telegram's description when it failed; NULL until then. While a recall job deletes a
    # sent recipient's messages, the claim columns above hold it for that job.
    Column("recall", String(STATE_LENGTH), nullable=True),
    Column("recall_error", Text, nullable=True),
    # The content version (``broadcasts.content_version``) a SENT recipient's send, or the
    # last edit that reached it, was of (NULL: 1); what that edit did (``EditOutcome``) and
    # Telegram's description when it failed. An edit job holds the recipients it edits with
    # the claim columns, as a recall job does.
    Column("content_version", Integer, nullable=True),
    Column("edit", String(STATE_LENGTH), nullable=True),
    Column("edit_error", Text, nullable=True),
    # The name of the variant its send was of (NULL: not sent yet, or no variants).
    Column("variant", String(VARIANT_NAME_LENGTH), nullable=True),
    PrimaryKeyConstraint("broadcast_id", "user_id"),
    # Only settled recipients (migration 0017): the pending ones, every row a broadcast
    # inserts, are always found by their ids through the primary key. MariaDB has no partial
    # indexes and holds them all.
    Index(
        "ix_deliveries_state",
        "broadcast_id",
        "state",
        "user_id",
        postgresql_where=text(SETTLED_ONLY),
        sqlite_where=text(SETTLED_ONLY),
    ),
    **MYSQL_TABLE_OPTIONS,
)

broadcast_actions = Table(
    "broadcast_actions",
    metadata,
    # The order actions happened in (per broadcast, the moves are serialised by its row).
    Column("id", _id_type(), primary_key=True, autoincrement=True),
    Column(
        "broadcast_id",
        BigInteger,
        ForeignKey("broadcasts.id", name="fk_broadcast_actions_broadcast_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # "pause", "resume" or "cancel"; who asked (an API token's name) and when it committed.
    Column("action", String(STATE_LENGTH), nullable=False),
    Column("actor", String(ACTOR_LENGTH), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_broadcast_actions_broadcast_id", "broadcast_id", "id"),
    sqlite_autoincrement=True,
    **MYSQL_TABLE_OPTIONS,
)
"""Who paused, resumed or cancelled a broadcast: one row per move, written in the move's
transaction (see :mod:`.transitions`)."""

bots = Table(
    "bots",
    metadata,
    Column("name", String(BOT_NAME_LENGTH), nullable=False),
    # Telegram's id of the bot: the number before the token's colon.
    Column("bot_id", BigInteger, nullable=False),
    Column("username", Text, nullable=True),
    # The token sealed with the server's secret key (a Fernet token); never the token itself.
    Column("token_sealed", Text, nullable=False),
    # SHA-256 (hex) of the token: a token already used by another bot is refused without
    # opening every row.
    Column("token_hash", String(64), nullable=False),
    # NULL: the value of the ``telegram:`` section.
    Column("rate_limit", Double, nullable=True),
    Column("paid_rate_limit", Double, nullable=True),
    Column("api_url", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(ACTOR_LENGTH), nullable=False),
    # Set when the bot was deleted: the row stays (its token and hash wiped) so that the name
    # is only ever taken again by the same Telegram bot (``bot_id``).
    Column("deleted_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("name"),
    UniqueConstraint("token_hash", name="uq_bots_token_hash"),
    **MYSQL_TABLE_OPTIONS,
)
"""The bots created through the API (configured bots are not stored), and the tombstones of
those deleted."""

clicks = Table(
    "clicks",
    metadata,
    # A tracked link a recipient opened, once (its first time): the link is its position in
    # the recipient's message (``tgbroadcast.core.rules.clicks``), the variant the
    # recipient's (NULL: none).
    Column("broadcast_id", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("link", Integer, nullable=False),
    Column("variant", String(VARIANT_NAME_LENGTH), nullable=True),
    Column("clicked_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("broadcast_id", "user_id", "link"),
    **MYSQL_TABLE_OPTIONS,
)

variant_file_ids = Table(
    "variant_file_ids",
    metadata,
    # The file_id of a variant's media (positions 1 and up; the first variant's is
    # ``broadcasts.file_id``): the first one stored stays. Variants are never edited, so their
    # media has one version.
    Column("broadcast_id", BigInteger, nullable=False),
    Column("variant", Integer, nullable=False),
    Column("file_id", Text, nullable=False),
    PrimaryKeyConstraint("broadcast_id", "variant"),
    **MYSQL_TABLE_OPTIONS,
)

variant_counts = Table(
    "variant_counts",
    metadata,
    # A broadcast with variants: its settled recipients per variant and outcome, added to by
    # the transaction that records them. Read while they add up to the broadcast's ``sent +
    # failed``; a broadcast from before them, or with outcomes a worker of an older release
    # recorded, is counted from its deliveries.
    Column("broadcast_id", BigInteger, nullable=False),
    Column("variant", String(VARIANT_NAME_LENGTH), nullable=False),
    Column("state", String(STATE_LENGTH), nullable=False),
    Column("count", BigInteger, nullable=False),
    PrimaryKeyConstraint("broadcast_id", "variant", "state"),
    **MYSQL_TABLE_OPTIONS,
)


SETTLED: ColumnElement[bool] = deliveries.c.state != literal_column(_PENDING_LITERAL)
"""``ix_deliveries_state``'s condition as a query's term. A query for settled states (``state
= 'sent'``, ``state IN (..)``) adds it so that SQLite, which matches a partial index's
``WHERE`` only against the query's own terms, reads that index; PostgreSQL would prove it from
a constant, never from a generic plan's parameter."""
