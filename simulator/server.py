"""The simulator as a real HTTP server (aiohttp.web), reachable where api.telegram.org would be.

Routes: ``/bot<token>/<method>`` (GET and POST, any case of the method name) answer as the Bot API;
``/_sim/...`` is the control API (see :mod:`tgbroadcast.simulator.control`); anything else is 404
``Not Found``. Parameters come from the query string and the body (JSON, urlencoded or multipart,
where file parts are kept as digests, never in memory). The server never logs a request path: it
holds the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable
from types import TracebackType
from typing import Any

from aiohttp import BodyPartReader, web

from tgbroadcast.simulator.botapi import BotApi, BotRequest
from tgbroadcast.simulator.chats import Chats, ChatState, ChatType, chat_object
from tgbroadcast.simulator.control import control_routes
from tgbroadcast.simulator.envelope import NOT_FOUND, Answer, BotApiError, bad_request
from tgbroadcast.simulator.faults import Faults
from tgbroadcast.simulator.files import Upload
from tgbroadcast.simulator.ratelimits import RateLimiter, RateLimits
from tgbroadcast.simulator.recording import Call
from tgbroadcast.simulator.spec import Spec, default_spec

logger = logging.getLogger(__name__)

_BOT_PATH = re.compile(r"/bot([^/]*)/([^/]*)")
_UPLOAD_LIMIT = 50 * 1024 * 1024
_ENTITY_TOO_LARGE = BotApiError(413, "Request Entity Too Large")


class Simulator:
    """A Telegram Bot API simulator on a real socket. Async context manager.

    ``tokens``: the accepted tokens (default: any well-formed ``<digits>:<secret>``).
    ``rate_limits``: flood control (default: off; ``RateLimits.telegram()`` for the FAQ's).
    ``default_chat_state``: what undeclared chats do (default: accept messages).
    ``clock``: the monotonic clock of flood control (tests pass a manual one).

    Every call is recorded (:attr:`calls`); behaviour knobs are :attr:`chats`,
    :attr:`faults`, :attr:`rate_limits` and :meth:`fail_url`; :meth:`age_messages` makes time
    pass for sent messages.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Iterable[str] | None = None,
        rate_limits: RateLimits | None = None,
        default_chat_state: ChatState = ChatState.ACTIVE,
        clock: Callable[[], float] = time.monotonic,
        spec: Spec | None = None,
        upload_limit: int = _UPLOAD_LIMIT,
    ) -> None:
        self._host = host
        self._port = port
        self._upload_limit = upload_limit
        self.chats = Chats(default_state=default_chat_state)
        self.faults = Faults()
        self._limiter = RateLimiter(rate_limits or RateLimits.off(), clock=clock)
        self._api = BotApi(
            spec=spec or default_spec(),
            chats=self.chats,
            faults=self.faults,
            limiter=self._limiter,
            tokens=frozenset(tokens) if tokens is not None else None,
        )
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._closing = asyncio.Event()
        self._changed = asyncio.Condition()

    # ---- lifetime ----

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen; :attr:`api_url` is valid from now on."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        app = web.Application(client_max_size=self._upload_limit + 1024 * 1024)
        app.add_routes(control_routes(self))
        app.router.add_route("*", "/{tail:.*}", self._bot_api)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._closing.clear()
        self._bound_port = int(runner.addresses[0][1])
        logger.info("Bot API simulator listening on %s", self.api_url)

    async def close(self) -> None:
        """Stop listening; hung calls are released first. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing.set()
        await runner.cleanup()

    @property
    def api_url(self) -> str:
        """What a client uses instead of ``https://api.telegram.org``."""
        if self._bound_port is None:
            raise RuntimeError("the simulator is not running")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._bound_port}"

    # ---- knobs ----

    @property
    def rate_limits(self) -> RateLimits:
        return self._limiter.limits

    @rate_limits.setter
    def rate_limits(self, limits: RateLimits) -> None:
        self._limiter.limits = limits
        self._limiter.clear()

    def declare_url_size(self, url: str, size: int) -> None:
        """Media by ``url`` is ``size`` bytes: above Telegram's URL limits (5 MB photos, 20 MB
        other files) a send of it is refused with "failed to get HTTP URL content"."""
        self._api.url_sizes[url] = size

    def fail_url(self, url: str) -> None:
        """Media sent by this URL fails with ``Bad Request: failed to get HTTP URL content``."""
        self._api.unreachable_urls.add(url)

    def reset(self) -> None:
        """Back to a fresh simulator: no calls, messages, files, declared chats, faults or
        flood history. Tokens and rate limits stay."""
        self._api.reset()
        self.chats.clear()
        self.faults.clear()

    def post_message(self, *, bot_id: int, chat_id: int, text: str) -> dict[str, Any]:
        """Store a text message in ``chat_id`` as if ``bot_id`` had sent it (e.g. a channel
        post), for copyMessage and forwardMessage to find; returns the Message."""
        chat_type = self.chats.rule(chat_id).chat_type or ChatType.for_id(chat_id)
        chat = chat_object(chat_id, chat_type, self.chats.rule(chat_id).username)
        return self._api.messages.add(bot_id=bot_id, chat=chat, content={"text": text})

    def age_messages(
        self,
        *,
        chat_id: int,
        seconds: float,
        bot_id: int | None = None,
        message_ids: Collection[int] | None = None,
    ) -> int:
        """Make the messages stored in ``chat_id`` (of ``bot_id``, or of every bot; only
        ``message_ids`` if given) as if sent ``seconds`` earlier: their ``date`` moves back, so
        past 48 hours they can no longer be deleted. Returns how many were aged."""
        return self._api.messages.age(
            chat_id=chat_id, seconds=seconds, bot_id=bot_id, message_ids=message_ids
        )

    # ---- inspection ----

    @property
    def calls(self) -> tuple[Call, ...]:
        """Every call answered so far, in order."""
        return self._api.recorder.calls

    @property
    def call_count(self) -> int:
        """``len(self.calls)`` without copying them (for polling predicates)."""
        return len(self._api.recorder)

    def calls_to(self, chat_id: int, *, method: str | None = None) -> list[Call]:
        """The calls whose ``chat_id`` parameter is ``chat_id``."""
        return self._api.recorder.select(chat_id=chat_id, method=method)

    def select_calls(
        self, *, chat_id: int | None = None, method: str | None = None, since: int = 0
    ) -> list[Call]:
        return self._api.recorder.select(chat_id=chat_id, method=method, since=since)

    def messages_by_chat(self, bot_id: int | None = None) -> dict[int, list[dict[str, Any]]]:
        """The messages stored per chat, in ``message_id`` order."""
        return self._api.messages.by_chat(bot_id)

    async def wait_for(self, predicate: Callable[[Simulator], bool]) -> None:
        """Return once ``predicate(self)`` holds, re-checked after every answered call.

        Waits without bound: callers put it under ``asyncio.timeout(...)``.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    # ---- HTTP ----

    async def _bot_api(self, request: web.Request) -> web.StreamResponse:
        match = _BOT_PATH.fullmatch(request.path)
        if match is None:
            return _render(Answer.failure(NOT_FOUND))
        token, method = match.group(1), match.group(2)
        body_error: BotApiError | None = None
        try:
            params, uploads = await self._read_params(request)
        except BotApiError as failure:
            params, uploads, body_error = {}, {}, failure
        answer = self._api.handle(
            BotRequest(
                token=token, method=method, params=params, uploads=uploads, body_error=body_error
            )
        )
        async with self._changed:
            self._changed.notify_all()
        if answer.hang > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=answer.hang)
        return _render(answer)

    async def _read_params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Upload]]:
        params: dict[str, Any] = {key: request.query[key] for key in request.query}
        uploads: dict[str, Upload] = {}
        if not request.body_exists:
            return params, uploads
        content_type = request.content_type
        try:
            if content_type == "application/json":
                params.update(await _read_json(request))
            elif content_type == "application/x-www-form-urlencoded":
                form = await request.post()
                params.update({key: str(form[key]) for key in form})
            elif content_type.startswith("multipart/"):
                await self._read_multipart(request, params, uploads)
        except web.HTTPRequestEntityTooLarge:
            raise _ENTITY_TOO_LARGE from None
        except (UnicodeDecodeError, ValueError):
            raise bad_request("can't parse the request body") from None
        return params, uploads

    async def _read_multipart(
        self, request: web.Request, params: dict[str, Any], uploads: dict[str, Upload]
    ) -> None:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.filename is None:
                params[part.name] = await part.text()
                continue
            digest = hashlib.sha256()
            size = 0
            while chunk := await part.read_chunk():
                size += len(chunk)
                if size > self._upload_limit:
                    raise _ENTITY_TOO_LARGE
                digest.update(chunk)
            uploads[part.name] = Upload(
                filename=part.filename,
                content_type=part.headers.get("Content-Type", "application/octet-stream"),
                size=size,
                sha256=digest.hexdigest(),
            )


async def _read_json(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise bad_request("can't parse JSON object") from None
    if not isinstance(data, dict):
        raise bad_request("can't parse JSON object")
    return data


def _render(answer: Answer) -> web.Response:
    return web.Response(
        status=answer.status,
        body=answer.body,
        content_type=answer.content_type,
        charset="utf-8",
    )
