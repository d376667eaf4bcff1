"""The settings' shape: frozen dataclasses, one per section. Secrets never appear in a
``repr``."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tgbroadcast.core.domain.access import ALL_BOTS, SCOPES
from tgbroadcast.core.domain.errors import ConfigError

BOT_TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseSettings:
    url: str = field(repr=False)
    """A SQLAlchemy async URL: ``sqlite+aiosqlite``, ``postgresql+asyncpg`` or ``mysql+asyncmy``
    (not in ``repr``: it may hold a password)."""
    pool_size: int = 10
    """Connections the pool keeps open (PostgreSQL, MariaDB; SQLite has its own pool)."""
    max_overflow: int = 10
    """Connections opened beyond ``pool_size`` under load, closed when returned."""
    pool_timeout: float = 30.0
    """Seconds to wait for a free connection before failing (API: 503 / UNAVAILABLE)."""
    statement_timeout: float = 0.0
    """Seconds a statement may run before the database cancels it; 0: no limit (not SQLite)."""
    pgbouncer: bool = False
    """Behind PgBouncer in transaction mode: no server-side prepared statement cache."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TelegramSettings:
    token: str = field(repr=False)
    api_url: str
    rate_limit: float
    """Messages per second for the whole bot, across every worker."""
    paid_rate_limit: float
    """Messages per second for broadcasts with ``allow_paid_broadcast`` (Telegram: ≤ 1000)."""
    rate_margin: float
    """Share of a second added to each second's worth of send slots, in ``[0, 0.5)``: slots
    are ``(1 + rate_margin) / rate`` apart, so jitter on the way to Telegram is absorbed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BotSettings:
    """A bot the service sends with: ``telegram.token`` (named ``default``) or one of ``bots:``;
    what it leaves out is the ``telegram:`` section's."""

    name: str
    """``[a-z0-9_-]{1,32}``: how requests, metrics and logs name it."""
    token: str = field(repr=False)
    rate_limit: float
    paid_rate_limit: float
    api_url: str

    @property
    def bot_id(self) -> int:
        """Telegram's id of the bot: the token's digits before the colon."""
        return int(self.token.split(":", 1)[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsSettings:
    url: str
    """Empty: the service runs an embedded nats-server."""
    ack_wait: float
    """Seconds a worker may hold a job without a sign of life before it goes to another."""
    prefix: str
    """Names the streams (``<PREFIX>_JOBS``...): services sharing a NATS need different ones."""
    replicas: int = 1
    """Servers of a JetStream cluster holding each stream, KV bucket and object store (1-5)."""
    creds_file: Path | None = None
    """A ``.creds`` file (user JWT + NKey seed) or an NKey seed file."""
    user: str = ""
    password: str = field(default="", repr=False)
    tls_ca_file: Path | None = None
    """PEM CA bundle that signed the NATS servers' certificates."""
    tls_cert_file: Path | None = None
    """Client certificate (with ``tls_key_file``) for servers that verify clients."""
    tls_key_file: Path | None = None


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiToken:
    """One accepted API token, the name it is known by in logs and records, and its grants.

    A ``name:token`` or bare token (and ``server.api_token``) has every scope on every bot."""

    name: str
    """Given as ``name:token``, else ``token-`` and the first 12 hex digits of its SHA-256."""
    token: str = field(repr=False)
    scopes: frozenset[str] = SCOPES
    bots: tuple[str, ...] = (ALL_BOTS,)
    """Bot names, or ``("*",)`` for every bot."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    host: str
    port: int
    grpc_port: int
    api_tokens: tuple[ApiToken, ...] = field(repr=False)
    max_user_ids: int
    max_body_bytes: int
    sse_heartbeat: float = 15.0
    """Seconds between ``: heartbeat`` comments on an idle Server-Sent Events stream."""
    tls_cert_file: Path | None = None
    """PEM certificate chain; with ``tls_key_file``, both listeners serve TLS only."""
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    """PEM CA bundle: clients must present a certificate it signed (mutual TLS)."""
    allowed_networks: tuple[IpNetwork, ...] = ()
    """Client addresses served (empty: everyone); others get 403 / PERMISSION_DENIED."""
    trusted_proxies: tuple[IpNetwork, ...] = ()
    """Peers whose ``X-Forwarded-For`` is believed."""
    requests_per_second: float = 50.0
    """Per API token, burst twice that; 0: no limit."""
    max_watchers: int = 1000
    """Open WatchBroadcast and SSE streams per server process."""
    max_pending_recipients: int = 10_000_000
    """Recipients not yet final, over all broadcasts, above which a send is refused."""
    shutdown_grace: float = 20.0
    """Seconds from SIGTERM to exit, whatever clients do."""
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    """``server.secret_key``: the keys sealing bot tokens stored through the API, newest
    first (the first seals, every one opens: a rotation lists the new key first)."""
    public_url: str = ""
    """The service's address as its users' browsers reach it (no trailing ``/``): tracked
    links point at ``{public_url}/c/{code}``; empty: ``track_clicks`` is refused."""

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings:
    """The completion webhook (see :mod:`tgbroadcast.core.background.webhooks`)."""

    secret: str = field(repr=False)
    """HMAC-SHA256 key of ``X-Tgbroadcast-Signature``; empty: ``callback_url`` is refused."""
    max_attempts: int = 8
    timeout: float = 10.0
    """Seconds one POST may take."""
    backoff_base: float = 1.0
    """Seconds; retry n waits a random time up to ``min(backoff_cap, backoff_base * 2**n)``."""
    backoff_cap: float = 300.0
    poll_interval: float = 1.0
    """Seconds between looks for finished broadcasts whose webhook is due."""
    allow_private_networks: bool = False
    """Let ``callback_url`` reach loopback, private, link-local and other internal addresses."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackingSettings:
    """Click tracking (``track_clicks``)."""

    retention_days: float = 90.0
    """Days after a broadcast started sending its tracked links keep redirecting and
    counting."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    concurrency: int
    """Sends in flight per worker for free broadcasts."""
    paid_concurrency: int
    """Sends in flight per worker for paid broadcasts: about the paid rate times a send's
    round trip (Telegram's answer plus recording it), so 128 carries 1000/s up to 128 ms."""
    max_attempts: int
    content_error_threshold: int
    backoff_base: float
    """Seconds; attempt n waits a random time up to ``min(backoff_cap, backoff_base * 2**n)``."""
    backoff_cap: float
    metrics_port: int
    """Where a standalone worker serves /metrics (0: not served; run/server use server.port)."""
    park_after: float = 60.0
    """Seconds: a 429 whose ``retry_after`` is longer parks the bot's sending — jobs given
    back until it ends, instead of held waiting."""


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    """What the service commands write to stderr (see :mod:`tgbroadcast.core.logs`)."""

    level: LogLevel = "INFO"
    """The least severe level written; ``--log-level`` overrides it."""
    format: LogFormat = "text"
    """``text``: ``time level logger message key=value ...``; ``json``: one JSON object a line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    data_dir: Path
    database: DatabaseSettings
    telegram: TelegramSettings
    nats: NatsSettings
    server: ServerSettings
    worker: WorkerSettings
    webhook: WebhookSettings = field(default_factory=lambda: WebhookSettings(secret=""))
    log: LogSettings = field(default_factory=LogSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    bots: tuple[BotSettings, ...] = ()
    """The configured bots: ``telegram.token`` as ``default`` (when set), then ``bots:``."""

    @property
    def nats_url_file(self) -> Path:
        """Where the embedded nats-server's URL is written for workers on this machine."""
        return self.data_dir / "nats" / "url"

    def secrets(self) -> tuple[str, ...]:
        """Every secret of the settings, for the logs to mask: bot and API tokens, the NATS
        password, the keys bots' tokens are sealed with."""
        return (
            self.telegram.token,
            self.nats.password,
            *(t.token for t in self.server.api_tokens),
            *(bot.token for bot in self.bots),
            *self.server.secret_keys,
        )

    def require_api_tokens(self) -> tuple[ApiToken, ...]:
        if not self.server.api_tokens:
            raise ConfigError(
                "server.api_token", "is required to serve the API (or server.api_tokens)"
            )
        return self.server.api_tokens

    def bot(self, name: str) -> BotSettings | None:
        """The configured bot called ``name``, if any."""
        return next((bot for bot in self.bots if bot.name == name), None)

    def require_bots(self) -> None:
        """A process that sends needs a bot: ``telegram.token``, ``bots:``, or
        ``server.secret_key`` (bots created through the API, perhaps later)."""
        if not self.bots and not self.server.secret_keys:
            raise ConfigError(
                "telegram.token",
                "is required to send (the token from @BotFather), or bots: (several bots), "
                "or server.secret_key (bots created through the API)",
            )
