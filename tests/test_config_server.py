"""The settings that make the API safe to expose (issue #11): TLS files, networks, limits,
named API tokens, the drain's grace and the webhook's private networks, each from the file and
from its ``TGB_`` variable, each bad value refused with a message naming its key."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

import pytest
import yaml

from tgbroadcast.core.config import DEFAULT_CONFIG_PATH, load_settings
from tgbroadcast.core.config.loading import DEFAULTS
from tgbroadcast.core.domain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "plain-token-0123456789"


def test_the_defaults_are_safe_and_documented(tmp_path: Path) -> None:
    settings = load_settings(None, environ={}, base_dir=tmp_path)
    server = settings.server
    assert not server.tls
    assert server.tls_client_ca_file is None
    assert server.allowed_networks == ()
    assert server.trusted_proxies == ()
    assert server.requests_per_second == 50
    assert server.max_watchers == 1000
    assert server.max_pending_recipients == 10_000_000
    assert server.shutdown_grace == 20
    assert settings.webhook.allow_private_networks is False


def test_every_setting_is_in_the_shipped_file_and_the_configuration_page() -> None:
    shipped = yaml.safe_load((ROOT / DEFAULT_CONFIG_PATH).read_text(encoding="utf-8"))
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    page += (ROOT / "docs" / "reports.md").read_text(encoding="utf-8")
    for section, keys in DEFAULTS.items():
        for key in keys:
            name = f"{section}.{key}" if section else key
            if section:
                assert key in (shipped.get(section) or {}), f"{name} is not in config.yaml"
            assert f"`{name}`" in page or f"`{key}`" in page, f"{name} is not documented"


def test_tls_files(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("PEM", encoding="utf-8")
    server = load_settings(
        None,
        environ={
            "TGB_SERVER_TLS_CERT_FILE": "cert.pem",
            "TGB_SERVER_TLS_KEY_FILE": str(tmp_path / "key.pem"),
            "TGB_SERVER_TLS_CLIENT_CA_FILE": "ca.pem",
        },
        base_dir=tmp_path,
    ).server
    assert server.tls
    assert server.tls_cert_file == tmp_path / "cert.pem"
    assert server.tls_key_file == tmp_path / "key.pem"
    assert server.tls_client_ca_file == tmp_path / "ca.pem"


@pytest.mark.parametrize(
    ("environ", "key", "words"),
    [
        ({"TGB_SERVER_TLS_CERT_FILE": "cert.pem"}, "server.tls_key_file", "key"),
        ({"TGB_SERVER_TLS_KEY_FILE": "cert.pem"}, "server.tls_cert_file", "certificate"),
        ({"TGB_SERVER_TLS_CLIENT_CA_FILE": "cert.pem"}, "server.tls_client_ca_file", "needs"),
        ({"TGB_SERVER_TLS_CERT_FILE": "absent.pem"}, "server.tls_cert_file", "does not exist"),
        ({"TGB_SERVER_ALLOWED_NETWORKS": "10.0.0.0/33"}, "server.allowed_networks", "CIDR"),
        ({"TGB_SERVER_ALLOWED_NETWORKS": "10.0.0.1/8"}, "server.allowed_networks", "host bits"),
        ({"TGB_SERVER_TRUSTED_PROXIES": "proxy.local"}, "server.trusted_proxies", "CIDR"),
        ({"TGB_SERVER_REQUESTS_PER_SECOND": "-1"}, "server.requests_per_second", "at least"),
        ({"TGB_SERVER_MAX_WATCHERS": "0"}, "server.max_watchers", "at least"),
        ({"TGB_SERVER_MAX_PENDING_RECIPIENTS": "x"}, "server.max_pending_recipients", "whole"),
        ({"TGB_SERVER_SHUTDOWN_GRACE": "0"}, "server.shutdown_grace", "at least"),
        ({"TGB_SERVER_SHUTDOWN_GRACE": "inf"}, "server.shutdown_grace", "finite"),
        ({"TGB_SERVER_REQUESTS_PER_SECOND": "inf"}, "server.requests_per_second", "finite"),
        ({"TGB_NATS_ACK_WAIT": "1e400"}, "nats.ack_wait", "finite"),
        ({"TGB_TELEGRAM_RATE_LIMIT": "Infinity"}, "telegram.rate_limit", "finite"),
        (
            {"TGB_SERVER_PORT": "9000", "TGB_SERVER_GRPC_PORT": "9000"},
            "server.grpc_port",
            "must differ from server.port",
        ),
        ({"TGB_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "maybe"}, "webhook.allow_private_networks", "true"),
    ],
)
def test_bad_values_name_their_key(
    tmp_path: Path, environ: dict[str, str], key: str, words: str
) -> None:
    (tmp_path / "cert.pem").write_text("PEM", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_settings(None, environ=environ, base_dir=tmp_path)
    assert raised.value.key == key
    assert words in str(raised.value)


def test_networks_ipv4_and_ipv6(tmp_path: Path) -> None:
    server = load_settings(
        None,
        environ={
            "TGB_SERVER_ALLOWED_NETWORKS": "10.0.0.0/8, 192.168.1.7 ,2001:db8::/32,::1",
            "TGB_SERVER_TRUSTED_PROXIES": "127.0.0.1",
        },
        base_dir=tmp_path,
    ).server
    assert server.allowed_networks == tuple(
        ipaddress.ip_network(n) for n in ("10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32", "::1")
    )
    assert server.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),)


def test_networks_as_a_yaml_list(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("server:\n  allowed_networks: [10.0.0.0/8, 'fd00::/8']\n", encoding="utf-8")
    server = load_settings(config, environ={}, base_dir=tmp_path).server
    assert [str(n) for n in server.allowed_networks] == ["10.0.0.0/8", "fd00::/8"]


def test_named_and_fingerprinted_tokens(tmp_path: Path) -> None:
    server = load_settings(
        None,
        environ={
            "TGB_SERVER_API_TOKEN": TOKEN,
            "TGB_SERVER_API_TOKENS": "ci:ci-token-0123456789,dash.board:board:token-0123456789",
        },
        base_dir=tmp_path,
    ).server
    fingerprint = "token-" + hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    assert [(t.name, t.token) for t in server.api_tokens] == [
        (fingerprint, TOKEN),
        ("ci", "ci-token-0123456789"),
        ("dash.board", "board:token-0123456789"),  # a token with ':' needs a name
    ]
    assert TOKEN not in repr(server)
    assert "ci-token" not in repr(server)


def test_a_name_given_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(
            None,
            environ={"TGB_SERVER_API_TOKENS": "ci:first-token-0123456789,ci:second-token-012345"},
            base_dir=tmp_path,
        )
    assert raised.value.key == "server.api_tokens"
    assert "first-token" not in str(raised.value)


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ("short:abc", "abc"),
        ("name:two words-0123456789", "words-0123456789"),
        ("tøken-0123456789abc", "0123456789abc"),
    ],
)
def test_bad_tokens_are_refused_without_echo(tmp_path: Path, value: str, secret: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, environ={"TGB_SERVER_API_TOKENS": value}, base_dir=tmp_path)
    assert raised.value.key == "server.api_tokens"
    assert secret not in str(raised.value)


@pytest.mark.parametrize("variable", ["TGB_SERVER_API_TOKEN", "TGB_SERVER_API_TOKENS"])
def test_a_named_token_too_short_is_refused_not_taken_whole(tmp_path: Path, variable: str) -> None:
    """``ci:abcdefghijklmno`` reads as the token ``abcdefghijklmno`` named ``ci``: 15
    characters, refused — it was taken for one bare token, ``ci:`` included, that no client
    sends."""
    with pytest.raises(ConfigError, match="at least 16 characters") as raised:
        load_settings(None, environ={variable: "ci:abcdefghijklmno"}, base_dir=tmp_path)
    assert raised.value.key == variable.removeprefix("TGB_").lower().replace("_", ".", 1)
    assert "abcdefghijklmno" not in str(raised.value)


@pytest.mark.parametrize(("text", "allowed"), [("true", True), ("0", False), ("yes", True)])
def test_allow_private_networks(tmp_path: Path, text: str, allowed: bool) -> None:
    settings = load_settings(
        None, environ={"TGB_WEBHOOK_ALLOW_PRIVATE_NETWORKS": text}, base_dir=tmp_path
    )
    assert settings.webhook.allow_private_networks is allowed
