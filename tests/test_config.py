"""Settings (:mod:`tgbroadcast.core.config`): file, then environment, each value checked
with a message naming its key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tgbroadcast.core.config import database_url, load_settings
from tgbroadcast.core.domain.errors import ConfigError

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(None, environ={}, base_dir=tmp_path)
    assert settings.data_dir == tmp_path / "data"
    assert settings.database.url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'tgbroadcast.db'}"
    assert settings.telegram.api_url == "https://api.telegram.org"
    assert settings.server.port == 8080
    assert settings.server.grpc_port == 50051
    assert settings.nats.url == ""
    assert settings.server.api_tokens == ()


def test_the_shipped_config_file_loads(tmp_path: Path) -> None:
    shipped = Path(__file__).parent.parent / "config" / "config.yaml"
    settings = load_settings(shipped, environ={}, base_dir=tmp_path)
    assert settings.server.port == 8080
    assert settings.telegram.rate_limit == 30


def test_file_then_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
data_dir: /var/lib/tgb
database:
  dsn: postgresql://app:secret@db:5432/tgb
telegram:
  token: "111:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
  api_url: http://127.0.0.1:8081/
nats:
  url: nats://a:4222,nats://b:4222
server:
  port: 9000
  api_token: [first-token-0123456789, second-token-0123456789]
""",
    )
    settings = load_settings(
        path,
        environ={
            "TGB_SERVER_PORT": "9100",
            "TGB_TELEGRAM_TOKEN": BOT_TOKEN,
            "TGB_SERVER_GRPC_PORT": "0",
            "TGB_TEST_SOMETHING": "ignored",
            "HOME": "/root",
        },
        base_dir=tmp_path,
    )
    assert settings.data_dir == Path("/var/lib/tgb")
    assert settings.database.url == "postgresql+asyncpg://app:secret@db:5432/tgb"
    assert settings.telegram.token == BOT_TOKEN
    assert settings.telegram.api_url == "http://127.0.0.1:8081"
    assert settings.nats.url == "nats://a:4222,nats://b:4222"
    assert settings.server.port == 9100
    assert settings.server.grpc_port == 0
    assert [t.token for t in settings.server.api_tokens] == [
        "first-token-0123456789",
        "second-token-0123456789",
    ]


def test_comma_separated_api_tokens_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        environ={"TGB_SERVER_API_TOKEN": "old-token-0123456789, new-token-0123456789"},
        base_dir=tmp_path,
    )
    assert [t.token for t in settings.require_api_tokens()] == [
        "old-token-0123456789",
        "new-token-0123456789",
    ]


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        environ={"TGB_TELEGRAM_TOKEN": BOT_TOKEN, "TGB_SERVER_API_TOKEN": "api-token-0123456789"},
        base_dir=tmp_path,
    )
    text = repr(settings)
    assert "AAHdqTcv" not in text
    assert "api-token-0123456789" not in text


def test_every_secret_is_given_to_the_logs_to_mask(tmp_path: Path) -> None:
    """What the command line and ``make demo`` hand ``configure_logging``."""
    environ = {
        "TGB_TELEGRAM_TOKEN": BOT_TOKEN,
        "TGB_SERVER_API_TOKENS": "api-token-0123456789,second-token-012345678",
        "TGB_NATS_USER": "broadcaster",
        "TGB_NATS_PASSWORD": "nats-password",
        "TGB_SERVER_SECRET_KEY": "secret-key-0123456789abcdefghijklmnopq",
    }
    secrets = load_settings(None, environ=environ, base_dir=tmp_path).secrets()
    expected = {BOT_TOKEN, "nats-password", "secret-key-0123456789abcdefghijklmnopq"}
    assert expected | {"api-token-0123456789", "second-token-012345678"} <= set(secrets)


def test_database_pool_settings_from_file_and_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
database:
  dsn: postgresql://app@db:5432/tgb
  pool_size: 7
  max_overflow: 3
  statement_timeout: 15
""",
    )
    environ = {"TGB_DATABASE_POOL_TIMEOUT": "2.5", "TGB_DATABASE_PGBOUNCER": "true"}
    database = load_settings(path, environ=environ, base_dir=tmp_path).database
    assert (database.pool_size, database.max_overflow) == (7, 3)
    assert (database.pool_timeout, database.statement_timeout) == (2.5, 15.0)
    assert database.pgbouncer is True
    environ = {"TGB_DATABASE_POOL_SIZE": "20", "TGB_DATABASE_STATEMENT_TIMEOUT": "0"}
    database = load_settings(path, environ=environ, base_dir=tmp_path).database
    assert (database.pool_size, database.statement_timeout, database.pgbouncer) == (20, 0.0, False)


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"TGB_SERVER_PORT": "http"}, "server.port"),
        ({"TGB_SERVER_PORT": "70000"}, "server.port"),
        ({"TGB_SERVER_GRPC_PORT": "-1"}, "server.grpc_port"),
        ({"TGB_TELEGRAM_TOKEN": "not-a-token"}, "telegram.token"),
        ({"TGB_TELEGRAM_API_URL": "ftp://x"}, "telegram.api_url"),
        ({"TGB_TELEGRAM_RATE_LIMIT": "0"}, "telegram.rate_limit"),
        ({"TGB_TELEGRAM_RATE_MARGIN": "-0.01"}, "telegram.rate_margin"),
        ({"TGB_TELEGRAM_RATE_MARGIN": "0.5"}, "telegram.rate_margin"),
        ({"TGB_TELEGRAM_RATE_MARGIN": "nan"}, "telegram.rate_margin"),
        ({"TGB_TELEGRAM_RATE_MARGIN": "4%"}, "telegram.rate_margin"),
        ({"TGB_NATS_URL": "localhost:4222"}, "nats.url"),
        ({"TGB_DATABASE_DSN": "oracle://x/y"}, "database.dsn"),
        ({"TGB_DATABASE_POOL_SIZE": "0"}, "database.pool_size"),
        ({"TGB_DATABASE_MAX_OVERFLOW": "-1"}, "database.max_overflow"),
        ({"TGB_DATABASE_POOL_TIMEOUT": "0"}, "database.pool_timeout"),
        ({"TGB_DATABASE_STATEMENT_TIMEOUT": "-1"}, "database.statement_timeout"),
        ({"TGB_DATABASE_PGBOUNCER": "maybe"}, "database.pgbouncer"),
        ({"TGB_SERVER_API_TOKEN": "short"}, "server.api_token"),
        ({"TGB_SERVER_APITOKEN": "x"}, "server.apitoken"),
        ({"TGB_WORKER_CONCURRENCY": "0"}, "worker.concurrency"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, environ=environ, base_dir=tmp_path)
    assert raised.value.key == key
    assert str(raised.value).startswith(f"config {key}:")


def test_rate_margin(tmp_path: Path) -> None:
    default = load_settings(None, environ={}, base_dir=tmp_path)
    assert default.telegram.rate_margin == 0.015
    from_file = load_settings(
        write(tmp_path, "telegram:\n  rate_margin: 0.1\n"), environ={}, base_dir=tmp_path
    )
    assert from_file.telegram.rate_margin == 0.1
    for text, margin in [("0", 0.0), ("0.02", 0.02), ("0.499", 0.499)]:
        settings = load_settings(
            None, environ={"TGB_TELEGRAM_RATE_MARGIN": text}, base_dir=tmp_path
        )
        assert settings.telegram.rate_margin == margin
    with pytest.raises(ConfigError, match=r"^config telegram\.rate_margin: must be below 0\.5"):
        load_settings(None, environ={"TGB_TELEGRAM_RATE_MARGIN": "0.5"}, base_dir=tmp_path)


def test_bad_token_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, environ={"TGB_TELEGRAM_TOKEN": "123:short secret"}, base_dir=tmp_path)
    assert "short secret" not in str(raised.value)


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.prot: is not a known setting"):
        load_settings(write(tmp_path, "server:\n  prot: 1\n"), environ={}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"servr: is not a known setting"):
        load_settings(write(tmp_path, "servr:\n  port: 1\n"), environ={}, base_dir=tmp_path)


def test_missing_explicit_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", environ={}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "server: [\n"), environ={}, base_dir=tmp_path)


def test_role_requirements(tmp_path: Path) -> None:
    settings = load_settings(None, environ={}, base_dir=tmp_path)
    with pytest.raises(ConfigError) as raised:
        settings.require_bots()
    assert raised.value.key == "telegram.token"
    for environ in (
        {"TGB_BOTS": '[{"name": "shop", "token": "111111111:AAshopTokenSecretPart_0123"}]'},
        {"TGB_SERVER_SECRET_KEY": "k" * 32},
    ):
        load_settings(None, environ=environ, base_dir=tmp_path).require_bots()
    with pytest.raises(ConfigError) as raised:
        settings.require_api_tokens()
    assert raised.value.key == "server.api_token"


@pytest.mark.parametrize(
    ("dsn", "url"),
    [
        (
            "user:pass@tcp(db.local:3306)/broadcasts",
            "mysql+asyncmy://user:pass@db.local:3306/broadcasts?charset=utf8mb4",
        ),
        (
            "root@tcp(127.0.0.1)/test?parseTime=true",
            "mysql+asyncmy://root@127.0.0.1:3306/test?charset=utf8mb4",
        ),
        (
            "user:p%40ss@tcp(h:3307)/db?charset=utf8",
            "mysql+asyncmy://user:p%40ss@h:3307/db?charset=utf8",
        ),
        ("mysql://u@h/db", "mysql+asyncmy://u@h/db?charset=utf8mb4"),
        ("mysql+asyncmy://u@h/db?charset=utf8mb4", "mysql+asyncmy://u@h/db?charset=utf8mb4"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_urls(dsn: str, url: str) -> None:
    assert database_url(dsn, Path("/data")) == url


def test_tls_files_go_together_and_must_exist(tmp_path: Path) -> None:
    for name in ("server.crt", "server.key", "ca.pem"):
        (tmp_path / name).write_text("PEM", encoding="utf-8")
    cert, key, ca = (
        "TGB_SERVER_TLS_CERT_FILE",
        "TGB_SERVER_TLS_KEY_FILE",
        "TGB_SERVER_TLS_CLIENT_CA_FILE",
    )
    settings = load_settings(
        None, environ={cert: "server.crt", key: "server.key", ca: "ca.pem"}, base_dir=tmp_path
    )
    assert settings.server.tls
    assert settings.server.tls_cert_file == tmp_path / "server.crt"  # relative to the base
    assert settings.server.tls_client_ca_file == tmp_path / "ca.pem"
    assert not load_settings(None, environ={}, base_dir=tmp_path).server.tls
    refusals = [
        ({cert: "server.crt"}, r"server\.tls_key_file: is required too"),
        ({key: "server.key"}, r"server\.tls_cert_file: is required too"),
        ({ca: "ca.pem"}, r"server\.tls_client_ca_file: needs server\.tls_cert_file"),
        (
            {cert: "missing.crt", key: "server.key"},
            r"server\.tls_cert_file: file .* does not exist",
        ),
    ]
    for environ, message in refusals:
        with pytest.raises(ConfigError, match=message):
            load_settings(None, environ=environ, base_dir=tmp_path)
