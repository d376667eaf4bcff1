"""``server.api_token`` and ``server.api_tokens``: the API tokens and what each may do.

Two forms, mixed freely:

- ``name:token`` or a bare token (a YAML list, or comma-separated text): every scope on
  every bot, as every token had before scopes existed;
- an object ``{name, token, scopes: [...], bots: [...]}`` (a YAML mapping, or the
  environment variable as a JSON list, text starting with ``[``): only the scopes it lists,
  on the bots it lists (``bots`` omitted: ``["*"]``, every bot).

Errors name the item (``server.api_tokens[2].scopes``), never a token's value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from tgbroadcast.core.config.settings import ApiToken
from tgbroadcast.core.domain.access import ALL_BOTS, SCOPES
from tgbroadcast.core.domain.errors import ConfigError

TOKEN_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
BOT_NAME: Final = re.compile(r"[a-z0-9_-]{1,32}")
MIN_TOKEN_LENGTH: Final = 16
OBJECT_KEYS: Final = frozenset({"name", "token", "scopes", "bots"})
KEY: Final = "server.api_tokens"


def api_tokens(api_token: Any, api_tokens: Any) -> tuple[ApiToken, ...]:
    """Both keys together, ``server.api_token``'s first; a name or a token given twice is
    refused. A legacy token that holds ``:`` itself must be given a name."""
    tokens: list[ApiToken] = []
    if isinstance(api_token, str) and api_token.lstrip()[:1] in ("[", "{"):
        # Not split at commas into tokens that hold JSON text (and would have every scope).
        raise ConfigError("server.api_token", "takes tokens only; scoped tokens go in " + KEY)
    for item in _legacy_items(api_token):
        _add(tokens, _legacy(item, "server.api_token"), KEY)
    for index, item in enumerate(_items(api_tokens)):
        if isinstance(item, Mapping):
            key = f"{KEY}[{index}]"
            _add(tokens, _scoped(item, key), key)
        else:
            _add(tokens, _legacy(str(item).strip(), KEY), KEY)
    return tuple(tokens)


def _items(value: Any) -> list[Any]:
    """A YAML list (strings and mappings), JSON text starting with ``[``, or comma-separated
    text; without blanks."""
    if value is None:
        return []
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            value = json.loads(value, object_pairs_hook=_unique_keys)
        except ValueError as exc:
            # The position only: the text holds tokens.
            raise ConfigError(KEY, f"is not valid JSON (line {_line(exc)})") from None
        except _DuplicateKey as exc:  # the key named only if it is one of ours
            named = repr(exc.key) if exc.key in OBJECT_KEYS else "a key"
            raise ConfigError(KEY, f"an object gives {named} twice") from None
    if isinstance(value, Mapping):  # not split at commas into tokens with every scope
        raise ConfigError(KEY, "must be a list ([{...}, ...]), not one object")
    if isinstance(value, list):
        return [item for item in value if isinstance(item, Mapping) or str(item).strip()]
    return _legacy_items(value)


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are distinct (``json`` would keep the last silently)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey(key)
        found[key] = value
    return found


def _line(exc: ValueError) -> int:
    return exc.lineno if isinstance(exc, json.JSONDecodeError) else 0


def _legacy_items(value: Any) -> list[str]:
    if value is None:
        return []
    items: list[Any] = value if isinstance(value, list) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def _legacy(item: str, key: str) -> ApiToken:
    """``name:token`` or a bare token: full access. What reads as ``name:token`` is one,
    its token held to the same rules (``ci:short`` is not taken for a bare token)."""
    name, sep, token = item.partition(":")
    if not sep or not TOKEN_NAME.fullmatch(name):
        name, token = "", item
    _check_token(token, key)
    name = name or "token-" + hashlib.sha256(token.encode()).hexdigest()[:12]
    return ApiToken(name=name, token=token)


def _check_token(token: str, key: str) -> None:
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(key, f"each token must be at least {MIN_TOKEN_LENGTH} characters")
    if any(ch.isspace() for ch in token) or not token.isprintable() or not token.isascii():
        raise ConfigError(key, "tokens must be printable ASCII without white space")


def _scoped(item: Mapping[Any, Any], key: str) -> ApiToken:
    """``{name, token, scopes, bots}``: ``scopes`` required, ``bots`` defaults to ``["*"]``."""
    unknown = sorted(shown_key(k) for k in item if k not in OBJECT_KEYS)
    if unknown:
        raise ConfigError(key, f"unknown keys {unknown}; expected name, token, scopes, bots")
    name = item.get("name")
    if not isinstance(name, str) or not TOKEN_NAME.fullmatch(name):
        raise ConfigError(f"{key}.name", "must be 1 to 64 of A-Z a-z 0-9 _ . -")
    token = item.get("token")
    if not isinstance(token, str):
        raise ConfigError(f"{key}.token", "is required (text)")
    _check_token(token, f"{key}.token")
    return ApiToken(
        name=name,
        token=token,
        scopes=_scopes(item.get("scopes"), f"{key}.scopes"),
        bots=_bots(item.get("bots", [ALL_BOTS]), f"{key}.bots"),
    )


def _scopes(value: Any, key: str) -> frozenset[str]:
    known = ", ".join(sorted(SCOPES))
    if not isinstance(value, list) or not value:
        raise ConfigError(key, f"must list the token's scopes, some of: {known}")
    for index, scope in enumerate(value):
        if not isinstance(scope, str) or scope not in SCOPES:
            raise ConfigError(key, f"{_shown(scope, index)} is not a scope; known: {known}")
    return frozenset(value)


def _bots(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, 'must list bot names, or ["*"] for every bot')
    for index, bot in enumerate(value):
        if bot != ALL_BOTS and not (isinstance(bot, str) and BOT_NAME.fullmatch(bot)):
            detail = f'{_shown(bot, index)} is neither "*" nor a bot name ([a-z0-9_-]{{1,32}})'
            raise ConfigError(key, detail)
    return tuple(dict.fromkeys(value))


def shown_key(key: Any) -> str:
    """An unknown key as an error shows it: the key only when shorter than any token (a
    token pasted as a key must not be echoed, not even in part)."""
    text = str(key)
    return text if len(text) < MIN_TOKEN_LENGTH else f"<a key of {len(text)} characters>"


def _shown(value: Any, index: int) -> str:
    """A bad list item as an error shows it: its value only when shorter than any token (it
    may be a token put in the wrong place), else its position."""
    text = str(value)
    return repr(text) if len(text) < MIN_TOKEN_LENGTH else f"item {index}"


def _add(tokens: list[ApiToken], token: ApiToken, key: str) -> None:
    if any(known.name == token.name for known in tokens):
        raise ConfigError(key, f"the name {token.name!r} is given twice")
    for known in tokens:
        if known.token == token.token:
            raise ConfigError(key, f"the token of {token.name!r} is also {known.name!r}'s")
    tokens.append(token)
