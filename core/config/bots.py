"""``bots:`` (``TGB_BOTS``): the bots the service sends with, and ``telegram.token`` as the bot
named ``default``.

Each bot is ``{name, token, rate_limit, paid_rate_limit, api_url}`` (a YAML list of mappings,
or the environment variable as a JSON list); ``token_file`` names a file holding the token
instead (a mounted secret). What a bot leaves out comes from the ``telegram:`` section.

Errors name the item (``bots[1].token``), never a token's value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from tgbroadcast.core.config.settings import BOT_TOKEN_RE, BotSettings, TelegramSettings
from tgbroadcast.core.config.tokens import BOT_NAME, shown_key
from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.errors import ConfigError

KEY: Final = "bots"
BOT_KEYS: Final = frozenset(
    {"name", "token", "token_file", "rate_limit", "paid_rate_limit", "api_url"}
)


def configured_bots(
    value: Any,
    telegram: TelegramSettings,
    *,
    base: Path,
    number: Callable[..., float],
    http_url: Callable[[Any, str], str],
) -> tuple[BotSettings, ...]:
    """``telegram.token`` (as ``default``, when set) and then every bot of ``bots:``.

    ``number(value, key, low=...)`` and ``http_url(value, key)`` are the loader's own
    checks, so a bot's limits and URL are held to the ``telegram:`` section's rules."""
    bots: list[BotSettings] = []
    if telegram.token:
        bots.append(
            BotSettings(
                name=DEFAULT_BOT,
                token=telegram.token,
                rate_limit=telegram.rate_limit,
                paid_rate_limit=telegram.paid_rate_limit,
                api_url=telegram.api_url,
            )
        )
    for index, item in enumerate(_items(value)):
        key = f"{KEY}[{index}]"
        bot = _bot(item, key, telegram, base=base, number=number, http_url=http_url)
        for known in bots:
            if known.name == bot.name:
                also = " (telegram.token is the bot default)" if bot.name == DEFAULT_BOT else ""
                raise ConfigError(f"{key}.name", f"{bot.name!r} is given twice{also}")
            if known.token == bot.token:
                raise ConfigError(
                    f"{key}.token", f"is also the token of {known.name!r}: one bot, one name"
                )
        bots.append(bot)
    return tuple(bots)


def _items(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            # Never the text itself: it holds tokens.
            raise ConfigError(KEY, "must be a JSON list of bots ([{...}, ...])") from None
    if not isinstance(value, list):
        raise ConfigError(KEY, "must be a list of bots ([{name, token, ...}, ...])")
    return value


def _bot(
    item: Any,
    key: str,
    telegram: TelegramSettings,
    *,
    base: Path,
    number: Callable[..., float],
    http_url: Callable[[Any, str], str],
) -> BotSettings:
    if not isinstance(item, Mapping):
        raise ConfigError(key, "must be a mapping {name, token, ...}")
    unknown = sorted(shown_key(k) for k in item if k not in BOT_KEYS)
    if unknown:
        raise ConfigError(key, f"unknown keys {unknown}; expected {', '.join(sorted(BOT_KEYS))}")
    name = item.get("name")
    if not isinstance(name, str) or not BOT_NAME.fullmatch(name):
        raise ConfigError(f"{key}.name", "must be 1 to 32 of a-z 0-9 _ -")
    rate = item.get("rate_limit")
    paid = item.get("paid_rate_limit")
    url = item.get("api_url")
    return BotSettings(
        name=name,
        token=_token(item, key, base),
        rate_limit=telegram.rate_limit
        if rate is None
        else number(rate, f"{key}.rate_limit", low=0.1),
        paid_rate_limit=(
            telegram.paid_rate_limit
            if paid is None
            else number(paid, f"{key}.paid_rate_limit", low=0.1)
        ),
        api_url=telegram.api_url if url is None else http_url(url, f"{key}.api_url"),
    )


def _token(item: Mapping[Any, Any], key: str, base: Path) -> str:
    token, token_file = item.get("token"), item.get("token_file")
    if (token is None) == (token_file is None):
        raise ConfigError(key, "needs exactly one of token and token_file")
    if token_file is not None:
        path = Path(str(token_file))
        if not path.is_absolute():
            path = base / path
        try:
            token = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{key}.token_file", f"cannot read {path}: {why}") from None
        key = f"{key}.token_file"
    else:
        key = f"{key}.token"
    token = str(token).strip()
    if not BOT_TOKEN_RE.match(token):
        # Never echo the value: it may be a real token with a typo.
        raise ConfigError(key, "must look like 123456789:AAE... (from @BotFather)")
    return token
