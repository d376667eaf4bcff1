"""The messages bots sent through the simulator, and how their text is measured.

Guarantees, as on Telegram: ``message_id`` increases by one per message within a chat (of
one bot), starting at 1, and an id is never given again, even after its message is deleted;
a message's ``from`` is the bot (in a channel: ``sender_chat`` is the channel); ``date`` is
the Unix time it was stored (earlier once :meth:`MessageStore.age` made it older); an edited
message has ``edit_date``. A stored message is never changed in place: an edit or an aging
stores a new object, so a Message already answered (and recorded) stays as it was answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from tgbroadcast.simulator.envelope import BotApiError, bad_request
from tgbroadcast.simulator.markup import (
    MarkupError,
    UnsupportedParseMode,
    parse_markup,
    utf16_length,
)

PARSE_MODES = frozenset({"html", "markdown", "markdownv2"})


def parsed_text(
    text: str, parse_mode: str | None, entities: Any = None
) -> tuple[str, list[dict[str, Any]]]:
    """``text`` after entities parsing, as Telegram stores it, and its entities.

    As the official Bot API server: text over 32 KiB as written (markup included) is refused
    before anything (``text is too long``); a ``parse_mode`` wins over explicit ``entities``
    (then ignored), each of which must be a known type with its required fields (``can't
    parse MessageEntity: Unsupported type specified``). Malformed markup is refused with
    Telegram's text (``can't parse entities: Unsupported start tag "foo" at byte offset 0``),
    an unknown mode with ``unsupported parse_mode``. The parser is the simulator's own
    (:mod:`tgbroadcast.simulator.markup`), never the service's.
    """
    if len(text.encode()) > RAW_TEXT_LIMIT:
        raise bad_request("text is too long")
    if entities and not parse_mode:
        if not isinstance(entities, list):
            raise bad_request("can't parse entities JSON object")
        return text, [_entity(e) for e in entities]
    try:
        parsed = parse_markup(text, parse_mode)
    except MarkupError as exc:
        raise bad_request(f"can't parse entities: {exc}") from None
    except UnsupportedParseMode:
        raise bad_request("unsupported parse_mode") from None
    return parsed.text, parsed.entities


RAW_TEXT_LIMIT = 1 << 15
"""Bytes of a text or caption as written (UTF-8, markup included) the Bot API server takes."""

ENTITY_TYPES = frozenset(
    {
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "blockquote",
        "expandable_blockquote",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
        "date_time",
    }
)
"""MessageEntity's types (api.json)."""
_ENTITY_NEEDS = {
    "text_link": "url",
    "text_mention": "user",
    "custom_emoji": "custom_emoji_id",
    "date_time": "unix_time",
}


def _entity(given: Any) -> dict[str, Any]:
    """One explicit MessageEntity, checked as the Bot API server checks it."""

    def refused(reason: str) -> BotApiError:
        return bad_request(f"can't parse MessageEntity: {reason}")

    if not isinstance(given, dict):
        raise refused("expected an Object")
    for field in ("type", "offset", "length"):
        if field not in given:
            raise refused(f'Can\'t find field "{field}"')
    if given["type"] not in ENTITY_TYPES:
        raise refused("Unsupported type specified")
    for field in ("offset", "length"):
        if not isinstance(given[field], int) or isinstance(given[field], bool):
            raise refused(f'Field "{field}" must be of type Number')
    needed = _ENTITY_NEEDS.get(given["type"])
    if needed is not None and needed not in given:
        raise refused(f'Can\'t find field "{needed}"')
    return dict(given)


def text_length(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return utf16_length(text)


def bot_user(bot_id: int) -> dict[str, Any]:
    """The bot's User object as it appears in ``from``."""
    return {
        "id": bot_id,
        "is_bot": True,
        "first_name": "Simulated Bot",
        "username": f"sim{bot_id}_bot",
    }


def bot_me(bot_id: int) -> dict[str, Any]:
    """The bot's User object as ``getMe`` returns it (with the bot-only fields)."""
    return bot_user(bot_id) | {
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


class MessageStore:
    """Every message sent, by (bot, chat) and id. Not thread-safe: one event loop owns it."""

    def __init__(self, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._wall_clock = wall_clock
        self._chats: dict[tuple[int, int], dict[int, dict[str, Any]]] = {}
        self._last_id: dict[tuple[int, int], int] = {}

    def clear(self) -> None:
        self._chats.clear()
        self._last_id.clear()

    def __len__(self) -> int:
        return sum(len(messages) for messages in self._chats.values())

    def add(
        self, *, bot_id: int, chat: Mapping[str, Any], content: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Store a new message from ``bot_id`` in ``chat`` carrying ``content`` fields."""
        key = (bot_id, int(chat["id"]))
        message_id = self._last_id.get(key, 0) + 1
        self._last_id[key] = message_id
        message: dict[str, Any] = {"message_id": message_id}
        if chat["type"] == "channel":
            message["sender_chat"] = dict(chat)
        else:
            message["from"] = bot_user(bot_id)
        message["chat"] = dict(chat)
        message["date"] = int(self._wall_clock())
        message.update(content)
        self._chats.setdefault(key, {})[message_id] = message
        return message

    def get(self, *, bot_id: int, chat_id: int, message_id: int) -> dict[str, Any] | None:
        return self._chats.get((bot_id, chat_id), {}).get(message_id)

    def sent_ago(self, message: Mapping[str, Any]) -> float:
        """Seconds since ``message`` was sent, by its ``date``."""
        return self._wall_clock() - int(message["date"])

    def remove(self, *, bot_id: int, chat_id: int, message_id: int) -> bool:
        """Forget a message (a delete); ``False`` if it was not there."""
        key = (bot_id, chat_id)
        messages = self._chats.get(key, {})
        if messages.pop(message_id, None) is None:
            return False
        if not messages:
            del self._chats[key]
        return True

    def replace(
        self,
        *,
        bot_id: int,
        message: Mapping[str, Any],
        dropped: Iterable[str],
        content: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Store an edit of ``bot_id``'s ``message``: its ``dropped`` fields go, ``content``
        comes, ``edit_date`` is now. Returns the edited Message (a new object)."""
        gone = set(dropped)
        edited = {key: value for key, value in message.items() if key not in gone}
        edited["edit_date"] = int(self._wall_clock())
        edited.update(content)
        self._chats[(bot_id, int(message["chat"]["id"]))][int(message["message_id"])] = edited
        return edited

    def age(
        self,
        *,
        chat_id: int,
        seconds: float,
        bot_id: int | None = None,
        message_ids: Collection[int] | None = None,
    ) -> int:
        """Make messages in ``chat_id`` (of ``bot_id``, or every bot's; only ``message_ids``
        if given) as if sent ``seconds`` earlier; returns how many were aged."""
        aged = 0
        for (owner, chat), messages in self._chats.items():
            if chat != chat_id or (bot_id is not None and owner != bot_id):
                continue
            for message_id, message in list(messages.items()):
                if message_ids is None or message_id in message_ids:
                    messages[message_id] = message | {"date": int(message["date"] - seconds)}
                    aged += 1
        return aged

    def by_chat(self, bot_id: int | None = None) -> dict[int, list[dict[str, Any]]]:
        """Messages per chat id, in id order (of every bot unless ``bot_id`` is given)."""
        found: dict[int, list[dict[str, Any]]] = {}
        for (owner, chat_id), messages in self._chats.items():
            if bot_id is None or owner == bot_id:
                found.setdefault(chat_id, []).extend(messages[mid] for mid in sorted(messages))
        return found


COPIED_FIELDS = (
    "text",
    "entities",
    "caption",
    "caption_entities",
    "photo",
    "video",
    "animation",
    "document",
    "audio",
    "voice",
    "video_note",
    "sticker",
)
"""The fields of a message that a copy carries (everything but its identity)."""
