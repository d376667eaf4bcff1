"""Inline keyboards as Telegram checks them (``reply_markup`` of a send).

Only inline keyboards are simulated; the refusals are the Bot API's texts:
``can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard``
(a button with nothing to do), ``BUTTON_DATA_INVALID`` (``callback_data`` empty or over 64
bytes), ``BUTTON_URL_INVALID`` (a URL that is not http(s)/tg), ``reply markup is too long``
(over 100 buttons).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tgbroadcast.simulator.envelope import bad_request

MAX_BUTTONS = 100
CALLBACK_DATA_MAX_BYTES = 64
_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)


def check_reply_markup(markup: Any) -> dict[str, Any] | None:
    """The markup as a message shows it (inline keyboards), or Telegram's refusal."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    rows = markup.get("inline_keyboard")
    if rows is None:
        return None  # a reply keyboard, ForceReply, ...: not shown on the message
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request(
            'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
        )
    if sum(len(row) for row in rows) > MAX_BUTTONS:
        raise bad_request("reply markup is too long")
    for row in rows:
        for button in row:
            _check_button(button)
    return {"inline_keyboard": rows}


def _check_button(button: Any) -> None:
    if not isinstance(button, dict):
        raise bad_request(
            "can't parse inline keyboard button: InlineKeyboardButton must be an Object"
        )
    if not isinstance(button.get("text"), str):
        raise bad_request(
            'can\'t parse inline keyboard button: Field "text" must be of type String'
        )
    actions = [name for name in _ACTIONS if name in button]
    if not actions:
        raise bad_request(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode()) <= CALLBACK_DATA_MAX_BYTES:
            raise bad_request("BUTTON_DATA_INVALID")
    if "url" in button:
        url = button["url"]
        parts = urlsplit(url) if isinstance(url, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https", "tg")
            or not (parts.netloc or (parts.scheme == "tg" and parts.path))
        ):
            raise bad_request("BUTTON_URL_INVALID")
