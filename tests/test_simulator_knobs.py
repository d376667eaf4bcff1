"""The Bot API simulator's behaviour knobs, over real HTTP: declared chat states, faults,
rate limits, the control HTTP API and the command line.

The Bot API itself (envelope, methods, bodies, validation, files, recording) is tested in
``test_simulator``.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramForbiddenError, TelegramMigrateToChat, TelegramRetryAfter

from tests.fixtures.telegram import BOT_ID, BOT_TOKEN, PHOTO_URL, call, failure
from tests.fixtures.telegram import http as http_fixture  # noqa: F401 -- fixture "http"
from tgbroadcast.simulator import ChatState, ChatType, Fault, Limit, RateLimits, Simulator
from tgbroadcast.simulator import __main__ as simulator_main


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- declared chats ----


@pytest.mark.parametrize(
    ("chat_id", "state", "code", "description"),
    [
        (11, ChatState.BLOCKED, 403, "Forbidden: bot was blocked by the user"),
        (12, ChatState.DEACTIVATED, 403, "Forbidden: user is deactivated"),
        (13, ChatState.NOT_STARTED, 403, "Forbidden: bot can't initiate conversation with a user"),
        (-14, ChatState.KICKED, 403, "Forbidden: bot was kicked from the group chat"),
        (-15, ChatState.DELETED, 403, "Forbidden: the group chat was deleted"),
        (16, ChatState.MISSING, 400, "Bad Request: chat not found"),
    ],
)
async def test_declared_chat_states(
    http: aiohttp.ClientSession,
    simulator: Simulator,
    chat_id: int,
    state: ChatState,
    code: int,
    description: str,
) -> None:
    simulator.chats.declare(chat_id, state)
    status, body = await call(
        http, simulator, "sendMessage", json={"chat_id": chat_id, "text": "x"}
    )
    assert failure(status, body) == (code, description)
    status, body = await call(
        http, simulator, "sendPhoto", json={"chat_id": chat_id, "photo": PHOTO_URL}
    )
    assert failure(status, body) == (code, description)
    assert simulator.messages_by_chat() == {}


async def test_migrated_group_names_the_supergroup(
    http: aiohttp.ClientSession, simulator: Simulator, bot: Bot
) -> None:
    simulator.chats.declare(-555, ChatState.MIGRATED)
    status, body = await call(http, simulator, "sendMessage", json={"chat_id": -555, "text": "x"})
    assert failure(status, body) == (
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
    )
    assert body["parameters"] == {"migrate_to_chat_id": -1000000000555}
    with pytest.raises(TelegramMigrateToChat) as error:
        await bot.send_message(-555, "x")
    assert error.value.migrate_to_chat_id == -1000000000555
    assert (await bot.send_message(-1000000000555, "moved")).chat.type == "supergroup"


async def test_sending_to_itself_or_by_username(simulator: Simulator, bot: Bot) -> None:
    with pytest.raises(TelegramForbiddenError) as error:
        await bot.send_message(BOT_ID, "me")
    assert error.value.message == "Forbidden: bot can't send messages to bots"
    simulator.chats.declare(-1001111111111, chat_type=ChatType.CHANNEL, username="news")
    message = await bot.send_message("@news", "hello")
    assert message.chat.id == -1001111111111


async def test_undeclared_chats_can_default_to_not_started(http: aiohttp.ClientSession) -> None:
    async with Simulator(default_chat_state=ChatState.NOT_STARTED) as sim:
        sim.chats.declare(1, ChatState.ACTIVE)
        assert (await call(http, sim, "sendMessage", json={"chat_id": 1, "text": "x"}))[0] == 200
        status, body = await call(http, sim, "sendMessage", json={"chat_id": 2, "text": "x"})
        assert failure(status, body)[0] == 403


# ---- faults ----


async def test_server_error_fault_then_recovery(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    simulator.faults.inject(Fault.server_error(), times=2)
    message = {"chat_id": 1, "text": "x"}
    for _ in range(2):
        status, body = await call(http, simulator, "sendMessage", json=message)
        assert failure(status, body) == (500, "Internal Server Error")
    assert (await call(http, simulator, "sendMessage", json=message))[0] == 200
    assert simulator.faults.pending == 0
    assert [c.error_code for c in simulator.calls] == [500, 500, None]


async def test_faults_can_target_a_method_and_a_chat(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    simulator.faults.inject(Fault.too_many_requests(7), method="sendPhoto", chat_id=2)
    assert (await call(http, simulator, "sendMessage", json={"chat_id": 2, "text": "x"}))[0] == 200
    photo = {"chat_id": 1, "photo": PHOTO_URL}
    assert (await call(http, simulator, "sendPhoto", json=photo))[0] == 200
    status, body = await call(http, simulator, "sendPhoto", json=photo | {"chat_id": "2"})
    assert failure(status, body) == (429, "Too Many Requests: retry after 7")
    assert body["parameters"] == {"retry_after": 7}


async def test_html_bad_gateway_fault(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    simulator.faults.inject(Fault.bad_gateway_html())
    url = f"{simulator.api_url}/bot{BOT_TOKEN}/getMe"
    async with http.get(url) as response:
        assert response.status == 502
        assert response.content_type == "text/html"
        assert "<h1>502 Bad Gateway</h1>" in await response.text()
    assert simulator.calls[-1].error_code == 502


async def test_hang_fault_outlasts_the_client_timeout_and_close_releases_it(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator() as sim:
        sim.faults.inject(Fault.hang(seconds=600))
        with pytest.raises(TimeoutError):
            await call(http, sim, "getMe", timeout=aiohttp.ClientTimeout(total=0.3))
        assert (await call(http, sim, "getMe"))[0] == 200
        api_url = sim.api_url
    # Leaving the block returned although the hung call had 600 s to go.
    assert [c.error_code for c in sim.calls] == [504, None]
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(f"{api_url}/bot{BOT_TOKEN}/getMe")


# ---- flood control ----


async def test_rate_limits_answer_429_until_the_window_passes(
    http: aiohttp.ClientSession,
) -> None:
    clock = ManualClock()
    limits = RateLimits(bot=Limit(3, 1.0), private_chat=Limit(1, 1.0), group_chat=Limit(2, 60.0))
    async with Simulator(rate_limits=limits, clock=clock) as sim:

        async def send(chat_id: int, **extra: Any) -> tuple[int, dict[str, Any]]:
            return await call(
                http, sim, "sendMessage", json={"chat_id": chat_id, "text": "x"} | extra
            )

        assert (await send(1))[0] == 200
        status, body = await send(1)
        assert failure(status, body) == (429, "Too Many Requests: retry after 1")
        assert body["parameters"] == {"retry_after": 1}
        assert (await send(2))[0] == 200
        assert (await send(-3))[0] == 200
        status, body = await send(4)
        assert failure(status, body)[0] == 429  # the bot's 3/s
        clock.now += 1.0
        assert (await send(1))[0] == 200
        assert (await send(-3))[0] == 200
        status, body = await send(-3)
        assert failure(status, body) == (429, "Too Many Requests: retry after 59")
        clock.now += 59.0
        assert (await send(-3))[0] == 200


async def test_paid_broadcasts_use_the_paid_limit(http: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    limits = RateLimits(bot=Limit(1, 1.0), paid_bot=Limit(100, 1.0))
    async with Simulator(rate_limits=limits, clock=clock) as sim:
        free = {"chat_id": 1, "text": "x"}
        assert (await call(http, sim, "sendMessage", json=free))[0] == 200
        assert (await call(http, sim, "sendMessage", json=free | {"chat_id": 2}))[0] == 429
        paid = free | {"chat_id": 3, "allow_paid_broadcast": True}
        assert (await call(http, sim, "sendMessage", json=paid))[0] == 200


async def test_aiogram_sees_retry_after(simulator: Simulator, bot: Bot) -> None:
    simulator.rate_limits = RateLimits(private_chat=Limit(1, 30.0))
    await bot.send_message(1, "one")
    with pytest.raises(TelegramRetryAfter) as error:
        await bot.send_message(1, "two")
    assert error.value.retry_after == 30


# ---- control API ----


async def test_control_api(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    base = f"{simulator.api_url}/_sim"

    async def control(verb: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async with http.request(verb, f"{base}{path}", **kwargs) as response:
            return response.status, await response.json()

    status, declared = await control("POST", "/chats", json={"chat_id": 31, "state": "blocked"})
    assert status == 200
    assert declared["state"] == "blocked"
    status, armed = await control(
        "POST", "/faults", json={"kind": "server_error", "times": 1, "chat_id": 32}
    )
    assert status == 200
    assert armed["pending"] == 1
    for chat_id in (31, 32, 33):
        await call(http, simulator, "sendMessage", json={"chat_id": chat_id, "text": "x"})
    status, calls = await control("GET", "/calls")
    assert [c["error_code"] for c in calls["calls"]] == [403, 500, None]
    status, since = await control("GET", "/calls", params={"since": "2"})
    assert [c["seq"] for c in since["calls"]] == [3]
    status, only = await control("GET", "/calls", params={"chat_id": "31"})
    assert [c["params"]["chat_id"] for c in only["calls"]] == [31]
    status, messages = await control("GET", "/messages")
    assert list(messages["chats"]) == ["33"]
    status, stats = await control("GET", "/stats")
    assert stats["calls"] == 3
    assert stats["by_error_code"] == {"403": 1, "500": 1}
    status, limits = await control("PUT", "/rate_limits", json={"preset": "telegram"})
    assert status == 200
    assert limits["bot"] == [30, 1.0]
    assert simulator.rate_limits == RateLimits.telegram()
    status, _ = await control("POST", "/unreachable_urls", json={"url": "https://x.test/a.jpg"})
    assert status == 200
    status, error = await control("POST", "/chats", json={"chat_id": 1, "state": "sleepy"})
    assert status == 400
    assert "sleepy" in error["error"]
    status, _ = await control("POST", "/reset")
    assert status == 200
    assert simulator.calls == ()
    assert simulator.messages_by_chat() == {}
    assert (await call(http, simulator, "sendMessage", json={"chat_id": 31, "text": "x"}))[0] == 200


# ---- the command line ----


async def test_runs_alone_and_stops_on_sigterm(http: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tgbroadcast.simulator",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            line = (await process.stdout.readline()).decode()
        assert line.startswith("Bot API simulator listening on http://127.0.0.1:")
        api_url = line.rsplit(" ", 1)[1].strip()
        async with http.get(f"{api_url}/bot{BOT_TOKEN}/getMe") as response:
            assert (await response.json())["result"]["id"] == BOT_ID
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_process_keeps_what_lives_out_of_full_collections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The standalone simulator freezes what is alive once a second (its call records grow
    with every send; full collections over them stalled it for tens of milliseconds)."""
    frozen = asyncio.Event()
    monkeypatch.setattr(simulator_main, "FREEZE_INTERVAL", 0.0)
    monkeypatch.setattr(gc, "freeze", frozen.set)
    keeper = asyncio.create_task(simulator_main._keep_collections_short())
    try:
        await frozen.wait()
    finally:
        keeper.cancel()
