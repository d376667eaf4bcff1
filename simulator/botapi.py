"""The simulated Bot API: one request in, Telegram's answer out, independent of HTTP.

The order of checks follows the official server: the token (401 ``Unauthorized``), the
method (404 ``Not Found``), injected faults, parameter types, the message content (text,
caption, media), then the chat (its declared state), then flood control, and only then is
anything stored. So a refused call never stores a message or mints a file, and a content
error is reported for every recipient alike. Deletes and edits of sent messages are answered
by :mod:`tgbroadcast.simulator.edits`, with these same steps.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tgbroadcast.simulator.chats import Chats
from tgbroadcast.simulator.edits import RECALL_METHODS, Edits
from tgbroadcast.simulator.envelope import (
    NOT_FOUND,
    UNAUTHORIZED,
    Answer,
    BotApiError,
    bad_request,
    too_many_requests,
)
from tgbroadcast.simulator.faults import Faults
from tgbroadcast.simulator.files import (
    PHOTO_TOO_BIG,
    PHOTO_UPLOAD_LIMIT,
    FileKind,
    FileSource,
    FileStore,
    StoredFile,
    Upload,
)
from tgbroadcast.simulator.keyboards import check_reply_markup
from tgbroadcast.simulator.messages import (
    COPIED_FIELDS,
    MessageStore,
    bot_me,
    parsed_text,
    text_length,
)
from tgbroadcast.simulator.ratelimits import RateLimiter
from tgbroadcast.simulator.recording import MediaSource, Recorder
from tgbroadcast.simulator.spec import ATTACH_PREFIX, MethodSpec, Spec
from tgbroadcast.simulator.urls import NOT_FETCHED, url_refusal

logger = logging.getLogger(__name__)

TOKEN_PATTERN = re.compile(r"(\d+):([A-Za-z0-9_-]{30,})")
"""A well-formed bot token: the bot id, a colon, the secret."""

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
ALBUM_LIMIT = 10

MEDIA_METHODS: dict[str, FileKind] = {
    "sendphoto": FileKind.PHOTO,
    "sendvideo": FileKind.VIDEO,
    "sendanimation": FileKind.ANIMATION,
    "senddocument": FileKind.DOCUMENT,
    "sendaudio": FileKind.AUDIO,
    "sendvoice": FileKind.VOICE,
    "sendvideonote": FileKind.VIDEO_NOTE,
    "sendsticker": FileKind.STICKER,
}

IMPLEMENTED = frozenset(
    {"getme", "sendmessage", "copymessage", "forwardmessage", "sendmediagroup", *MEDIA_METHODS}
    | RECALL_METHODS
)
"""The methods the simulator answers (lower case); other known methods answer 501."""

_ALBUM_KINDS = {
    "photo": FileKind.PHOTO,
    "video": FileKind.VIDEO,
    "document": FileKind.DOCUMENT,
    "audio": FileKind.AUDIO,
}


_SOURCE_ORDER: tuple[MediaSource, ...] = ("upload", "url", "file_id")
"""How an album is recorded: by the most expensive way any of its items was given."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BotRequest:
    """One call as it arrived: query and body parameters merged, file parts apart."""

    token: str
    method: str
    params: Mapping[str, Any]
    uploads: Mapping[str, Upload] = field(default_factory=dict)
    body_error: BotApiError | None = None
    """Why the body could not be read, if it could not: answered after token and method."""


@dataclass(slots=True)
class _Trace:
    """What the recorder needs to know about a call, filled in as it is answered."""

    method: str
    params: dict[str, Any]
    media: MediaSource | None = None


@dataclass(frozen=True, slots=True)
class ResolvedMedia:
    """A media parameter resolved: an existing file, or where a new one comes from."""

    source: MediaSource
    stored: StoredFile | None = None
    new: FileSource | None = None


def _missing_text(name: str, kind: FileKind | None) -> str:
    if name == "chat_id":
        return "chat_id is empty"
    if name == "text":
        return "message text is empty"
    if kind is not None and name == kind.value:
        return f"there is no {name.replace('_', ' ')} in the request"
    return f'parameter "{name}" is required'


def _loose_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _recordable(value: Any) -> Any:
    return value.describe() if isinstance(value, Upload) else value


class BotApi:
    """Answers Bot API calls. Synchronous: each call is answered atomically."""

    def __init__(
        self,
        *,
        spec: Spec,
        chats: Chats,
        faults: Faults,
        limiter: RateLimiter,
        tokens: frozenset[str] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.chats = chats
        self.faults = faults
        self.limiter = limiter
        self.tokens = tokens
        self.files = FileStore()
        self.messages = MessageStore(wall_clock=wall_clock)
        self.recorder = Recorder()
        self.unreachable_urls: set[str] = set()
        self.url_sizes: dict[str, int] = {}
        """Declared sizes of files by URL (:mod:`.urls`); undeclared ones fit."""
        self.edits = Edits(self)
        self._wall_clock = wall_clock

    def reset(self) -> None:
        """Forget calls, messages, files, unreachable URLs and flood-control history (not the
        declared chats, the armed faults or the limits themselves)."""
        self.files.clear()
        self.messages.clear()
        self.recorder.clear()
        self.unreachable_urls.clear()
        self.url_sizes.clear()
        self.limiter.clear()

    def handle(self, request: BotRequest) -> Answer:
        """Telegram's answer to ``request``; the call is recorded."""
        match = TOKEN_PATTERN.fullmatch(request.token)
        bot_id = int(match.group(1)) if match else _loose_int(request.token.split(":")[0]) or 0
        trace = _Trace(
            method=request.method,
            params={
                k: _recordable(v) for k, v in (*request.params.items(), *request.uploads.items())
            },
        )
        try:
            answer = self._answer(request, match is not None, bot_id, trace)
        except BotApiError as failure:
            answer = Answer.failure(failure)
        self.recorder.record(
            at=self._wall_clock(),
            bot_id=bot_id,
            method=trace.method,
            params=trace.params,
            media=trace.media if answer.error_code is None else None,
            error_code=answer.error_code,
            description=answer.description,
            result=answer.result,
        )
        logger.debug("bot %d %s -> %s", bot_id, trace.method, answer.error_code or "ok")
        return answer

    def _answer(self, request: BotRequest, well_formed: bool, bot_id: int, trace: _Trace) -> Answer:
        if not well_formed or (self.tokens is not None and request.token not in self.tokens):
            raise UNAUTHORIZED
        method = self.spec.method(request.method)
        if method is None:
            raise NOT_FOUND
        trace.method = method.name
        if request.body_error is not None:
            raise request.body_error
        fault = self.faults.take(method.name, _loose_int(request.params.get("chat_id")))
        if fault is not None:
            return fault.answer()
        name = method.name.lower()
        if name not in IMPLEMENTED:
            raise BotApiError(
                501, f"Not Implemented: the simulator does not implement {method.name}"
            )
        params = self.spec.parse(method, request.params, request.uploads)
        trace.params = {k: _recordable(v) for k, v in params.items()}
        if name == "getme":
            return Answer.ok(bot_me(bot_id))
        if name == "sendmessage":
            return Answer.ok(self._send_message(method, bot_id, params))
        if name == "copymessage":
            return Answer.ok(self._copy_message(method, bot_id, params))
        if name == "forwardmessage":
            return Answer.ok(self._forward_message(method, bot_id, params))
        if name == "sendmediagroup":
            return Answer.ok(self._send_media_group(method, bot_id, params, request, trace))
        if name in RECALL_METHODS:
            result, trace.media = self.edits.answer(name, bot_id, params, request.uploads)
            return Answer.ok(result)
        return Answer.ok(self._send_media(method, MEDIA_METHODS[name], bot_id, params, trace))

    # ---- shared steps (of sends, and of edits: :mod:`tgbroadcast.simulator.edits`) ----

    @staticmethod
    def _require(method: MethodSpec, params: Mapping[str, Any], kind: FileKind | None) -> None:
        """Telegram's text for the first missing required parameter, content before chat."""
        required = [f.name for f in method.fields if f.required]
        for name in sorted(required, key=lambda n: n == "chat_id"):
            if name not in params:
                raise bad_request(_missing_text(name, kind))

    @staticmethod
    def caption_fields(params: Mapping[str, Any]) -> dict[str, Any]:
        """The message fields of a caption (``caption``, ``caption_entities``); ``{}`` for
        none."""
        caption = params.get("caption")
        if caption is None:
            return {}
        if not isinstance(caption, str):
            raise bad_request('field "caption" must be of type String')
        shown, entities = parsed_text(
            caption, params.get("parse_mode"), params.get("caption_entities")
        )
        if text_length(shown) > CAPTION_LIMIT:
            raise bad_request("message caption is too long")
        if not shown:
            return {}
        fields: dict[str, Any] = {"caption": shown}
        if entities:
            fields["caption_entities"] = entities
        return fields

    @staticmethod
    def text_fields(params: Mapping[str, Any]) -> dict[str, Any]:
        """The message fields of a text (``text``, ``entities``, ``link_preview_options``), or
        the refusal: empty after entities parsing, or over 4096 UTF-16 code units."""
        text, entities = parsed_text(
            params.get("text", ""), params.get("parse_mode"), params.get("entities")
        )
        if not text.strip():
            raise bad_request("message text is empty")
        if text_length(text) > TEXT_LIMIT:
            raise bad_request("message is too long")
        fields: dict[str, Any] = {"text": text}
        if entities:
            fields["entities"] = entities
        if isinstance(params.get("link_preview_options"), dict):
            fields["link_preview_options"] = params["link_preview_options"]
        return fields

    @staticmethod
    def markup_fields(params: Mapping[str, Any]) -> dict[str, Any]:
        """The message field for an inline keyboard (``{}`` for none), or the refusal."""
        markup = check_reply_markup(params.get("reply_markup"))
        return {} if markup is None else {"reply_markup": markup}

    def _target_chat(self, bot_id: int, params: Mapping[str, Any]) -> dict[str, Any]:
        """The chat to send to, after its state and flood control allow the send."""
        chat_id = self.chats.resolve(params["chat_id"])
        chat = self.chats.check_send(chat_id, bot_id=bot_id)
        self.count_call(bot_id, chat_id, paid=params.get("allow_paid_broadcast") is True)
        return chat

    def count_call(self, bot_id: int, chat_id: int, *, paid: bool = False) -> None:
        """Count an accepted send, edit or delete in ``chat_id`` against flood control, or
        refuse it with 429 (and count nothing)."""
        retry_after = self.limiter.acquire(bot_id=bot_id, chat_id=chat_id, paid=paid)
        if retry_after is not None:
            raise too_many_requests(retry_after)

    def resolve_media(self, bot_id: int, kind: FileKind, value: Any) -> ResolvedMedia:
        if isinstance(value, Upload):
            if value.size == 0:
                raise bad_request("file must be non-empty")
            if kind is FileKind.PHOTO and value.size > PHOTO_UPLOAD_LIMIT:
                raise bad_request(PHOTO_TOO_BIG)
            return ResolvedMedia("upload", new=FileSource.from_upload(value))
        text = str(value).strip()
        if text.lower().startswith(("http://", "https://")):
            if text in self.unreachable_urls:
                raise bad_request(NOT_FETCHED)
            refusal = url_refusal(kind, text, self.url_sizes.get(text))
            if refusal is not None:
                raise bad_request(refusal)
            return ResolvedMedia("url", new=FileSource.from_url(text))
        stored = self.files.lookup(text, bot_id=bot_id)
        if stored is None:
            raise bad_request("wrong file identifier/HTTP URL specified")
        if stored.kind is not kind:
            raise bad_request(
                f"can't use file of type {stored.kind.tdlib_name} as {kind.tdlib_name}"
            )
        return ResolvedMedia("file_id", stored=stored)

    def materialize(
        self, bot_id: int, kind: FileKind, media: ResolvedMedia, params: Mapping[str, Any]
    ) -> StoredFile:
        if media.stored is not None:
            return media.stored
        assert media.new is not None
        return self.files.mint(bot_id=bot_id, kind=kind, source=media.new, params=params)

    @staticmethod
    def media_content(stored: StoredFile) -> dict[str, Any]:
        content: dict[str, Any] = {stored.kind.value: stored.media}
        if stored.kind is FileKind.ANIMATION:
            animation = stored.media
            content["document"] = {
                key: animation[key]
                for key in ("file_id", "file_unique_id", "thumbnail", "file_name", "mime_type")
                if key in animation
            } | {"file_size": animation["file_size"]}
        return content

    # ---- methods ----

    def _send_message(
        self, method: MethodSpec, bot_id: int, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        self._require(method, params, None)
        content = self.text_fields(params) | self.markup_fields(params)
        chat = self._target_chat(bot_id, params)
        return self.messages.add(bot_id=bot_id, chat=chat, content=content)

    def _send_media(
        self,
        method: MethodSpec,
        kind: FileKind,
        bot_id: int,
        params: Mapping[str, Any],
        trace: _Trace,
    ) -> dict[str, Any]:
        self._require(method, params, kind)
        caption = self.caption_fields(params)
        markup = self.markup_fields(params)
        media = self.resolve_media(bot_id, kind, params[kind.value])
        chat = self._target_chat(bot_id, params)
        stored = self.materialize(bot_id, kind, media, params)
        trace.media = media.source
        content = self.media_content(stored) | caption | markup
        return self.messages.add(bot_id=bot_id, chat=chat, content=content)

    def _copy_message(
        self, method: MethodSpec, bot_id: int, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        self._require(method, params, None)
        from_chat_id = self.chats.resolve(params["from_chat_id"])
        self.chats.check_reach(from_chat_id, write=False)  # the source first, as Telegram
        original = self.messages.get(
            bot_id=bot_id, chat_id=from_chat_id, message_id=params["message_id"]
        )
        if original is None:
            raise bad_request("message to copy not found")
        content = {key: original[key] for key in COPIED_FIELDS if key in original}
        has_media = "text" not in content
        if has_media and "caption" in params:
            caption = self.caption_fields(params)
            content.pop("caption", None)
            content.pop("caption_entities", None)
            content.update(caption)
        content.update(self.markup_fields(params))
        chat = self._target_chat(bot_id, params)
        copy = self.messages.add(bot_id=bot_id, chat=chat, content=content)
        return {"message_id": copy["message_id"]}

    def _forward_message(
        self, method: MethodSpec, bot_id: int, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        self._require(method, params, None)
        from_chat_id = self.chats.resolve(params["from_chat_id"])
        self.chats.check_reach(from_chat_id, write=False)  # the source first, as Telegram
        original = self.messages.get(
            bot_id=bot_id, chat_id=from_chat_id, message_id=params["message_id"]
        )
        if original is None:
            raise bad_request("message to forward not found")
        content: dict[str, Any] = {
            "forward_origin": _forward_origin(original),
            **{key: original[key] for key in COPIED_FIELDS if key in original},
        }
        chat = self._target_chat(bot_id, params)
        return self.messages.add(bot_id=bot_id, chat=chat, content=content)

    def _send_media_group(
        self,
        method: MethodSpec,
        bot_id: int,
        params: Mapping[str, Any],
        request: BotRequest,
        trace: _Trace,
    ) -> list[dict[str, Any]]:
        self._require(method, params, None)
        items: list[dict[str, Any]] = params["media"]
        if not items:
            raise bad_request("there are no messages to send")
        if len(items) > ALBUM_LIMIT:
            raise bad_request("too many messages to send as an album")
        planned: list[tuple[FileKind, ResolvedMedia, dict[str, Any], dict[str, Any]]] = []
        for item in items:
            kind = _ALBUM_KINDS.get(str(item.get("type")))
            if kind is None:
                raise bad_request(
                    f'can\'t parse InputMedia: type "{item.get("type")}" is unsupported'
                )
            value: Any = item.get("media")
            if isinstance(value, str) and value.startswith(ATTACH_PREFIX):
                value = request.uploads.get(value.removeprefix(ATTACH_PREFIX))
            if not value:
                raise bad_request("can't parse InputMedia: media not found")
            caption = self.caption_fields(item)
            planned.append((kind, self.resolve_media(bot_id, kind, value), item, caption))
        kinds = {kind for kind, *_ in planned}
        for lonely in (FileKind.DOCUMENT, FileKind.AUDIO):
            if lonely in kinds and len(kinds) > 1:
                raise bad_request(f"{lonely.value} can't be mixed with other media types")
        chat = self._target_chat(bot_id, params)
        group_id = str(secrets.randbits(63)) if len(planned) > 1 else None
        sent = []
        for kind, media, item, caption in planned:
            stored = self.materialize(bot_id, kind, media, item)
            content = self.media_content(stored)
            if group_id is not None:
                content["media_group_id"] = group_id
            content.update(caption)
            sent.append(self.messages.add(bot_id=bot_id, chat=chat, content=content))
        sources = {media.source for _, media, *_ in planned}
        trace.media = next(source for source in _SOURCE_ORDER if source in sources)
        return sent


def _forward_origin(original: Mapping[str, Any]) -> dict[str, Any]:
    """The MessageOrigin a forward of ``original`` shows."""
    chat = original["chat"]
    if chat["type"] == "channel":
        return {
            "type": "channel",
            "date": original["date"],
            "chat": chat,
            "message_id": original["message_id"],
        }
    sender = original.get("from") or {"id": chat["id"], "is_bot": False, "first_name": "User"}
    return {"type": "user", "date": original["date"], "sender_user": sender}
