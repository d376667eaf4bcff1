"""The worker's Telegram sender against the simulator (and a few stub servers for answers the
simulator does not give): every media type, file_id reuse, and every error mapping."""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import GetMe
from aiohttp import web
from pydantic._internal import _generics as pydantic_generics

from tests.fixtures.services import free_port
from tests.fixtures.telegram import BOT_ID, BOT_SECRET, BOT_TOKEN, OTHER_BOT_TOKEN
from tests.fixtures.telegram import simulator as simulator_fixture  # noqa: F401 -- fixture
from tgbroadcast.core.domain.errors import (
    ChatMigrated,
    PermanentError,
    RateLimited,
    TelegramError,
    TransientError,
)
from tgbroadcast.core.domain.model import Content, DeliveryState, MediaType
from tgbroadcast.simulator import ChatState, Fault, Simulator
from tgbroadcast.worker.telegram import (
    NotSent,
    SentMessage,
    TelegramSender,
    _Session,
    map_error,
)
from tgbroadcast.worker.telegram_errors import of_copy_source, permanent_error

MEDIA_TYPES = [t for t in MediaType if t.has_media]
URL = "https://cdn.example.com/broadcast/item.bin"
URLS = {
    MediaType.DOCUMENT: "https://cdn.example.com/broadcast/item.pdf",
    MediaType.STICKER: "https://cdn.example.com/broadcast/item.webp",
}
"""Telegram fetches documents by URL only as GIF, PDF or ZIP, stickers only as .WEBP."""
ROUND = b"a round video"
"""Video notes are never sent by URL: uploaded instead."""


def media_content(message: str, media_type: MediaType) -> tuple[Content, bytes | None]:
    """``media_type`` by a URL Telegram fetches, or (a video note) uploaded."""
    if media_type is MediaType.VIDEO_NOTE:
        return Content(message=message, media_type=media_type, media_filename="r.mp4"), ROUND
    return Content(
        message=message, media_type=media_type, media_url=URLS.get(media_type, URL)
    ), None


@pytest.fixture
async def sender(simulator: Simulator) -> AsyncIterator[TelegramSender]:
    async with TelegramSender(token=BOT_TOKEN, api_url=simulator.api_url) as client:
        yield client


@asynccontextmanager
async def stub_api(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A one-handler HTTP server answering every path; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def assert_no_token(error: TelegramError) -> None:
    assert BOT_SECRET not in error.description
    assert BOT_SECRET not in str(error)
    assert BOT_SECRET not in repr(error)


# ---- sending ----


async def test_text_message(simulator: Simulator, sender: TelegramSender) -> None:
    sent = await sender.send(501, Content(message="hello everyone"))
    assert sent == SentMessage(message_id=1, file_id=None)
    (call,) = simulator.calls
    assert (call.method, call.params["chat_id"], call.params["text"]) == (
        "sendMessage",
        501,
        "hello everyone",
    )
    assert (await sender.send(501, Content(message="again"))).message_id == 2


async def test_the_gate_opens_after_the_request_is_built_and_before_it_is_written(
    simulator: Simulator, sender: TelegramSender
) -> None:
    """The gate runs once the request is built (content refused before that never asks it),
    nothing reaches Telegram until it answers, and False sends nothing."""
    asked = asyncio.Event()
    opened = asyncio.Event()
    answers: list[bool] = []

    async def gate() -> bool:
        asked.set()
        await opened.wait()
        return answers.pop(0)

    answers += [True, False]
    sending = asyncio.create_task(sender.send(501, Content(message="at the slot"), gate=gate))
    await asked.wait()
    assert not simulator.calls  # built, not written
    opened.set()
    assert (await sending).message_id == 1
    with pytest.raises(NotSent):
        await sender.send(502, Content(message="refused at the gate"), gate=gate)
    assert [call.params["chat_id"] for call in simulator.calls] == [501]
    asked.clear()
    with pytest.raises(PermanentError):  # refused before a request exists: no gate asked
        await sender.send(503, Content(message="x", media_type=MediaType.PHOTO), gate=gate)
    assert not asked.is_set()


async def test_every_bot_verifies_telegram_with_one_tls_context(simulator: Simulator) -> None:
    """aiogram loads the CA bundle for each session: the senders of a worker's bots share
    the first one's context (20 ms and 0.7 MB a bot), which verifies Telegram's certificate."""
    async with (
        TelegramSender(token=BOT_TOKEN, api_url=simulator.api_url) as one,
        TelegramSender(token=OTHER_BOT_TOKEN, api_url=simulator.api_url) as other,
    ):
        contexts = [sender._session._connector_init["ssl"] for sender in (one, other)]
        assert contexts[0] is contexts[1]
        assert isinstance(contexts[0], ssl.SSLContext)
        assert contexts[0].verify_mode is ssl.CERT_REQUIRED
        assert contexts[0].check_hostname
        assert contexts[0].cert_store_stats()["x509_ca"] > 0  # the CA bundle, loaded
        assert (await other.send(501, Content(message="hi"))).message_id > 0


def test_a_later_session_is_aiograms_own_but_for_the_context_it_does_not_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every session after the first is made without aiogram's ``__init__`` (which loads the
    CA bundle: 18-20 ms of the event loop a bot): attribute for attribute what aiogram's makes,
    for the aiogram installed, with the first session's context."""
    api = TelegramAPIServer.from_base("http://127.0.0.1:1")
    first = _Session(api=api, timeout=7, connections=3)  # the class's context, if not yet
    loaded: list[object] = []
    original = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        loaded.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    later = _Session(api=api, timeout=7, connections=3)
    assert loaded == []
    reference = AiohttpSession(api=api, timeout=7, limit=3)
    assert set(vars(later)) == set(vars(reference))
    for name, value in vars(reference).items():
        if name == "_connector_init":
            assert later._connector_init == {**value, "ssl": first._connector_init["ssl"]}
        elif name != "middleware":  # a manager of its own, empty
            assert getattr(later, name) == value, name
    assert type(later.middleware) is type(reference.middleware)
    assert later._connector_init["ssl"] is _Session._tls


async def test_answer_models_are_not_rebuilt_after_garbage_collection(
    sender: TelegramSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiogram parametrizes ``Response[...]`` per answer and pydantic caches it weakly: the
    sender holds the models so a collection does not make the next answer rebuild one."""
    built: list[object] = []
    original = pydantic_generics.create_generic_submodel

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(pydantic_generics, "create_generic_submodel", counting)
    for text in ("one", "two"):
        gc.collect()
        assert (await sender.send(501, Content(message=text))).message_id > 0
    assert built == []


async def test_a_sends_success_is_read_without_aiograms_models(
    simulator: Simulator, sender: TelegramSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send's success is read for its message id and file_id alone, a recall's or an
    edit's as a success; aiogram's own check of an answer (its pydantic models) judges the
    rest: refusals and other methods' answers."""
    checked: list[str] = []
    original = AiohttpSession.check_response

    def counting(self: AiohttpSession, **kwargs: Any) -> Any:
        checked.append(kwargs["method"].__api_method__)
        return original(self, **kwargs)

    monkeypatch.setattr(AiohttpSession, "check_response", counting)
    photo = await sender.send(1, Content(message="p", media_type=MediaType.PHOTO, media_url=URL))
    sizes = simulator.messages_by_chat()[1][0]["photo"]
    assert photo == SentMessage(message_id=1, file_id=sizes[-1]["file_id"])
    assert (await sender.send(1, Content(message="t"))).message_id == 2
    assert checked == []
    simulator.chats.declare(77, ChatState.BLOCKED)
    with pytest.raises(PermanentError):
        await sender.send(77, Content(message="hi"))
    await sender.edit(1, [2], Content(message="t2"), media_changed=False)
    assert [m.get("text") for m in simulator.messages_by_chat()[1]] == [None, "t2"]
    await sender.delete(1, [1])
    await sender.delete(1, [2, 3])
    assert checked == ["sendMessage"]
    assert 1 not in simulator.messages_by_chat()  # both deleted
    with pytest.raises(PermanentError):
        await sender.delete(1, [1])  # deleted already: refused
    with pytest.raises(PermanentError):
        await sender.edit(1, [9], Content(message="t3"), media_changed=False)
    assert checked == ["sendMessage", "deleteMessage", "editMessageText"]


@pytest.mark.parametrize(
    "result",
    [{"chat": {"id": 1, "type": "private"}}, {"message_id": "7"}, [{"message_id": 7}], None],
    ids=["no message_id", "message_id not an integer", "a list", "no result"],
)
async def test_a_success_without_an_integer_message_id_is_transient(result: Any) -> None:
    """aiogram's models accept ``"7"`` for an integer; the sender, which keeps the id, does not:
    either way the answer is not the Bot API's and the send is made again."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "result": result})

    async with stub_api(handler) as api_url, TelegramSender(token=BOT_TOKEN, api_url=api_url) as c:
        with pytest.raises(TransientError) as error:
            await c.send(1, Content(message="hi"))
    assert "not the Bot API's JSON" in error.value.description


@pytest.mark.parametrize(
    ("call", "result"),
    [
        ("delete", {"message_id": 5}),  # a message is no delete's answer
        ("delete", [True]),
        ("edit", {"message_id": "7"}),
        ("edit", [{"message_id": 7}]),
    ],
)
async def test_a_follow_ups_odd_success_is_judged_by_aiogram(call: str, result: Any) -> None:
    """Only a delete's ``true`` and an edit's message (or ``true``) are read as a success;
    any other answer goes to aiogram's check, which finds it is not the Bot API's."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "result": result})

    async with stub_api(handler) as api_url, TelegramSender(token=BOT_TOKEN, api_url=api_url) as c:
        made = (
            c.delete(1, [5])
            if call == "delete"
            else c.edit(1, [7], Content(message="hi"), media_changed=False)
        )
        with pytest.raises(TransientError):
            await made


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
async def test_each_media_type_by_url_then_by_file_id(
    simulator: Simulator, sender: TelegramSender, media_type: MediaType
) -> None:
    content, upload = media_content("look at this", media_type)
    first = await sender.send(1, content, upload=upload)
    by_url = simulator.calls[-1]
    assert by_url.method.lower() == "send" + media_type.value.replace("_", "")
    assert by_url.media == ("url" if upload is None else "upload")
    if upload is None:
        assert by_url.params[media_type.value] == content.media_url
    stored = simulator.messages_by_chat()[1][0][media_type.value]
    expected = stored[-1]["file_id"] if media_type is MediaType.PHOTO else stored["file_id"]
    assert first.file_id == expected

    assert first.file_id is not None
    again = await sender.send(2, content, media=first.file_id)
    by_id = simulator.calls[-1]
    assert by_id.media == "file_id"
    assert by_id.params[media_type.value] == first.file_id
    assert again.file_id == first.file_id
    resent = simulator.messages_by_chat()[2][0][media_type.value]
    assert resent == stored


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
async def test_caption_only_when_non_empty_and_the_type_takes_one(
    simulator: Simulator, sender: TelegramSender, media_type: MediaType
) -> None:
    captioned, upload = media_content("the caption", media_type)
    await sender.send(1, captioned, upload=upload)
    await sender.send(1, media_content("", media_type)[0], upload=upload)
    with_text, without_text = simulator.calls
    assert with_text.error_code is None
    if media_type.takes_caption:
        assert with_text.params["caption"] == "the caption"
        assert simulator.messages_by_chat()[1][0]["caption"] == "the caption"
    else:
        assert "caption" not in with_text.params
    assert "caption" not in without_text.params


async def test_media_without_a_source_is_refused_before_any_call(
    simulator: Simulator, sender: TelegramSender
) -> None:
    with pytest.raises(PermanentError) as error:
        await sender.send(1, Content(message="x", media_type=MediaType.PHOTO))
    assert error.value.error_code == 400
    assert simulator.calls == ()


def test_a_malformed_token_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="not a Telegram bot token") as error:
        TelegramSender(token="no-colon-secret-value")
    assert "no-colon-secret-value" not in str(error.value)


# ---- errors from Telegram ----


@pytest.mark.parametrize(
    ("state", "code", "description", "outcome"),
    [
        (ChatState.BLOCKED, 403, "Forbidden: bot was blocked by the user", DeliveryState.BLOCKED),
        (ChatState.DEACTIVATED, 403, "Forbidden: user is deactivated", DeliveryState.DEACTIVATED),
        (
            ChatState.NOT_STARTED,
            403,
            "Forbidden: bot can't initiate conversation with a user",
            DeliveryState.CANT_INITIATE,
        ),
        (ChatState.MISSING, 400, "Bad Request: chat not found", DeliveryState.CHAT_NOT_FOUND),
    ],
)
async def test_refusals_are_permanent_with_telegrams_description(
    simulator: Simulator,
    sender: TelegramSender,
    state: ChatState,
    code: int,
    description: str,
    outcome: DeliveryState,
) -> None:
    simulator.chats.declare(77, state)
    with pytest.raises(PermanentError) as error:
        await sender.send(77, Content(message="hi"))
    assert (error.value.error_code, error.value.description) == (code, description)
    # The retry decision, as data: final at once, with the recipient's outcome.
    assert error.value.retryable is False
    assert (error.value.outcome, error.value.content_error) == (outcome, False)
    assert_no_token(error.value)


async def test_bad_content_is_permanent(sender: TelegramSender) -> None:
    with pytest.raises(PermanentError) as error:
        await sender.send(1, Content(message="x" * 4097))
    assert error.value.description == "Bad Request: message is too long"
    assert (error.value.retryable, error.value.outcome) == (False, DeliveryState.BAD_REQUEST)
    assert error.value.content_error is True  # every recipient would be refused the same
    with pytest.raises(PermanentError) as wrong_id:
        await sender.send(1, Content(message="", media_type=MediaType.PHOTO), media="nope")
    assert wrong_id.value.description == "Bad Request: wrong file identifier/HTTP URL specified"


async def test_migrated_group(simulator: Simulator, sender: TelegramSender) -> None:
    simulator.chats.declare(-4321, ChatState.MIGRATED)
    with pytest.raises(ChatMigrated) as error:
        await sender.send(-4321, Content(message="hi group"))
    assert error.value.new_chat_id == -1000000004321
    assert error.value.description == "Bad Request: group chat was upgraded to a supergroup chat"
    assert error.value.retryable is True
    sent = await sender.send(error.value.new_chat_id, Content(message="hi group"))
    assert sent.message_id == 1


async def test_flood_control_is_rate_limited_with_retry_after(
    simulator: Simulator, sender: TelegramSender
) -> None:
    simulator.faults.inject(Fault.too_many_requests(5))
    with pytest.raises(RateLimited) as error:
        await sender.send(1, Content(message="hi"))
    assert error.value.retry_after == 5
    assert error.value.description == "Too Many Requests: retry after 5"
    assert_no_token(error.value)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.server_error(),
        Fault.server_error(502, "Bad Gateway"),
        Fault.server_error(500, "Internal Server Error: restart"),
        Fault.bad_gateway_html(),
    ],
    ids=["500", "502-json", "restarting", "502-html"],
)
async def test_server_failures_are_transient(
    simulator: Simulator, sender: TelegramSender, fault: Fault
) -> None:
    simulator.faults.inject(fault)
    with pytest.raises(TransientError) as error:
        await sender.send(1, Content(message="hi"))
    assert error.value.retryable is True
    # Once its retries run out, the recipient ends FAILED; the content is not at fault.
    assert (error.value.outcome, error.value.content_error) == (DeliveryState.FAILED, False)
    assert_no_token(error.value)
    if fault.kind.value == "error":
        assert error.value.description == fault.description
    assert (await sender.send(1, Content(message="hi"))).message_id == 1


@pytest.mark.parametrize(
    ("code", "description"),
    [
        (404, "Not Found"),
        (409, "Conflict: terminated by other getUpdates request"),
        (413, "Request Entity Too Large"),
    ],
)
async def test_other_refusals_keep_their_code(
    simulator: Simulator, sender: TelegramSender, code: int, description: str
) -> None:
    simulator.faults.inject(Fault.error(code, description))
    with pytest.raises(PermanentError) as error:
        await sender.send(1, Content(message="hi"))
    assert (error.value.error_code, error.value.description) == (code, description)


async def test_unauthorized_is_permanent() -> None:
    async with (
        Simulator(tokens=[OTHER_BOT_TOKEN]) as sim,
        TelegramSender(token=BOT_TOKEN, api_url=sim.api_url) as client,
    ):
        with pytest.raises(PermanentError) as error:
            await client.send(1, Content(message="hi"))
    assert (error.value.error_code, error.value.description) == (401, "Unauthorized")


async def test_a_hang_past_the_timeout_is_transient() -> None:
    async with (
        Simulator() as sim,
        TelegramSender(token=BOT_TOKEN, api_url=sim.api_url, request_timeout=0.3) as client,
    ):
        sim.faults.inject(Fault.hang(seconds=600))
        with pytest.raises(TransientError) as error:
            await client.send(1, Content(message="hi"))
        assert "timeout" in error.value.description.lower()
        assert_no_token(error.value)


async def test_an_unreachable_server_is_transient() -> None:
    api_url = f"http://127.0.0.1:{free_port()}"
    async with TelegramSender(token=BOT_TOKEN, api_url=api_url) as client:
        with pytest.raises(TransientError) as error:
            await client.send(1, Content(message="hi"))
    assert error.value.description.startswith("network error: ")
    assert_no_token(error.value)


async def test_an_answer_that_is_not_the_envelope_is_transient() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"unexpected": True})

    async with stub_api(handler) as api_url, TelegramSender(token=BOT_TOKEN, api_url=api_url) as c:
        with pytest.raises(TransientError) as error:
            await c.send(1, Content(message="hi"))
    assert "not the Bot API's JSON" in error.value.description


async def test_the_token_in_an_aiohttp_error_url_is_masked() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.path)  # a redirect loop: aiohttp names the URL

    async with stub_api(handler) as api_url, TelegramSender(token=BOT_TOKEN, api_url=api_url) as c:
        with pytest.raises(TransientError) as error:
            await c.send(1, Content(message="hi"))
    assert f"bot{BOT_ID}:***" in error.value.description
    assert_no_token(error.value)


async def test_an_unknown_telegram_code_is_transient_and_logged(
    simulator: Simulator, sender: TelegramSender, caplog: pytest.LogCaptureFixture
) -> None:
    simulator.faults.inject(Fault.error(402, "Payment Required"))
    with (
        caplog.at_level(logging.ERROR, logger="tgbroadcast.worker.telegram"),
        pytest.raises(TransientError) as error,
    ):
        await sender.send(1, Content(message="hi"))
    assert "Payment Required" in error.value.description
    assert [r.getMessage() for r in caplog.records] == ["unexpected error from the Telegram client"]


# ---- map_error on its own ----


def test_map_error_masks_tokens_in_foreign_errors() -> None:
    url = f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage"
    mapped = map_error(aiohttp.ClientConnectionError(f"connection lost to {url}"))
    assert isinstance(mapped, TransientError)
    assert f"bot{BOT_ID}:***/sendMessage" in mapped.description
    assert_no_token(mapped)
    method_free = map_error(TimeoutError())
    assert isinstance(method_free, TransientError)
    assert method_free.description == "network error: TimeoutError: timed out"


def test_map_error_keeps_our_own_errors_and_logs_surprises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ours = PermanentError("Forbidden: bot was blocked by the user", error_code=403)
    assert map_error(ours) is ours
    with caplog.at_level(logging.ERROR, logger="tgbroadcast.worker.telegram"):
        surprise = map_error(RuntimeError(f"boom {BOT_TOKEN}"))
    assert isinstance(surprise, TransientError)
    assert surprise.description == f"unexpected RuntimeError: boom {BOT_ID}:***"
    assert len(caplog.records) == 1
    assert BOT_SECRET not in caplog.text


def test_map_error_on_aiogram_network_errors() -> None:
    mapped = map_error(TelegramNetworkError(method=GetMe(), message="Request timeout error"))
    assert isinstance(mapped, TransientError)
    assert mapped.description == "network error: Request timeout error"


def test_a_copys_refusal_about_its_source_is_a_content_error() -> None:
    """Telegram checks a copy's source chat first: to a private chat a group's or channel's
    refusal is the source's; an upgrade from a basic group's source may be either chat's, and
    never moves the recipient (it could be to the source's new chat)."""
    kicked = permanent_error(403, "Forbidden: bot was kicked from the channel chat")
    upgraded = ChatMigrated("Bad Request: group chat was upgraded", new_chat_id=-1009)
    channel, basic_group, user, group = -1001234567890, -4242, 77, -555
    for error, recipient, source, content in (
        (kicked, user, channel, True),
        (kicked, group, channel, False),  # the group's own outcome
        (upgraded, user, basic_group, True),
        (upgraded, group, basic_group, True),
        (upgraded, group, channel, False),  # a channel is never upgraded: the recipient was
    ):
        mapped = of_copy_source(error, recipient, source)
        if content:
            assert isinstance(mapped, PermanentError), (error, recipient, source)
            assert (mapped.content_error, str(mapped)) == (True, str(error))
        else:
            assert mapped is error, (error, recipient, source)
