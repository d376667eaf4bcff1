"""The worker's Telegram client: one :class:`Content` to one chat, through aiogram's ``Bot``.

Guarantees:

* :meth:`TelegramSender.send` either returns the :class:`SentMessage` Telegram accepted or raises a
  :class:`~tgbroadcast.core.domain.errors.TelegramError` subclass — never aiogram's, aiohttp's or
  asyncio's own exceptions (cancellation still propagates as ``CancelledError``). The retry decision
  travels on the exception (``retryable``, ``outcome``, ``retry_after``, ``new_chat_id``).
* Every content is one Bot API call: an album is one sendMediaGroup (its ``message_id`` is
  the first message's, ``message_ids`` every item's, its ``file_id`` all items' as one
  value), a copy one copyMessage, a forward one forwardMessage. Formatting, keyboards and flags
  go on every method that takes them (:mod:`tgbroadcast.worker.aiogram_content`); left at
  their defaults they are not sent at all.
* :func:`~tgbroadcast.worker.telegram_errors.map_error` is the one place where foreign
  exceptions become ours (Telegram's descriptions kept exactly, bot tokens masked).
* With a ``gate`` (the rate limiter's permit), the request is built first — the method's
  model, its form — and its connection taken (from the pool, or opened: a TCP and TLS
  handshake, one to three round trips to Telegram); the gate is awaited as aiohttp starts
  writing the body (:class:`_GatedBody`; aiohttp holds the headers back until then), so that
  neither the building nor the connection is between the rate slot and the wire, nor a turn
  of the event loop (on Python 3.11 aiohttp writes a body from a task of its own, which
  starts one turn after the request is sent: several milliseconds on a busy worker, which
  made 429s at 1000/s). A gate that answers False stops the send: :class:`NotSent`, nothing
  was written (the connection is closed). The request's timeout starts when the gate opens:
  waiting for a slot (through a pause shorter than ``worker.park_after``) is not the
  request's time. A send waiting at its gate holds its connection, so the session allows
  ``connections`` of them: give it at least the number of calls that may wait at their
  gates at once, or one whose slot comes first may wait behind them for a connection and
  miss it. Callers build a request shortly before its slot
  (:meth:`~tgbroadcast.worker.ratelimit.Permit.approach`), so few wait at once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, ClassVar, cast

import aiohttp
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import ClientDecodeError, TelegramNetworkError
from aiogram.methods import DeleteMessage
from aiogram.methods.base import TelegramMethod, TelegramType
from aiogram.types import BufferedInputFile
from aiogram.utils.token import TokenValidationError, validate_token
from aiohttp import ClientTimeout, TCPConnector
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

import tgbroadcast.core.tracing as tracing
from tgbroadcast.core.domain.content import album_file_ids, encode_album_file_ids
from tgbroadcast.core.domain.errors import (
    PermanentError,
    RateLimited,
)
from tgbroadcast.core.domain.model import Content, MediaType
from tgbroadcast.worker import aiogram_content, aiogram_models  # noqa: F401 - holds the answers' models
from tgbroadcast.worker.aiogram_content import InputMedia
from tgbroadcast.worker.telegram_answers import Sent, is_send, read_done, read_sent
from tgbroadcast.worker.telegram_errors import map_error, of_copy_source
from tgbroadcast.worker.telegram_forms import Prepared, delete_body, prepare, request_body

logger = logging.getLogger(__name__)

TELEGRAM_API_URL = "https://api.telegram.org"

API_METHODS: Mapping[MediaType, str] = {
    MediaType.TEXT: "sendMessage",
    MediaType.PHOTO: "sendPhoto",
    MediaType.VIDEO: "sendVideo",
    MediaType.ANIMATION: "sendAnimation",
    MediaType.DOCUMENT: "sendDocument",
    MediaType.AUDIO: "sendAudio",
    MediaType.VOICE: "sendVoice",
    MediaType.VIDEO_NOTE: "sendVideoNote",
    MediaType.STICKER: "sendSticker",
    MediaType.ALBUM: "sendMediaGroup",
    MediaType.COPY: "copyMessage",
    MediaType.FORWARD: "forwardMessage",
}
"""The one Bot API method each kind of content is sent with."""

PREPARED_SENDS = 64
"""How many contents' sends a sender keeps made (:func:`prepare`), more than it sends at once."""

Gate = Callable[[], Awaitable[bool]]
"""Awaited right before a request is written: True to write it now, False not to send."""

_GATE: ContextVar[Gate | None] = ContextVar("tgbroadcast_send_gate", default=None)


class NotSent(Exception):
    """The send's gate refused it: no request was written."""


@dataclass(slots=True)
class _Gated:
    """A request's gate, awaited as its body is written (:class:`_GatedBody`)."""

    gate: Gate
    deadline: asyncio.Timeout
    """The request's timeout, set to ``seconds`` from when the gate opens."""
    seconds: float
    refused: bool = False
    failure: Exception | None = None
    """What the gate raised (aiohttp reports it as a connection error). Not a cancellation:
    aiohttp cancels the body's task when the connection fails, which is that failure."""

    async def open(self) -> None:
        try:
            opened = await self.gate()
        except Exception as exc:
            self.failure = exc
            raise
        if not opened:
            self.refused = True
            raise NotSent
        self.deadline.reschedule(asyncio.get_running_loop().time() + self.seconds)


class _GatedBody(Payload):
    """A request's body that opens the request's gate before its first byte is written.

    aiohttp writes a body once the request's connection is in hand, holding the headers
    back until then, so the gate sits right before the request leaves: after the connection
    is taken (or opened) and in the task that writes it (on Python 3.11 that task starts one
    turn of the event loop after the request is sent, a turn of several milliseconds on a
    busy worker)."""

    def __init__(self, body: Payload, gated: _Gated) -> None:
        super().__init__(body, headers=body.headers)
        self._body = body
        self._gated = gated
        self._size = body.size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._body.decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self._gated.open()
        await self._body.write(writer)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        await self._gated.open()
        await self._body.write_with_length(writer, content_length)

    async def close(self) -> None:
        await self._body.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class SentMessage:
    """A message Telegram accepted.

    ``file_id`` is the file Telegram stored for a media message (the largest size of a
    photo), for resending it by id; ``None`` for text. ``message_ids`` has every message's id,
    in order, when the send made several (an album's items; ``message_id`` is the first).
    """

    message_id: int
    file_id: str | None
    message_ids: tuple[int, ...] = ()
    paid: bool = False
    """Sent as a paid broadcast's message (set by the caller that knows)."""


def _connecting(seconds: float) -> ClientTimeout:
    """aiohttp's part of a request's timeout: opening its connection (the rest, from the
    gate to the answer, is the request's deadline)."""
    return ClientTimeout(total=None, sock_connect=seconds)


class _Session(AiohttpSession):
    """aiogram's session, with the send's gate between taking a connection and writing the
    request on it; over plain HTTP (a local Bot API server or the simulator) it skips the
    250 ms aiogram waits on close for TLS connections to shut down."""

    _tls: ClassVar[ssl.SSLContext | None] = None
    """The first session's TLS context, which every later one uses too: aiogram makes one per
    session, loading the CA bundle again (18-20 ms of the event loop and 0.7 MB of a worker's
    memory a bot)."""

    def __init__(self, *, connections: int, **kwargs: Any) -> None:
        if _Session._tls is None:
            super().__init__(limit=connections, **kwargs)
            _Session._tls = self._connector_init["ssl"]
            return
        # aiogram's own __init__ (no proxy) but for the context it would load, the first
        # session's instead; tests/test_telegram_sender.py compares the two, attribute by
        # attribute, for every aiogram release the project installs.
        BaseSession.__init__(self, **kwargs)
        self._session = None
        self._connector_type = TCPConnector
        self._connector_init = {
            "ssl": _Session._tls,
            "limit": connections,
            "ttl_dns_cache": 3600,
        }
        self._should_reset_connector = True
        self._proxy = None

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's signature
    ) -> TelegramType:
        return await self.request(bot, method, request_body(self, bot, method), timeout)

    async def request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        body: Payload,
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's
    ) -> TelegramType:
        """:meth:`make_request` with the request's body made already."""
        session = await self.create_session()
        url = self.api.api_url(token=bot.token, method=method.__api_method__)
        gate = _GATE.get()
        seconds = float(self.timeout if timeout is None else timeout)
        gated: _Gated | None = None
        try:
            async with asyncio.timeout(None if gate is not None else seconds) as deadline:
                if gate is not None:
                    gated = _Gated(gate, deadline, seconds)
                    body = _GatedBody(body, gated)
                async with session.post(url, data=body, timeout=_connecting(seconds)) as resp:
                    raw_result = await resp.text()
        except TimeoutError as exc:
            raise TelegramNetworkError(method=method, message="Request timeout error") from exc
        except aiohttp.ClientError as exc:
            if gated is not None and gated.refused:
                raise NotSent from None
            if gated is not None and gated.failure is not None:
                raise gated.failure from None
            message = f"{type(exc).__name__}: {exc}"
            raise TelegramNetworkError(method=method, message=message) from exc
        if HTTPStatus.OK <= resp.status <= HTTPStatus.IM_USED:
            sent = read_sent(method, raw_result)
            if sent is not None:  # a send's success, read for its ids alone
                return cast(TelegramType, sent)
            if read_done(method, raw_result):  # a recall's or an edit's: nothing kept of it
                return cast(TelegramType, True)
        response = self.check_response(
            bot=bot, method=method, status_code=resp.status, content=raw_result
        )
        if is_send(method):
            # aiogram accepted an answer to a send that read_sent could not read.
            error = ValueError("no integer message_id")
            raise ClientDecodeError("Failed to deserialize object", error, raw_result)
        return cast(TelegramType, response.result)

    async def close(self) -> None:
        if self.api.base.startswith("https://"):
            await super().close()
        elif self._session is not None and not self._session.closed:
            await self._session.close()


class TelegramSender:
    """Sends one :class:`Content` to one chat with aiogram's ``Bot``. Async context manager
    (owns the Bot and its aiohttp session, of at most ``connections`` connections: see the
    module's docs on gates)."""

    def __init__(
        self,
        *,
        token: str,
        api_url: str = TELEGRAM_API_URL,
        request_timeout: float = 30.0,
        connections: int = 100,
    ) -> None:
        try:
            validate_token(token)
        except TokenValidationError:
            raise ValueError("not a Telegram bot token (expected <digits>:<secret>)") from None
        if request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if connections < 1:
            raise ValueError("connections must be at least 1")
        session = _Session(
            api=TelegramAPIServer.from_base(api_url),
            timeout=request_timeout,
            connections=connections,
        )
        self._bot = Bot(token, session=session)
        self._session = session
        self._prepared: dict[tuple[int, str], tuple[Content, Prepared | None]] = {}
        """The sends made once (:func:`prepare`), by their content's ``id`` and media."""

    async def __aenter__(self) -> TelegramSender:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._bot.session.close()

    async def send(
        self,
        chat_id: int,
        content: Content,
        *,
        media: str | None = None,
        upload: bytes | None = None,
        album_uploads: Mapping[str, bytes] | None = None,
        broadcast_id: int | None = None,
        gate: Gate | None = None,
    ) -> SentMessage:
        """:meth:`send_content`, traced: one client span per call, named after the Bot API
        method, with ``broadcast_id`` and, on a refusal, its code and outcome (no chat id).
        ``gate`` is awaited right before the request is written (see the module's docs)."""
        method = API_METHODS[content.media_type]
        attributes: dict[str, str | int] = {"telegram.method": method}
        if broadcast_id is not None:
            attributes[tracing.BROADCAST_ID] = broadcast_id
        token = _GATE.set(gate)
        with tracing.span(f"telegram {method}", attributes, kind="client"):
            try:
                return await self.send_content(
                    chat_id, content, media=media, upload=upload, album_uploads=album_uploads
                )
            except PermanentError as exc:
                tracing.set_attributes(
                    {
                        "telegram.error_code": exc.error_code,
                        "tgbroadcast.outcome": exc.outcome.value,
                    }
                )
                raise
            except RateLimited:
                tracing.set_attributes({"telegram.error_code": 429})
                raise
            finally:
                _GATE.reset(token)

    async def delete(
        self,
        chat_id: int,
        message_ids: Sequence[int],
        *,
        broadcast_id: int | None = None,
        gate: Gate | None = None,
    ) -> None:
        """Delete the bot's messages ``message_ids`` (1 to 100, of one chat): one message with
        ``deleteMessage`` (its refusal says whether it was found and still deletable),
        several with one ``deleteMessages`` (which skips those it cannot delete). Traced
        like :meth:`send`; raises only :class:`TelegramError` subclasses and :class:`NotSent`."""
        if not 0 < len(message_ids) <= 100:
            raise ValueError("deleteMessages takes 1 to 100 message ids")
        method = "deleteMessage" if len(message_ids) == 1 else "deleteMessages"
        attributes: dict[str, str | int] = {"telegram.method": method}
        if broadcast_id is not None:
            attributes[tracing.BROADCAST_ID] = broadcast_id
        token = _GATE.set(gate)
        with tracing.span(f"telegram {method}", attributes, kind="client"):
            try:
                if len(message_ids) == 1:  # made as a send is, without aiogram's call chain
                    call = DeleteMessage(chat_id=chat_id, message_id=message_ids[0])
                    body = delete_body(chat_id, message_ids[0])
                    await self._session.request(self._bot, call, body)
                else:
                    await self._bot.delete_messages(chat_id, list(message_ids))
            except NotSent:
                raise
            except Exception as exc:
                error = map_error(exc)
                if isinstance(error, PermanentError):
                    tracing.set_attributes({"telegram.error_code": error.error_code})
                raise error from None
            finally:
                _GATE.reset(token)

    async def edit(
        self,
        chat_id: int,
        message_ids: Sequence[int],
        content: Content,
        *,
        media_changed: bool,
        as_text: bool = False,
        broadcast_id: int | None = None,
        gate: Gate | None = None,
    ) -> None:
        """Make the bot's message(s) ``message_ids`` in ``chat_id`` carry ``content`` with
        the one ``editMessage*`` call its kind takes: a text's ``editMessageText``; a
        caption's ``editMessageCaption`` (an album's: on its first message), or with
        ``media_changed`` ``editMessageMedia``; a video note's or sticker's
        ``editMessageReplyMarkup``; ``as_text``: ``editMessageText`` whatever the kind (a
        copy of a text message). Traced like :meth:`send`; raises only
        :class:`TelegramError` subclasses and :class:`NotSent`."""
        if not message_ids:
            raise ValueError("an edit needs the message's id")
        kind = MediaType.TEXT if as_text else content.media_type
        method = aiogram_content.edit_method(kind, media_changed=media_changed)
        attributes: dict[str, str | int] = {"telegram.method": method}
        if broadcast_id is not None:
            attributes[tracing.BROADCAST_ID] = broadcast_id
        token = _GATE.set(gate)
        with tracing.span(f"telegram {method}", attributes, kind="client"):
            try:
                await self._bot(
                    aiogram_content.edit_call(
                        method, chat_id, message_ids[0], content, media_changed=media_changed
                    )
                )
            except NotSent:
                raise
            except Exception as exc:
                error = map_error(exc)
                if isinstance(error, PermanentError):
                    tracing.set_attributes({"telegram.error_code": error.error_code})
                raise error from None
            finally:
                _GATE.reset(token)

    async def send_content(
        self,
        chat_id: int,
        content: Content,
        *,
        media: str | None = None,
        upload: bytes | None = None,
        album_uploads: Mapping[str, bytes] | None = None,
    ) -> SentMessage:
        """Send ``content`` to ``chat_id``. ``media`` (a file_id) replaces ``content.media_url``;
        ``upload`` sends these bytes as the file instead (multipart, named
        ``content.media_filename``). For an album, ``media`` is the items' file_ids
        (:func:`~tgbroadcast.core.domain.content.encode_album_file_ids`) and ``album_uploads`` the
        bytes of uploaded items by their ``media_upload`` name.

        Raises only :class:`TelegramError` subclasses, and :class:`NotSent` when the gate
        refused the send.
        """
        kind = content.media_type
        try:
            if kind is MediaType.ALBUM:
                return await self._send_album(chat_id, content, media, album_uploads or {})
            if kind in (MediaType.COPY, MediaType.FORWARD):
                return await self._send_copy(chat_id, content)
        except NotSent:
            raise
        except Exception as exc:
            error = map_error(exc)
            if kind is not MediaType.ALBUM:
                assert content.options.source is not None, "validation requires a source"
                error = of_copy_source(error, chat_id, content.options.source.from_chat_id)
            raise error from None
        source: str | BufferedInputFile | None = media or content.media_url
        if upload is not None:
            source = BufferedInputFile(upload, filename=content.media_filename or "file")
        if kind.has_media and not source:
            raise PermanentError(f"a {kind} message needs media (a URL or file_id)", error_code=400)
        caption = content.message if kind.takes_caption and content.message else None
        try:
            message = await self._send(chat_id, content, source or "", caption)
        except NotSent:
            raise
        except Exception as exc:
            raise map_error(exc) from None
        return SentMessage(message_id=message.message_id, file_id=message.file_id)

    async def _send_album(
        self,
        chat_id: int,
        content: Content,
        file_ids: str | None,
        uploads: Mapping[str, bytes],
    ) -> SentMessage:
        """sendMediaGroup; the message id is the first message's, the file_id the items'."""
        items = content.options.album
        reused = album_file_ids(file_ids) if file_ids else None
        media: list[InputMedia] = []
        for index, item in enumerate(items):
            source: str | BufferedInputFile
            if reused is not None and len(reused) == len(items):
                source = reused[index]
            elif item.media_upload is not None:
                if item.media_upload not in uploads:
                    raise PermanentError(
                        f"the upload of album item {index} is missing", error_code=400
                    )
                source = BufferedInputFile(
                    uploads[item.media_upload], filename=item.media_filename or "file"
                )
            else:
                source = item.media_url or ""
            media.append(aiogram_content.input_media(item, source, content.options))
        messages = _album(
            await self._bot.send_media_group(
                chat_id,
                media,
                allow_paid_broadcast=True if content.allow_paid_broadcast else None,
                **aiogram_content.flags(content.options),
            )
        )
        stored = [message.file_id for message in messages]
        file_id = None
        if len(stored) == len(items) and all(stored):
            file_id = encode_album_file_ids(tuple(f for f in stored if f))
        ids = tuple(message.message_id for message in messages)
        return SentMessage(
            message_id=ids[0], file_id=file_id, message_ids=ids if len(ids) > 1 else ()
        )

    async def _send_copy(self, chat_id: int, content: Content) -> SentMessage:
        """copyMessage (optionally with a new caption and a keyboard) or forwardMessage."""
        options = content.options
        assert options.source is not None, "validation requires a source"
        source = options.source
        if content.media_type is MediaType.FORWARD:
            forwarded = await self._bot.forward_message(
                chat_id, source.from_chat_id, source.message_id, **aiogram_content.flags(options)
            )
            return SentMessage(message_id=_one(forwarded).message_id, file_id=None)
        caption = content.message or None
        copied = await self._bot.copy_message(
            chat_id,
            source.from_chat_id,
            source.message_id,
            caption=caption,
            parse_mode=aiogram_content.parse_mode(options) if caption else None,
            caption_entities=aiogram_content.entities(options) if caption else None,
            reply_markup=aiogram_content.reply_markup(options),
            allow_paid_broadcast=True if content.allow_paid_broadcast else None,
            **aiogram_content.flags(options),
        )
        return SentMessage(message_id=_one(copied).message_id, file_id=None)

    async def _send(
        self, chat_id: int, content: Content, source: str | BufferedInputFile, caption: str | None
    ) -> Sent:
        """One message (:func:`~tgbroadcast.worker.aiogram_content.send_call`), made once for
        every chat its content goes to unless it uploads a file."""
        if isinstance(source, str):
            prepared = self._prepare(content, source, caption)
            if prepared is not None:
                return _one(await self._session.request(self._bot, *prepared.to(chat_id)))
        call: TelegramMethod[Any] = aiogram_content.send_call(chat_id, content, source, caption)
        return _one(await self._bot(call))

    def _prepare(self, content: Content, source: str, caption: str | None) -> Prepared | None:
        """``content``'s send with ``source`` for any chat, made on its first send. The cache
        holds its contents, so an ``id`` it keeps is never another's."""
        key = (id(content), source)
        known = self._prepared.get(key)
        if known is not None and known[0] is content:
            return known[1]
        call = aiogram_content.send_call(0, content, source, caption)
        prepared = prepare(self._session, self._bot, call)
        if len(self._prepared) >= PREPARED_SENDS:
            self._prepared.clear()
        self._prepared[key] = (content, prepared)
        return prepared


def _one(answer: object) -> Sent:
    """A one-message send's answer as the session read it (:func:`read_sent`)."""
    if not isinstance(answer, Sent):
        raise TypeError(f"a send was answered with {type(answer).__name__}, not read")
    return answer


def _album(answer: object) -> tuple[Sent, ...]:
    """An album's answer as the session read it: its messages, in order."""
    if not isinstance(answer, tuple) or not all(isinstance(a, Sent) for a in answer):
        raise TypeError(f"an album was answered with {type(answer).__name__}, not read")
    return answer


__all__ = ["API_METHODS", "Gate", "NotSent", "SentMessage", "TelegramSender", "map_error"]
