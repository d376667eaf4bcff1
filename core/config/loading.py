"""Reading the settings: built-in defaults < the YAML file < ``TGB_<SECTION>_<KEY>`` environment
variables, each value validated, a bad one failing with a
:class:`~tgbroadcast.core.domain.errors.ConfigError` naming its key (never its secret value)."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tgbroadcast.core.config.bots import configured_bots
from tgbroadcast.core.config.database import database_url
from tgbroadcast.core.config.settings import (
    BOT_TOKEN_RE,
    LOG_FORMATS,
    LOG_LEVELS,
    DatabaseSettings,
    IpNetwork,
    LogFormat,
    LogLevel,
    LogSettings,
    NatsSettings,
    ServerSettings,
    Settings,
    TelegramSettings,
    TrackingSettings,
    WebhookSettings,
    WorkerSettings,
)
from tgbroadcast.core.config.tokens import api_tokens
from tgbroadcast.core.domain.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config/config.yaml")
ENV_PREFIX = "TGB_"

DEFAULTS: dict[str, dict[str, Any]] = {
    "": {"data_dir": "./data", "bots": ""},
    "database": {
        "dsn": "",
        "pool_size": 10,
        "max_overflow": 10,
        "pool_timeout": 30,
        "statement_timeout": 0,
        "pgbouncer": False,
    },
    "telegram": {
        "token": "",
        "api_url": "https://api.telegram.org",
        "rate_limit": 30,
        "paid_rate_limit": 1000,
        "rate_margin": 0.015,
    },
    "nats": {
        "url": "",
        "ack_wait": 30,
        "prefix": "tgb",
        "replicas": 1,
        "creds_file": "",
        "user": "",
        "password": "",
        "tls_ca_file": "",
        "tls_cert_file": "",
        "tls_key_file": "",
    },
    "server": {
        "host": "127.0.0.1",
        "port": 8080,
        "grpc_port": 50051,
        "api_token": "",
        "api_tokens": "",
        "secret_key": "",
        "max_user_ids": 1_000_000,
        "max_body_bytes": 64 * 1024 * 1024,
        "sse_heartbeat": 15,
        "tls_cert_file": "",
        "tls_key_file": "",
        "tls_client_ca_file": "",
        "allowed_networks": "",
        "trusted_proxies": "",
        "requests_per_second": 50,
        "max_watchers": 1000,
        "max_pending_recipients": 10_000_000,
        "shutdown_grace": 20,
        "public_url": "",
    },
    "worker": {
        "concurrency": 32,
        "paid_concurrency": 128,
        "max_attempts": 5,
        "content_error_threshold": 5,
        "backoff_base": 0.5,
        "backoff_cap": 30,
        "metrics_port": 0,
        "park_after": 60,
    },
    "webhook": {
        "secret": "",
        "max_attempts": 8,
        "timeout": 10,
        "backoff_base": 1,
        "backoff_cap": 300,
        "poll_interval": 1,
        "allow_private_networks": False,
    },
    "log": {"level": "INFO", "format": "text"},
    "tracking": {"retention_days": 90},
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
    telegram_settings = TelegramSettings(
        token=_bot_token(telegram["token"]),
        api_url=_http_url(telegram["api_url"], "telegram.api_url"),
        rate_limit=_number(telegram["rate_limit"], "telegram.rate_limit", low=0.1),
        paid_rate_limit=_number(telegram["paid_rate_limit"], "telegram.paid_rate_limit", low=0.1),
        rate_margin=_rate_margin(telegram["rate_margin"]),
    )
    return Settings(
        data_dir=data_dir,
        database=_database(values["database"], data_dir),
        telegram=telegram_settings,
        bots=configured_bots(
            values[""]["bots"], telegram_settings, base=base, number=_number, http_url=_http_url
        ),
        nats=_nats(values["nats"], base),
        server=_server(server, base),
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
            park_after=_number(worker["park_after"], "worker.park_after", low=0.001),
        ),
        webhook=_webhook(values["webhook"]),
        log=_log(values["log"]),
        tracking=TrackingSettings(
            retention_days=_number(
                values["tracking"]["retention_days"], "tracking.retention_days", low=0.001
            )
        ),
    )


def _database(section: Mapping[str, Any], data_dir: Path) -> DatabaseSettings:
    return DatabaseSettings(
        url=database_url(_string(section, "dsn", "database.dsn"), data_dir),
        pool_size=_integer(section["pool_size"], "database.pool_size", low=1, high=1000),
        max_overflow=_integer(section["max_overflow"], "database.max_overflow", low=0, high=1000),
        pool_timeout=_number(section["pool_timeout"], "database.pool_timeout", low=0.001),
        statement_timeout=_number(
            section["statement_timeout"], "database.statement_timeout", low=0.0
        ),
        pgbouncer=_flag(section["pgbouncer"], "database.pgbouncer"),
    )


def _server(server: Mapping[str, Any], base: Path) -> ServerSettings:
    cert = _file(server["tls_cert_file"], "server.tls_cert_file", base)
    key = _file(server["tls_key_file"], "server.tls_key_file", base)
    client_ca = _file(server["tls_client_ca_file"], "server.tls_client_ca_file", base)
    if (cert is None) != (key is None):
        missing = "server.tls_key_file" if key is None else "server.tls_cert_file"
        raise ConfigError(missing, "is required too: TLS needs a certificate and its key")
    if client_ca is not None and cert is None:
        raise ConfigError(
            "server.tls_client_ca_file", "needs server.tls_cert_file and server.tls_key_file"
        )
    port = _integer(server["port"], "server.port", low=0, high=65535)
    grpc_port = _integer(server["grpc_port"], "server.grpc_port", low=0, high=65535)
    if port and port == grpc_port:
        raise ConfigError("server.grpc_port", f"must differ from server.port (both {port})")
    return ServerSettings(
        host=_string(server, "host", "server.host") or "127.0.0.1",
        port=port,
        grpc_port=grpc_port,
        api_tokens=api_tokens(server["api_token"], server["api_tokens"]),
        max_user_ids=_integer(server["max_user_ids"], "server.max_user_ids", low=1),
        max_body_bytes=_integer(server["max_body_bytes"], "server.max_body_bytes", low=1024),
        sse_heartbeat=_number(server["sse_heartbeat"], "server.sse_heartbeat", low=0.01),
        tls_cert_file=cert,
        tls_key_file=key,
        tls_client_ca_file=client_ca,
        allowed_networks=_networks(server["allowed_networks"], "server.allowed_networks"),
        trusted_proxies=_networks(server["trusted_proxies"], "server.trusted_proxies"),
        requests_per_second=_number(
            server["requests_per_second"], "server.requests_per_second", low=0.0
        ),
        max_watchers=_integer(server["max_watchers"], "server.max_watchers", low=1),
        max_pending_recipients=_integer(
            server["max_pending_recipients"], "server.max_pending_recipients", low=1
        ),
        shutdown_grace=_number(server["shutdown_grace"], "server.shutdown_grace", low=0.1),
        secret_keys=_secret_keys(server["secret_key"]),
        public_url=_http_url(server["public_url"], "server.public_url")
        if str(server["public_url"] or "").strip()
        else "",
    )


def _secret_keys(value: Any) -> tuple[str, ...]:
    """``server.secret_key``: one key, or several comma-separated (newest first) while a
    rotation re-seals the stored tokens; each at least 32 characters (never echoed)."""
    keys = tuple(_items(value))
    for index, key in enumerate(keys):
        if len(key) < MIN_SECRET_KEY_LENGTH:
            place = "" if len(keys) == 1 else f" (key {index + 1})"
            raise ConfigError(
                "server.secret_key", f"must be at least {MIN_SECRET_KEY_LENGTH} characters{place}"
            )
    return keys


MIN_SECRET_KEY_LENGTH = 32


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
        allow_private_networks=_flag(
            section["allow_private_networks"], "webhook.allow_private_networks"
        ),
    )


def _log(section: Mapping[str, Any]) -> LogSettings:
    levels: dict[str, LogLevel] = {name: name for name in LOG_LEVELS}
    level = levels.get(_string(section, "level", "log.level").upper())
    if level is None:
        raise ConfigError("log.level", f"must be one of {', '.join(LOG_LEVELS)}")
    formats: dict[str, LogFormat] = {name: name for name in LOG_FORMATS}
    log_format = formats.get(_string(section, "format", "log.format").lower())
    if log_format is None:
        raise ConfigError("log.format", f"must be one of {', '.join(LOG_FORMATS)}")
    return LogSettings(level=level, format=log_format)


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
    if not math.isfinite(number):  # inf, or a literal beyond a float (1e400)
        raise ConfigError(key, f"must be a finite number, not {value!r}")
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


def _items(value: Any) -> list[str]:
    """A YAML list, or comma-separated text (an environment variable), without blanks."""
    if value is None:
        return []
    items: list[Any] = value if isinstance(value, list) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def _networks(value: Any, key: str) -> tuple[IpNetwork, ...]:
    networks: list[IpNetwork] = []
    for item in _items(value):
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ConfigError(key, f"{item[:64]!r} is not a CIDR network: {exc}") from None
    return tuple(networks)


def _file(value: Any, key: str, base: Path) -> Path | None:
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    path = Path(text)
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise ConfigError(key, f"file {path} does not exist")
    return path


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(key, f"must be true or false, not {str(value)[:32]!r}")


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


def _nats(nats: dict[str, Any], base: Path) -> NatsSettings:
    url = _nats_url(nats["url"])
    replicas = _integer(nats["replicas"], "nats.replicas", low=1, high=5)
    if replicas > 1 and not url:
        raise ConfigError(
            "nats.replicas",
            "above 1 needs nats.url listing a JetStream cluster; the embedded nats-server is "
            "a single node",
        )
    user = _string(nats, "user", "nats.user")
    password = _string(nats, "password", "nats.password")
    if password and not user:
        raise ConfigError("nats.password", "is set without nats.user")
    cert = _file(nats["tls_cert_file"], "nats.tls_cert_file", base)
    key = _file(nats["tls_key_file"], "nats.tls_key_file", base)
    if (cert is None) != (key is None):
        raise ConfigError(
            "nats.tls_cert_file" if cert is None else "nats.tls_key_file",
            "must be set together with "
            + ("nats.tls_key_file" if cert is None else "nats.tls_cert_file"),
        )
    return NatsSettings(
        url=url,
        ack_wait=_number(nats["ack_wait"], "nats.ack_wait", low=1.0),
        prefix=_prefix(nats["prefix"]),
        replicas=replicas,
        creds_file=_file(nats["creds_file"], "nats.creds_file", base),
        user=user,
        password=password,
        tls_ca_file=_file(nats["tls_ca_file"], "nats.tls_ca_file", base),
        tls_cert_file=cert,
        tls_key_file=key,
    )


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
