"""``bots:`` / ``TGB_BOTS`` and ``telegram.token`` as the bot ``default``
(:mod:`tgbroadcast.core.config.bots`): every bot's values, its defaults from ``telegram:``,
and refusals that name the item and never repeat a token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tgbroadcast.core.config import Settings, load_settings
from tgbroadcast.core.domain.errors import ConfigError

DEFAULT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
SHOP_TOKEN = "111111111:AAshopTokenSecretPart_0123456789abcdef"
NEWS_TOKEN = "222222222:AAnewsTokenSecretPart_0123456789abcdef"
SECRETS = [token.split(":")[1] for token in (DEFAULT_TOKEN, SHOP_TOKEN, NEWS_TOKEN)]


def load(tmp_path: Path, yaml: str = "", **environ: str) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(yaml, encoding="utf-8")
    return load_settings(path, environ=environ, base_dir=tmp_path)


def refused(tmp_path: Path, yaml: str = "", **environ: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, yaml, **environ)
    for secret in SECRETS:
        assert secret not in str(caught.value)
    return caught.value


def test_bots_in_yaml_take_what_they_leave_out_from_telegram(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        f"""
telegram:
  rate_limit: 25
  paid_rate_limit: 500
  api_url: http://127.0.0.1:8081/
bots:
  - name: shop
    token: "{SHOP_TOKEN}"
    rate_limit: 10
  - name: news
    token: "{NEWS_TOKEN}"
    paid_rate_limit: 900
    api_url: https://bots.example.com
""",
    )
    assert [(b.name, b.rate_limit, b.paid_rate_limit, b.api_url) for b in settings.bots] == [
        ("shop", 10.0, 500.0, "http://127.0.0.1:8081"),
        ("news", 25.0, 900.0, "https://bots.example.com"),
    ]
    assert [b.token for b in settings.bots] == [SHOP_TOKEN, NEWS_TOKEN]
    assert settings.bot("news") is settings.bots[1]
    assert settings.bot("nobody") is None
    assert settings.bots[0].bot_id == 111111111
    assert SHOP_TOKEN not in repr(settings)


def test_telegram_token_is_the_bot_default_first(tmp_path: Path) -> None:
    bots = json.dumps([{"name": "shop", "token": SHOP_TOKEN}])
    settings = load(tmp_path, TGB_TELEGRAM_TOKEN=DEFAULT_TOKEN, TGB_BOTS=bots)
    assert [(b.name, b.token) for b in settings.bots] == [
        ("default", DEFAULT_TOKEN),
        ("shop", SHOP_TOKEN),
    ]
    assert load(tmp_path).bots == ()
    single = load(tmp_path, TGB_TELEGRAM_TOKEN=DEFAULT_TOKEN)
    assert [b.name for b in single.bots] == ["default"]
    assert single.bots[0].rate_limit == single.telegram.rate_limit


def test_tgb_bots_json_overrides_the_file(tmp_path: Path) -> None:
    yaml = f'bots:\n  - {{name: shop, token: "{SHOP_TOKEN}"}}\n'
    bots = json.dumps([{"name": "news", "token": NEWS_TOKEN, "rate_limit": 5}])
    settings = load(tmp_path, yaml, TGB_BOTS=bots)
    assert [(b.name, b.rate_limit) for b in settings.bots] == [("news", 5.0)]


def test_token_file_reads_a_mounted_secret(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "shop").write_text(SHOP_TOKEN + "\n", encoding="utf-8")
    absolute = tmp_path / "news-token"
    absolute.write_text(NEWS_TOKEN, encoding="utf-8")
    settings = load(
        tmp_path,
        f"""
bots:
  - {{name: shop, token_file: secrets/shop}}
  - {{name: news, token_file: "{absolute}"}}
""",
    )
    assert [b.token for b in settings.bots] == [SHOP_TOKEN, NEWS_TOKEN]


@pytest.mark.parametrize(
    ("items", "key", "words"),
    [
        ([{"name": "Shop", "token": SHOP_TOKEN}], "bots[0].name", "a-z 0-9 _ -"),
        ([{"name": "x" * 33, "token": SHOP_TOKEN}], "bots[0].name", "1 to 32"),
        ([{"token": SHOP_TOKEN}], "bots[0].name", "1 to 32"),
        ([{"name": "shop"}], "bots[0]", "exactly one of token and token_file"),
        (
            [{"name": "shop", "token": SHOP_TOKEN, "token_file": "f"}],
            "bots[0]",
            "exactly one of token and token_file",
        ),
        ([{"name": "shop", "token": SHOP_TOKEN + " x"}], "bots[0].token", "must look like"),
        ([{"name": "shop", "token": SHOP_TOKEN[:-30]}], "bots[0].token", "must look like"),
        (
            [{"name": "shop", "token": SHOP_TOKEN}, {"name": "shop", "token": NEWS_TOKEN}],
            "bots[1].name",
            "given twice",
        ),
        (
            [{"name": "shop", "token": SHOP_TOKEN}, {"name": "news", "token": SHOP_TOKEN}],
            "bots[1].token",
            "also the token of 'shop'",
        ),
        ([{"name": "shop", "token": SHOP_TOKEN, "rate": 1}], "bots[0]", "unknown keys"),
        ([{"name": "shop", "token": SHOP_TOKEN, "rate_limit": 0}], "bots[0].rate_limit", ""),
        ([{"name": "shop", "token": SHOP_TOKEN, "api_url": "ftp://x"}], "bots[0].api_url", ""),
        (["shop"], "bots[0]", "must be a mapping"),
        ({"name": "shop"}, "bots", "must be a list"),
    ],
)
def test_bad_bots_are_refused_naming_the_item(
    tmp_path: Path, items: Any, key: str, words: str
) -> None:
    error = refused(tmp_path, TGB_BOTS=json.dumps(items))
    assert error.key == key
    assert words in error.message


def test_telegram_token_already_is_the_bot_default(tmp_path: Path) -> None:
    bots = json.dumps([{"name": "default", "token": SHOP_TOKEN}])
    error = refused(tmp_path, TGB_TELEGRAM_TOKEN=DEFAULT_TOKEN, TGB_BOTS=bots)
    assert error.key == "bots[0].name"
    assert "telegram.token is the bot default" in error.message
    same = json.dumps([{"name": "shop", "token": DEFAULT_TOKEN}])
    error = refused(tmp_path, TGB_TELEGRAM_TOKEN=DEFAULT_TOKEN, TGB_BOTS=same)
    assert (error.key, "'default'" in error.message) == ("bots[0].token", True)


def test_errors_never_echo_a_token(tmp_path: Path) -> None:
    """Not the JSON text (it holds tokens), not a token with a typo, not a token file's."""
    broken = '[{"name": "shop", "token": "' + SHOP_TOKEN + '"'
    assert refused(tmp_path, TGB_BOTS=broken).key == "bots"
    (tmp_path / "bad-token").write_text("x" + SHOP_TOKEN + " extra", encoding="utf-8")
    error = refused(tmp_path, TGB_BOTS=json.dumps([{"name": "a", "token_file": "bad-token"}]))
    assert error.key == "bots[0].token_file"
    error = refused(tmp_path, TGB_BOTS=json.dumps([{"name": "a", "token_file": "missing"}]))
    assert (error.key, "cannot read" in error.message) == ("bots[0].token_file", True)
    # A token pasted where a key name goes is not repeated either.
    error = refused(tmp_path, TGB_BOTS=json.dumps([{"name": "a", SHOP_TOKEN: 1}]))
    assert error.key == "bots[0]"
    assert SHOP_TOKEN.split(":")[1][:8] not in str(error), "not even a part of it"
    assert f"<a key of {len(SHOP_TOKEN)} characters>" in str(error)
    scoped = [{"name": "n", "token": "t" * 20, "scopes": ["users:read"], SHOP_TOKEN: 1}]
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, TGB_SERVER_API_TOKENS=json.dumps(scoped))
    assert SHOP_TOKEN.split(":")[1][:8] not in str(caught.value)


def test_secret_keys_are_listed_newest_first_and_long_enough(tmp_path: Path) -> None:
    first, second = "n" * 40, "o" * 32
    settings = load(tmp_path, TGB_SERVER_SECRET_KEY=f"{first}, {second}")
    assert settings.server.secret_keys == (first, second)
    assert first not in repr(settings)
    assert load(tmp_path).server.secret_keys == ()
    error = refused(tmp_path, TGB_SERVER_SECRET_KEY=f"{first},short-key")
    assert error.key == "server.secret_key"
    assert "short-key" not in str(error)
