"""After sending: ``deleteMessage``, ``deleteMessages`` and the ``editMessage*`` methods, as
Telegram answers a bot about the messages it sent.

Guarantees, as on Telegram:

* a message can be deleted only while it is less than 48 hours old (by its ``date``; the
  control API's ``POST /_sim/messages/age`` makes messages older without waiting). A deleted
  message is gone: deleting it again answers ``message to delete not found``, editing it
  ``message to edit not found``. ``deleteMessages`` skips the ids it cannot find or delete
  and answers ``true``;
* a bot edits its own messages at any age. An edit answers the edited Message (with
  ``edit_date``) and stores it; an edit that changes nothing is refused with ``message is not
  modified: ...``. What an edit does not pass goes: an edit without ``reply_markup`` removes
  the keyboard, ``editMessageCaption`` without ``caption`` removes the caption;
* text, captions, media and keyboards are checked exactly as a send checks them, before the
  chat and the message are looked at;
* an album item is edited only to media its album allows: an audio to an audio, a document to
  a document, a photo or a video to a photo or a video;
* an accepted delete or edit counts against flood control like a send (one per call, also
  for ``deleteMessages``); a refused one counts nothing and changes nothing.

Inline messages (``inline_message_id``) are not simulated: such an edit is refused with 400.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tgbroadcast.simulator.envelope import bad_request
from tgbroadcast.simulator.files import FileKind, Upload
from tgbroadcast.simulator.recording import MediaSource
from tgbroadcast.simulator.spec import ATTACH_PREFIX

if TYPE_CHECKING:
    from tgbroadcast.simulator.botapi import BotApi

DELETE_WINDOW = 48 * 3600
"""Seconds after sending from which a message can no longer be deleted."""

DELETE_LIMIT = 100
"""The most message ids one ``deleteMessages`` call takes."""

RECALL_METHODS = frozenset(
    {
        "deletemessage",
        "deletemessages",
        "editmessagetext",
        "editmessagecaption",
        "editmessagemedia",
        "editmessagereplymarkup",
    }
)
"""The methods this module answers (lower case)."""

NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
INLINE_REFUSED = "the simulator does not edit inline messages: pass chat_id and message_id"

_FILE_FIELDS = tuple(kind.value for kind in FileKind)
_TEXT_FIELDS = ("text", "entities", "link_preview_options")
_CAPTION_FIELDS = ("caption", "caption_entities")
_MARKUP_FIELDS = ("reply_markup",)

_CAPTIONED = frozenset(
    {
        FileKind.PHOTO,
        FileKind.VIDEO,
        FileKind.ANIMATION,
        FileKind.DOCUMENT,
        FileKind.AUDIO,
        FileKind.VOICE,
    }
)
"""The media whose messages have a caption to edit."""

_INPUT_MEDIA = {
    "photo": FileKind.PHOTO,
    "video": FileKind.VIDEO,
    "animation": FileKind.ANIMATION,
    "document": FileKind.DOCUMENT,
    "audio": FileKind.AUDIO,
}
"""The InputMedia types ``editMessageMedia`` takes, and the media each makes."""

_ALBUM_PEERS = {
    FileKind.PHOTO: frozenset({FileKind.PHOTO, FileKind.VIDEO}),
    FileKind.VIDEO: frozenset({FileKind.PHOTO, FileKind.VIDEO}),
    FileKind.DOCUMENT: frozenset({FileKind.DOCUMENT}),
    FileKind.AUDIO: frozenset({FileKind.AUDIO}),
}
"""What an album item of each kind may be edited to."""


def _kind(message: Mapping[str, Any]) -> FileKind | None:
    """The media ``message`` carries; ``None`` for a text (an animation is not a document)."""
    return next((kind for kind in FileKind if kind.value in message), None)


def _message_id(params: Mapping[str, Any]) -> int:
    """The ``message_id`` parameter; 0 (no message) when absent or not positive."""
    value = params.get("message_id")
    return value if isinstance(value, int) and value > 0 else 0


def _look(message: Mapping[str, Any]) -> dict[str, Any]:
    """What a reader sees of ``message``: every field but ``edit_date``, each file by its
    ``file_unique_id`` (the same file sent again has new file_ids)."""
    look: dict[str, Any] = {}
    for key, value in message.items():
        if key == "edit_date":
            continue
        if key == "photo":
            value = value[-1]["file_unique_id"]
        elif key in _FILE_FIELDS:
            value = value["file_unique_id"]
        look[key] = value
    return look


class Edits:
    """The recall and edit methods of a :class:`~tgbroadcast.simulator.botapi.BotApi`, on its
    stores and with its checks. Synchronous, like it: each call is answered atomically."""

    def __init__(self, api: BotApi) -> None:
        self._api = api

    def answer(
        self, name: str, bot_id: int, params: Mapping[str, Any], uploads: Mapping[str, Upload]
    ) -> tuple[Any, MediaSource | None]:
        """The result of method ``name`` (lower case, one of :data:`RECALL_METHODS`), and how
        new media was given (``editMessageMedia`` only). Raises ``BotApiError``."""
        if name == "deletemessage":
            return self._delete_message(bot_id, params), None
        if name == "deletemessages":
            return self._delete_messages(bot_id, params), None
        if name == "editmessagetext":
            return self._edit_text(bot_id, params), None
        if name == "editmessagecaption":
            return self._edit_caption(bot_id, params), None
        if name == "editmessagereplymarkup":
            return self._edit_reply_markup(bot_id, params), None
        return self._edit_media(bot_id, params, uploads)

    # ---- shared steps ----

    def _chat(self, params: Mapping[str, Any]) -> int:
        """The chat of a delete or an edit, if the bot can still reach it."""
        chat_id = self._api.chats.resolve(params["chat_id"])
        self._api.chats.check_reach(chat_id)
        return chat_id

    def _deletable(self, message: Mapping[str, Any]) -> bool:
        return self._api.messages.sent_ago(message) < DELETE_WINDOW

    def _target(self, bot_id: int, params: Mapping[str, Any]) -> dict[str, Any]:
        """The message an edit is about, or Telegram's refusal."""
        message_id = _message_id(params)
        if "chat_id" not in params:
            if message_id != 0:
                raise bad_request("chat_id is empty")
            if "inline_message_id" in params:
                raise bad_request(INLINE_REFUSED)
            raise bad_request("message identifier is not specified")
        chat_id = self._chat(params)
        message = self._api.messages.get(bot_id=bot_id, chat_id=chat_id, message_id=message_id)
        if message is None:
            raise bad_request("message to edit not found")
        if "forward_origin" in message:
            raise bad_request("message can't be edited")
        return message

    @staticmethod
    def _check_modified(
        message: Mapping[str, Any], dropped: Sequence[str], content: Mapping[str, Any]
    ) -> None:
        """Refuse an edit that would leave ``message`` as it is."""
        after = {key: value for key, value in message.items() if key not in dropped}
        if _look(after | dict(content)) == _look(message):
            raise bad_request(NOT_MODIFIED)

    def _store(
        self,
        bot_id: int,
        message: Mapping[str, Any],
        dropped: Sequence[str],
        content: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Check, count and store an edit whose new content is known; the edited Message."""
        self._check_modified(message, dropped, content)
        self._api.count_call(bot_id, int(message["chat"]["id"]))
        return self._api.messages.replace(
            bot_id=bot_id, message=message, dropped=dropped, content=content
        )

    # ---- methods ----

    def _delete_message(self, bot_id: int, params: Mapping[str, Any]) -> bool:
        if "chat_id" not in params:
            raise bad_request("chat identifier is not specified")
        message_id = _message_id(params)
        if message_id == 0:
            raise bad_request("message identifier is not specified")
        chat_id = self._chat(params)
        messages = self._api.messages
        message = messages.get(bot_id=bot_id, chat_id=chat_id, message_id=message_id)
        if message is None:
            raise bad_request("message to delete not found")
        if not self._deletable(message):
            raise bad_request("message can't be deleted")
        self._api.count_call(bot_id, chat_id)
        messages.remove(bot_id=bot_id, chat_id=chat_id, message_id=message_id)
        return True

    def _delete_messages(self, bot_id: int, params: Mapping[str, Any]) -> bool:
        ids: list[int] = params.get("message_ids") or []
        if not ids:
            raise bad_request("message identifiers are not specified")
        if len(ids) > DELETE_LIMIT:
            raise bad_request("too many message identifiers specified")
        if any(message_id <= 0 for message_id in ids):
            raise bad_request("invalid message identifier specified")
        if "chat_id" not in params:
            raise bad_request("chat_id is empty")
        chat_id = self._chat(params)
        messages = self._api.messages
        doomed = [
            message_id
            for message_id in dict.fromkeys(ids)
            if (message := messages.get(bot_id=bot_id, chat_id=chat_id, message_id=message_id))
            is not None
            and self._deletable(message)
        ]
        self._api.count_call(bot_id, chat_id)
        for message_id in doomed:
            messages.remove(bot_id=bot_id, chat_id=chat_id, message_id=message_id)
        return True

    def _edit_text(self, bot_id: int, params: Mapping[str, Any]) -> dict[str, Any]:
        content = self._api.text_fields(params) | self._api.markup_fields(params)
        message = self._target(bot_id, params)
        if "text" not in message:
            raise bad_request("there is no text in the message to edit")
        return self._store(bot_id, message, (*_TEXT_FIELDS, *_MARKUP_FIELDS), content)

    def _edit_caption(self, bot_id: int, params: Mapping[str, Any]) -> dict[str, Any]:
        content = self._api.caption_fields(params) | self._api.markup_fields(params)
        message = self._target(bot_id, params)
        if _kind(message) not in _CAPTIONED:
            raise bad_request("there is no caption in the message to edit")
        return self._store(bot_id, message, (*_CAPTION_FIELDS, *_MARKUP_FIELDS), content)

    def _edit_reply_markup(self, bot_id: int, params: Mapping[str, Any]) -> dict[str, Any]:
        content = self._api.markup_fields(params)
        message = self._target(bot_id, params)
        return self._store(bot_id, message, _MARKUP_FIELDS, content)

    def _edit_media(
        self, bot_id: int, params: Mapping[str, Any], uploads: Mapping[str, Upload]
    ) -> tuple[dict[str, Any], MediaSource]:
        api = self._api
        item: dict[str, Any] | None = params.get("media")
        if item is None:
            raise bad_request('parameter "media" is required')
        kind = _INPUT_MEDIA.get(str(item.get("type")))
        if kind is None:
            raise bad_request(f'can\'t parse InputMedia: type "{item.get("type")}" is unsupported')
        value: Any = item.get("media")
        if isinstance(value, str) and value.startswith(ATTACH_PREFIX):
            value = uploads.get(value.removeprefix(ATTACH_PREFIX))
        if not value:
            raise bad_request("can't parse InputMedia: media not found")
        caption = api.caption_fields(item)
        markup = api.markup_fields(params)
        media = api.resolve_media(bot_id, kind, value)
        message = self._target(bot_id, params)
        old = _kind(message)
        if old is not None and old not in _INPUT_MEDIA.values():
            raise bad_request("there is no media in the message to edit")
        if "media_group_id" in message and (old is None or kind not in _ALBUM_PEERS.get(old, ())):
            raise bad_request("message can't be edited")
        dropped = (*_FILE_FIELDS, *_TEXT_FIELDS, *_CAPTION_FIELDS, *_MARKUP_FIELDS)
        if media.stored is not None:
            self._check_modified(
                message, dropped, api.media_content(media.stored) | caption | markup
            )
        api.count_call(bot_id, int(message["chat"]["id"]))
        stored = api.materialize(bot_id, kind, media, item)
        content = api.media_content(stored) | caption | markup
        edited = api.messages.replace(
            bot_id=bot_id, message=message, dropped=dropped, content=content
        )
        return edited, media.source
