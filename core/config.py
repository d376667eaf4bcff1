"""Settings: built once from ``config/config.yaml`` and the environment, then passed explicitly.

Precedence: built-in defaults < the YAML file < ``TGB_<SECTION>_<KEY>`` environment variables
(``TGB_DATA_DIR`` for the top-level key). Every value is validated on load, and a bad one fails with
a :class:`~tgbroadcast.core.domain.errors.ConfigError` naming its key. Secrets (the bot token, the
API tokens) never appear in a ``repr`` or an error message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from tgbroadcast.core.domain.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config/config.yaml")
ENV_PREFIX = "TGB_"

BOT_TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseSettings:
    url: str
    """A SQLAlchemy async URL: ``sqlite+aiosqlite``, ``postgresql+asyncpg`` or ``mysql+asyncmy``."""


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
class NatsSettings:
    url: str
    """Empty: the service runs an embedded nats-server."""
    ack_wait: float
    """Seconds a worker may hold a job without a sign of life before it goes to another."""
    prefix: str
    """Names the streams (``<PREFIX>_JOBS``...): services sharing a NATS need different ones."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    host: str
    port: int
    grpc_port: int
    api_tokens: tuple[str, ...] = field(repr=False)
    max_user_ids: int
    max_body_bytes: int
    sse_heartbeat: float = 15.0
    """Seconds between ``: heartbeat`` comments on an idle Server-Sent Events stream."""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    data_dir: Path
    database: DatabaseSettings
    telegram: TelegramSettings
    nats: NatsSettings
    server: ServerSettings
    worker: WorkerSettings
    webhook: WebhookSettings = field(default_factory=lambda: WebhookSettings(secret=""))

    @property
    def nats_url_file(self) -> Path:
        """Where the embedded nats-server's URL is written for workers on this machine."""
        return self.data_dir / "nats" / "url"

    def require_api_tokens(self) -> tuple[str, ...]:
        if not self.server.api_tokens:
            raise ConfigError("server.api_token", "is required to serve the API")
        return self.server.api_tokens

    def require_bot_token(self) -> str:
        if not self.telegram.token:
            raise ConfigError("telegram.token", "is required to send (the token from @BotFather)")
        return self.telegram.token


DEFAULTS: dict[str, dict[str, Any]] = {
    "": {"data_dir": "./data"},
    "database": {"dsn": ""},
    "telegram": {
        "token": "",
        "api_url": "https://api.telegram.org",
        "rate_limit": 30,
        "paid_rate_limit": 1000,
        "rate_margin": 0.04,
    },
    "nats": {"url": "", "ack_wait": 30, "prefix": "tgb"},
    "server": {
        "host": "127.0.0.1",
        "port": 8080,
        "grpc_port": 50051,
        "api_token": "",
        "max_user_ids": 1_000_000,
        "max_body_bytes": 64 * 1024 * 1024,
        "sse_heartbeat": 15,
    },
    "worker": {
        "concurrency": 32,
        "paid_concurrency": 128,
        "max_attempts": 5,
        "content_error_threshold": 5,
        "backoff_base": 0.5,
        "backoff_cap": 30,
        "metrics_port": 0,
    },
    "webhook": {
        "secret": "",
        "max_attempts": 8,
        "timeout": 10,
        "backoff_base": 1,
        "backoff_cap": 300,
        "poll_interval": 1,
    },
}


def load_settings(
    path: Path | None = None, *, environ: Mapping[str, str], base_dir: Path | None = None
) -> Settings:
    """Read ``path`` (or ``config/config.yaml`` when present), apply ``environ``, validate.

    An explicitly given ``path`` must exist; the default one may be absent. Relative paths
    (``data_dir``, SQLite files) are taken from ``base_dir`` (the working directory).
    """
    base = base_dir or Path.cwd()
    raw = _read_yaml(path, base)
    values = {section: dict(keys) for section, keys in DEFAULTS.items()}
    _merge_file(values, raw)
    _merge_env(values, environ)
    return _build(values, base)


def _read_yaml(path: Path | None, base: Path) -> Mapping[str, Any]:
    explicit = path is not None
    file = path if path is not None else DEFAULT_CONFIG_PATH
    if not file.is_absolute():
        file = base / file
    if not file.exists():
        if explicit:
            raise ConfigError("--config", f"file {file} does not exist")
        return {}
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError("--config", f"{file} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("--config", f"{file} must hold a mapping of sections")
    return loaded


def _merge_file(values: dict[str, dict[str, Any]], raw: Mapping[str, Any]) -> None:
    for key, value in raw.items():
        if key in DEFAULTS[""]:
            values[""][key] = value
            continue
        if key not in DEFAULTS:
            raise ConfigError(str(key), "is not a known setting")
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(str(key), "must be a mapping of keys")
        for sub, sub_value in value.items():
            if sub not in DEFAULTS[key]:
                raise ConfigError(f"{key}.{sub}", "is not a known setting")
            values[key][sub] = sub_value


def _merge_env(values: dict[str, dict[str, Any]], environ: Mapping[str, str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if rest in DEFAULTS[""]:
            values[""][rest] = value
            continue
        section, _, key = rest.partition("_")
        if section not in DEFAULTS or section == "":
            continue  # not ours (e.g. TGB_TEST_*): left alone
        if key not in DEFAULTS[section]:
            raise ConfigError(f"{section}.{key}", f"is not a known setting (from ${name})")
        values[section][key] = value


def _build(values: dict[str, dict[str, Any]], base: Path) -> Settings:
    data_dir = Path(_string(values[""], "data_dir", "data_dir"))
    if not data_dir.is_absolute():
        data_dir = base / data_dir
    telegram = values["telegram"]
    server = values["server"]
    worker = values["worker"]
    return Settings(
        data_dir=data_dir,
        database=DatabaseSettings(
            url=database_url(_string(values["database"], "dsn", "database.dsn"), data_dir)
        ),
        telegram=TelegramSettings(
            token=_bot_token(telegram["token"]),
            api_url=_http_url(telegram["api_url"], "telegram.api_url"),
            rate_limit=_number(telegram["rate_limit"], "telegram.rate_limit", low=0.1),
            paid_rate_limit=_number(
                telegram["paid_rate_limit"], "telegram.paid_rate_limit", low=0.1
            ),
            rate_margin=_rate_margin(telegram["rate_margin"]),
        ),
        nats=NatsSettings(
            url=_nats_url(values["nats"]["url"]),
            ack_wait=_number(values["nats"]["ack_wait"], "nats.ack_wait", low=1.0),
            prefix=_prefix(values["nats"]["prefix"]),
        ),
        server=ServerSettings(
            host=_string(server, "host", "server.host") or "127.0.0.1",
            port=_integer(server["port"], "server.port", low=0, high=65535),
            grpc_port=_integer(server["grpc_port"], "server.grpc_port", low=0, high=65535),
            api_tokens=_api_tokens(server["api_token"]),
            max_user_ids=_integer(server["max_user_ids"], "server.max_user_ids", low=1),
            max_body_bytes=_integer(server["max_body_bytes"], "server.max_body_bytes", low=1024),
            sse_heartbeat=_number(server["sse_heartbeat"], "server.sse_heartbeat", low=0.01),
        ),
        worker=WorkerSettings(
            concurrency=_integer(worker["concurrency"], "worker.concurrency", low=1, high=10_000),
            paid_concurrency=_integer(
                worker["paid_concurrency"],
                "worker.paid_concurrency",
                low=1,
                high=10_000,
            ),
            max_attempts=_integer(worker["max_attempts"], "worker.max_attempts", low=1, high=100),
            content_error_threshold=_integer(
                worker["content_error_threshold"],
                "worker.content_error_threshold",
                low=1,
            ),
            backoff_base=_number(worker["backoff_base"], "worker.backoff_base", low=0.001),
            backoff_cap=_number(worker["backoff_cap"], "worker.backoff_cap", low=0.001),
            metrics_port=_integer(worker["metrics_port"], "worker.metrics_port", low=0, high=65535),
        ),
        webhook=_webhook(values["webhook"]),
    )


def _webhook(section: Mapping[str, Any]) -> WebhookSettings:
    secret = "" if section["secret"] is None else str(section["secret"]).strip()
    if secret and len(secret) < 16:
        # Never echo the value.
        raise ConfigError("webhook.secret", "must be at least 16 characters")
    return WebhookSettings(
        secret=secret,
        max_attempts=_integer(section["max_attempts"], "webhook.max_attempts", low=1, high=100),
        timeout=_number(section["timeout"], "webhook.timeout", low=0.01),
        backoff_base=_number(section["backoff_base"], "webhook.backoff_base", low=0.001),
        backoff_cap=_number(section["backoff_cap"], "webhook.backoff_cap", low=0.001),
        poll_interval=_number(section["poll_interval"], "webhook.poll_interval", low=0.01),
    )


def _string(section: Mapping[str, Any], name: str, key: str) -> str:
    value = section[name]
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(key, "must be a string")
    return str(value).strip()


def _integer(value: Any, key: str, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(key, "must be a whole number")
    try:
        number = int(str(value).strip().replace("_", ""))
    except ValueError:
        raise ConfigError(key, f"must be a whole number, not {value!r}") from None
    if number < low or (high is not None and number > high):
        upper = f" and at most {high}" if high is not None else ""
        raise ConfigError(key, f"must be at least {low}{upper}, not {number}")
    return number


def _number(value: Any, key: str, *, low: float) -> float:
    if isinstance(value, bool):
        raise ConfigError(key, "must be a number")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ConfigError(key, f"must be a number, not {value!r}") from None
    if not number >= low:
        raise ConfigError(key, f"must be at least {low}, not {number}")
    return number


def _rate_margin(value: Any) -> float:
    margin = _number(value, "telegram.rate_margin", low=0.0)
    if margin >= 0.5:
        raise ConfigError("telegram.rate_margin", f"must be below 0.5, not {margin}")
    return margin


def _bot_token(value: Any) -> str:
    token = "" if value is None else str(value).strip()
    if token and not BOT_TOKEN_RE.match(token):
        # Never echo the value: it may be a real token with a typo.
        raise ConfigError("telegram.token", "must look like 123456789:AAE... (from @BotFather)")
    return token


def _api_tokens(value: Any) -> tuple[str, ...]:
    items: list[Any]
    if value is None:
        items = []
    elif isinstance(value, list):
        items = value
    else:
        items = str(value).split(",")
    tokens = tuple(str(item).strip() for item in items if str(item).strip())
    for token in tokens:
        if len(token) < 16:
            raise ConfigError("server.api_token", "each token must be at least 16 characters")
        if any(ch.isspace() for ch in token):
            raise ConfigError("server.api_token", "tokens must not contain white space")
    return tokens


def _http_url(value: Any, key: str) -> str:
    url = "" if value is None else str(value).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(key, f"must be an http(s) URL, not {url!r}")
    return url


def _prefix(value: Any) -> str:
    prefix = "" if value is None else str(value).strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", prefix):
        raise ConfigError("nats.prefix", "must be 1-32 letters, digits, '_' or '-'")
    return prefix


def _nats_url(value: Any) -> str:
    url = "" if value is None else str(value).strip()
    if not url:
        return ""
    for server in url.split(","):
        parts = urlsplit(server.strip())
        if parts.scheme not in ("nats", "tls", "ws", "wss") or not parts.netloc:
            raise ConfigError(
                "nats.url", "must be nats://host:port (comma-separated for a cluster)"
            )
    return url


_GO_MYSQL_DSN = re.compile(
    r"^(?:(?P<user>[^:@/]*)(?::(?P<password>[^@]*))?@)?"
    r"(?P<proto>tcp|unix)\((?P<addr>[^)]*)\)/(?P<db>[^?]*)(?:\?(?P<query>.*))?$"
)

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mariadb": "mysql+asyncmy",
}
_SUPPORTED = {"sqlite+aiosqlite", "postgresql+asyncpg", "mysql+asyncmy"}


def database_url(dsn: str, data_dir: Path) -> str:
    """Turn ``database.dsn`` into a SQLAlchemy async URL.

    Accepts SQLAlchemy URLs (a bare ``postgresql://``/``mysql://``/``sqlite://`` gets the async
    driver), and the Go-style MySQL DSN ``user:pass@tcp(host:3306)/db``. Empty: SQLite in
    ``data_dir``.
    """
    if not dsn:
        return f"sqlite+aiosqlite:///{data_dir / 'tgbroadcast.db'}"
    go = _GO_MYSQL_DSN.match(dsn)
    if go:
        return _from_go_mysql(go)
    try:
        url = make_url(dsn)
    except ArgumentError:
        raise ConfigError(
            "database.dsn", "is not a database URL (e.g. postgresql+asyncpg://host/db)"
        ) from None
    drivername = _DRIVERS.get(url.drivername, url.drivername)
    if drivername not in _SUPPORTED:
        raise ConfigError(
            "database.dsn",
            f"driver {url.drivername!r} is not supported; use one of {sorted(_SUPPORTED)}",
        )
    url = url.set(drivername=drivername)
    if drivername == "mysql+asyncmy" and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url.render_as_string(hide_password=False)


def _from_go_mysql(match: re.Match[str]) -> str:
    if match["proto"] != "tcp":
        raise ConfigError("database.dsn", "only tcp(...) addresses are supported in Go-style DSNs")
    host, _, port = match["addr"].partition(":")
    query = {
        unquote(k): unquote(v)
        for k, _, v in (p.partition("=") for p in (match["query"] or "").split("&") if p)
    }
    # Go driver options that mean nothing to asyncmy.
    for go_only in ("parseTime", "loc", "timeout", "readTimeout", "writeTimeout"):
        query.pop(go_only, None)
    query.setdefault("charset", "utf8mb4")
    url = URL.create(
        "mysql+asyncmy",
        username=unquote(match["user"]) if match["user"] else None,
        password=unquote(match["password"]) if match["password"] is not None else None,
        host=host or "127.0.0.1",
        port=int(port) if port else 3306,
        database=unquote(match["db"]),
        query=query,
    )
    return url.render_as_string(hide_password=False)
