"""The Bot API simulator's access checks beyond a send's: which chats a bot may still delete
and edit in, and a copy's or a forward's source chat, checked before anything else as the
Bot API server does (a send's own chat states are in ``test_simulator_knobs``)."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.fixtures.telegram import BOT_ID, call, failure
from tests.fixtures.telegram import http as http_fixture  # noqa: F401 -- fixture "http"
from tgbroadcast.simulator import ChatState, ChatType, Simulator


async def ok(http: aiohttp.ClientSession, sim: Simulator, method: str, **params: Any) -> Any:
    status, body = await call(http, sim, method, json=params)
    assert (status, body["ok"]) == (200, True), body
    return body["result"]


async def refused(
    http: aiohttp.ClientSession, sim: Simulator, method: str, **params: Any
) -> tuple[int, str]:
    status, body = await call(http, sim, method, json=params)
    return failure(status, body)


async def test_a_deleted_account_refuses_deletes_and_edits_but_not_copies_from_it(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    """The Bot API server asks for write access to delete or edit, which a deleted account
    (``deactivated``) refuses; reading its chat, to copy from it, is still allowed."""
    await ok(http, simulator, "sendMessage", chat_id=17, text="a")
    simulator.chats.declare(17, ChatState.DEACTIVATED)
    gone = (403, "Forbidden: user is deactivated")
    assert await refused(http, simulator, "deleteMessage", chat_id=17, message_id=1) == gone
    assert await refused(http, simulator, "deleteMessages", chat_id=17, message_ids=[1]) == gone
    edit = {"chat_id": 17, "message_id": 1, "text": "z"}
    assert await refused(http, simulator, "editMessageText", **edit) == gone
    assert [m["text"] for m in simulator.messages_by_chat()[17]] == ["a"]
    copied = await ok(http, simulator, "copyMessage", chat_id=18, from_chat_id=17, message_id=1)
    (copy,) = simulator.messages_by_chat()[18]
    assert (copy["message_id"], copy["text"]) == (copied["message_id"], "a")


async def test_a_copy_or_forward_checks_its_source_chat_first(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    channel, lost = -1001700000000, -1001700000001
    simulator.chats.declare(channel, chat_type=ChatType.CHANNEL)
    post = simulator.post_message(bot_id=BOT_ID, chat_id=channel, text="post")["message_id"]
    simulator.chats.declare(channel, ChatState.KICKED, chat_type=ChatType.CHANNEL)
    simulator.chats.declare(lost, ChatState.MISSING)
    simulator.chats.declare(19, ChatState.BLOCKED)  # the recipient's refusal would come second
    for method in ("copyMessage", "forwardMessage"):
        for source, refusal in (
            (channel, (403, "Forbidden: bot was kicked from the channel chat")),
            (lost, (400, "Bad Request: chat not found")),
        ):
            params = {"chat_id": 19, "from_chat_id": source, "message_id": post}
            assert await refused(http, simulator, method, **params) == refusal, (method, source)
    assert 19 not in simulator.messages_by_chat()
