"""The simulator's HTTP control API, under ``/_sim`` (no Bot API route starts so).

For tests and benchmarks that run the simulator in another process:

* ``GET  /_sim/calls[?chat_id=&method=&since=]`` → ``{"calls": [Call.to_json()...]}``
* ``GET  /_sim/messages[?bot_id=]`` → ``{"chats": {"<chat_id>": [Message...]}}``
* ``POST /_sim/messages`` ``{"bot_id", "chat_id", "text"}`` → the Message: a post for
  copyMessage / forwardMessage to find
* ``POST /_sim/messages/age`` ``{"chat_id", "seconds", "bot_id"?, "message_ids"?}`` →
  ``{"aged": N}``: those messages as if sent ``seconds`` earlier (48 h ends deletes)
* ``GET  /_sim/stats`` → ``{"calls": N, "messages": N, "by_method": {...},
  "by_error_code": {...}, "faults_pending": N}``
* ``POST /_sim/reset`` → forget calls, messages, files, chats, faults
* ``POST /_sim/chats`` ``{"chat_id", "state", "chat_type"?, "migrate_to_chat_id"?,
  "username"?}`` → declare a chat
* ``POST /_sim/faults`` ``{"kind", "times"?, "method"?, "chat_id"?, ...}`` → arm a fault
  (see :meth:`tgbroadcast.simulator.faults.Fault.from_json`)
* ``PUT  /_sim/rate_limits`` ``{"preset": "telegram" | "off"}`` or explicit limits
* ``POST /_sim/unreachable_urls`` ``{"url"}`` → media by that URL fails
* ``POST /_sim/url_sizes`` ``{"url", "size"}`` → media by that URL is ``size`` bytes

Answers are JSON; a bad control request is 400 ``{"error": "..."}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tgbroadcast.simulator.chats import ChatState, ChatType
from tgbroadcast.simulator.faults import Fault
from tgbroadcast.simulator.ratelimits import RateLimits

if TYPE_CHECKING:
    from tgbroadcast.simulator.server import Simulator

PREFIX = "/_sim"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bad(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=400)


async def _body(request: web.Request) -> dict[str, Any]:
    data = await request.json()
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def _guarded(handler: _Handler) -> _Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (ValueError, KeyError, TypeError) as exc:
            return _bad(f"{type(exc).__name__}: {exc}")

    return run


def control_routes(sim: Simulator) -> list[web.RouteDef]:
    """The ``/_sim`` routes acting on ``sim``."""

    async def calls(request: web.Request) -> web.StreamResponse:
        query = request.query
        chat_id = int(query["chat_id"]) if "chat_id" in query else None
        found = sim.select_calls(
            chat_id=chat_id, method=query.get("method"), since=int(query.get("since", "0"))
        )
        return web.json_response({"calls": [call.to_json() for call in found]})

    async def messages(request: web.Request) -> web.StreamResponse:
        bot_id = int(request.query["bot_id"]) if "bot_id" in request.query else None
        by_chat = sim.messages_by_chat(bot_id)
        return web.json_response({"chats": {str(k): v for k, v in by_chat.items()}})

    async def post_message(request: web.Request) -> web.StreamResponse:
        data = await _body(request)
        text = data["text"]
        if not isinstance(text, str) or not text:
            raise TypeError("text must be a non-empty string")
        message = sim.post_message(
            bot_id=int(data["bot_id"]), chat_id=int(data["chat_id"]), text=text
        )
        return web.json_response(message)

    async def age_messages(request: web.Request) -> web.StreamResponse:
        data = await _body(request)
        seconds = data["seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError("seconds must be a number >= 0")
        ids = data.get("message_ids")
        if ids is not None and not (
            isinstance(ids, list)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise TypeError("message_ids must be a list of integers")
        bot_id = data.get("bot_id")
        aged = sim.age_messages(
            chat_id=int(data["chat_id"]),
            seconds=float(seconds),
            bot_id=int(bot_id) if bot_id is not None else None,
            message_ids=frozenset(ids) if ids is not None else None,
        )
        return web.json_response({"aged": aged})

    async def stats(request: web.Request) -> web.StreamResponse:
        recorded = sim.calls
        by_chat = sim.messages_by_chat()
        return web.json_response(
            {
                "calls": len(recorded),
                "messages": sum(len(v) for v in by_chat.values()),
                "by_method": dict(Counter(call.method for call in recorded)),
                "by_error_code": {
                    str(code): n
                    for code, n in Counter(call.error_code for call in recorded).items()
                    if code is not None
                },
                "faults_pending": sim.faults.pending,
            }
        )

    async def reset(request: web.Request) -> web.StreamResponse:
        sim.reset()
        return web.json_response({"ok": True})

    async def chats(request: web.Request) -> web.StreamResponse:
        data = await _body(request)
        chat_type = data.get("chat_type")
        migrate_to = data.get("migrate_to_chat_id")
        rule = sim.chats.declare(
            int(data["chat_id"]),
            ChatState(data.get("state", "active")),
            chat_type=ChatType(chat_type) if chat_type else None,
            migrate_to_chat_id=int(migrate_to) if migrate_to is not None else None,
            username=data.get("username"),
        )
        return web.json_response(
            {
                "chat_id": int(data["chat_id"]),
                "state": rule.state.value,
                "migrate_to_chat_id": rule.migrate_to_chat_id,
            }
        )

    async def faults(request: web.Request) -> web.StreamResponse:
        data = await _body(request)
        fault = Fault.from_json(data)
        chat_id = data.get("chat_id")
        sim.faults.inject(
            fault,
            times=int(data.get("times", 1)),
            method=data.get("method"),
            chat_id=int(chat_id) if chat_id is not None else None,
        )
        return web.json_response({"armed": fault.to_json(), "pending": sim.faults.pending})

    async def rate_limits(request: web.Request) -> web.StreamResponse:
        sim.rate_limits = RateLimits.from_json(await _body(request))
        return web.json_response(sim.rate_limits.to_json())

    async def unreachable_urls(request: web.Request) -> web.StreamResponse:
        url = (await _body(request))["url"]
        if not isinstance(url, str):
            raise TypeError("url must be a string")
        sim.fail_url(url)
        return web.json_response({"ok": True})

    async def url_sizes(request: web.Request) -> web.StreamResponse:
        data = await _body(request)
        url, size = data["url"], data["size"]
        if not isinstance(url, str):
            raise TypeError("url must be a string")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError("size must be an integer >= 0")
        sim.declare_url_size(url, size)
        return web.json_response({"ok": True})

    return [
        web.get(f"{PREFIX}/calls", _guarded(calls)),
        web.get(f"{PREFIX}/messages", _guarded(messages)),
        web.post(f"{PREFIX}/messages", _guarded(post_message)),
        web.post(f"{PREFIX}/messages/age", _guarded(age_messages)),
        web.get(f"{PREFIX}/stats", _guarded(stats)),
        web.post(f"{PREFIX}/reset", _guarded(reset)),
        web.post(f"{PREFIX}/chats", _guarded(chats)),
        web.post(f"{PREFIX}/faults", _guarded(faults)),
        web.put(f"{PREFIX}/rate_limits", _guarded(rate_limits)),
        web.post(f"{PREFIX}/unreachable_urls", _guarded(unreachable_urls)),
        web.post(f"{PREFIX}/url_sizes", _guarded(url_sizes)),
    ]
