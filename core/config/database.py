"""``database.dsn`` into a SQLAlchemy async URL (SQLAlchemy URLs and Go-style MySQL DSNs)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from tgbroadcast.core.domain.errors import ConfigError

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
