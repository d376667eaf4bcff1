"""Bots through the API (``/v1/bots``, ``CreateBot``...) on the whole stack and the simulator.

A created bot's token is checked with getMe, stored sealed with ``server.secret_key`` and
never shown again: not in an answer, a log line, or the database file's bytes. Scope
``bots:admin`` is required; a token limited to some bots sees only those. Key rotation:
``tgbroadcast bots reseal`` re-seals every stored token with the new first key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from tests.fixtures.grpc_details import bad_request, precondition
from tests.fixtures.processes import TGBROADCAST
from tests.fixtures.services import free_port
from tests.fixtures.stack import API_TOKEN, Backend, Stack, on_sqlite, start_stack
from tests.fixtures.telegram import BOT_TOKEN
from tgbroadcast.core.bots.directory import BotDirectory
from tgbroadcast.core.bots.service import BotService
from tgbroadcast.core.config.settings import BotSettings
from tgbroadcast.core.domain.model import BroadcastStatus, Content, NewBroadcast
from tgbroadcast.core.domain.states import Command
from tgbroadcast.simulator import Simulator
from tgbroadcast.simulator.faults import Fault
from tgbroadcast.v1 import broadcast_pb2 as pb

OLD_KEY = "old-secret-key-0123456789abcdefghijklmnop"
NEW_KEY = "new-secret-key-abcdefghijklmnop0123456789"
LIMITED = "limited-bots-admin-token-0123456789"
READER = "reader-token-without-bots-admin-012"
API_TOKENS = [
    {"name": "limited", "token": LIMITED, "scopes": ["bots:admin"], "bots": ["a"]},
    {"name": "reader", "token": READER, "scopes": ["broadcasts:read"]},
]
SHOP_TOKEN = "111111111:AAshopTokenSecretPart_0123456789abcdef"
SHOP_SECRET = SHOP_TOKEN.split(":", 1)[1]
OTHER_TOKEN = "222222222:AAotherTokenSecretPart_0123456789abcde"


def overrides(**extra: str) -> dict[str, str]:
    return {
        "TGB_SERVER_SECRET_KEY": OLD_KEY,
        "TGB_SERVER_API_TOKENS": json.dumps(API_TOKENS),
        **extra,
    }


@pytest.fixture
async def keyed(backend: Backend, simulator: Simulator) -> AsyncIterator[Stack]:
    """The stack with ``server.secret_key`` and the scoped tokens above."""
    async with start_stack(backend, simulator, overrides()) as stack:
        yield stack


async def call(
    stack: Stack, method: str, path: str, body: Any = None, *, token: str = API_TOKEN
) -> tuple[int, Any]:
    """One REST request; the status and the decoded answer (None for an empty one)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            stack.http_url + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        text = await response.text()
        assert SHOP_SECRET not in text
        return response.status, json.loads(text) if text else None


def metadata(token: str = API_TOKEN) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert SHOP_SECRET not in (caught.value.details() or "")
    return caught.value


async def test_a_bot_is_created_listed_read_and_deleted(keyed: Stack) -> None:
    status, created = await call(keyed, "POST", "/v1/bots", {"name": "shop", "token": SHOP_TOKEN})
    assert status == 201, created
    assert created.pop("created_at").endswith("Z")
    telegram = keyed.settings.telegram
    assert created == {
        "name": "shop",
        "bot_id": 111111111,
        "username": "sim111111111_bot",
        "rate_limit": telegram.rate_limit,
        "paid_rate_limit": telegram.paid_rate_limit,
        "api_url": telegram.api_url,
        "source": "api",
    }
    status, listed = await call(keyed, "GET", "/v1/bots")
    assert status == 200
    assert [(b["name"], b["source"]) for b in listed["bots"]] == [
        ("default", "config"),
        ("shop", "api"),
    ]
    assert listed["bots"][0]["created_at"] is None
    status, found = await call(keyed, "GET", "/v1/bots/shop")
    assert (status, found["bot_id"]) == (200, 111111111)
    # The server's own directory knows it at once, with its token opened.
    assert keyed.running.backends.bots.get("shop") is not None

    user = {"users": [{"id": 5, "tags": ["vip"]}], "bot": "shop"}
    assert (await call(keyed, "POST", "/v1/users", user))[0] == 200
    status, _ = await call(keyed, "DELETE", "/v1/bots/shop")
    assert status == 204
    status, problem = await call(keyed, "GET", "/v1/bots/shop")
    assert status == 404, problem
    assert keyed.running.backends.bots.get("shop") is None

    # The name stays its Telegram bot's: another bot may not take it (shop's users are not
    # its users); the same bot, with a new token, takes it back with its users.
    status, problem = await call(keyed, "POST", "/v1/bots", {"name": "shop", "token": OTHER_TOKEN})
    assert (status, problem["detail"]) == (
        409,
        "bot name 'shop' belonged to another Telegram bot (id 111111111) whose users and "
        "broadcasts keep it: choose another name",
    )
    assert (await call(keyed, "POST", "/v1/bots", {"name": "shop", "token": SHOP_TOKEN}))[0] == 201
    status, found = await call(keyed, "GET", "/v1/users/5?bot=shop")
    assert (status, found["tags"]) == (200, ["vip"])


@on_sqlite
async def test_the_same_over_grpc(keyed: Stack) -> None:
    async with keyed.stub() as stub:
        created = await stub.CreateBot(
            pb.CreateBotRequest(name="shop", token=SHOP_TOKEN, rate_limit=12.5),
            metadata=metadata(),
        )
        assert (created.bot.name, created.bot.bot_id) == ("shop", 111111111)
        assert (created.bot.rate_limit, created.bot.source) == (12.5, "api")
        assert created.bot.created_at.seconds > 0
        listed = await stub.ListBots(pb.ListBotsRequest(), metadata=metadata())
        assert [b.name for b in listed.bots] == ["default", "shop"]
        found = await stub.GetBot(pb.GetBotRequest(name="shop"), metadata=metadata())
        assert found.bot.username == "sim111111111_bot"
        await stub.DeleteBot(pb.DeleteBotRequest(name="shop"), metadata=metadata())
        error = await rpc_error(stub.GetBot(pb.GetBotRequest(name="shop"), metadata=metadata()))
        assert error.code() == grpc.StatusCode.NOT_FOUND


@on_sqlite
async def test_a_token_telegram_refuses_is_a_400_with_its_description(keyed: Stack) -> None:
    keyed.simulator.faults.inject(Fault.error(401, "Unauthorized"), method="getMe", times=2)
    status, problem = await call(keyed, "POST", "/v1/bots", {"name": "shop", "token": SHOP_TOKEN})
    assert status == 400
    assert [e["field"] for e in problem["errors"]] == ["token"]
    assert "Unauthorized" in problem["errors"][0]["message"]
    async with keyed.stub() as stub:
        error = await rpc_error(
            stub.CreateBot(pb.CreateBotRequest(name="shop", token=SHOP_TOKEN), metadata=metadata())
        )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unauthorized" in bad_request(error)["token"]
    assert (await call(keyed, "GET", "/v1/bots/shop"))[0] == 404  # nothing stored


@on_sqlite
async def test_an_unreachable_bot_api_is_a_400_on_api_url(keyed: Stack) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    body = {"name": "shop", "token": SHOP_TOKEN, "api_url": closed}
    status, problem = await call(keyed, "POST", "/v1/bots", body)
    assert status == 400, problem
    assert problem["errors"] == [
        {"field": "api_url", "message": f"the Bot API at {closed} could not be reached"}
    ]


@on_sqlite
async def test_an_api_url_with_credentials_is_refused(keyed: Stack) -> None:
    # It would be stored, listed and quoted in errors in clear.
    secret = "pw-" + SHOP_SECRET[:8]
    body = {"name": "shop", "token": SHOP_TOKEN, "api_url": f"https://me:{secret}@example.com"}
    status, problem = await call(keyed, "POST", "/v1/bots", body)
    assert status == 400
    assert problem["errors"] == [
        {"field": "api_url", "message": "must not carry a user name or password"}
    ]
    assert secret not in json.dumps(problem)
    assert not [c for c in keyed.simulator.calls if c.method == "getMe"]
    assert (await call(keyed, "GET", "/v1/bots/shop"))[0] == 404


def test_a_configured_api_url_is_shown_without_its_credentials() -> None:
    bot = BotSettings(
        name="proxied",
        token=SHOP_TOKEN,
        rate_limit=30.0,
        paid_rate_limit=1000.0,
        api_url="https://me:secret@botapi.example.com:8443/base",
    )
    shown = BotService._configured_info(bot).api_url
    assert shown == "https://***@botapi.example.com:8443/base"


@on_sqlite
async def test_without_a_secret_key_bots_cannot_be_stored(stack: Stack) -> None:
    status, problem = await call(stack, "POST", "/v1/bots", {"name": "shop", "token": SHOP_TOKEN})
    assert status == 409
    assert problem["detail"] == "server.secret_key is not set: bots cannot be stored"
    async with stack.stub() as stub:
        error = await rpc_error(
            stub.CreateBot(pb.CreateBotRequest(name="shop", token=SHOP_TOKEN), metadata=metadata())
        )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition(error) == ("STATE", "service", "no_secret_key")
    assert not [c for c in stack.simulator.calls if c.method == "getMe"]  # not even checked


@on_sqlite
async def test_names_and_tokens_are_unique_and_never_echoed(keyed: Stack) -> None:
    assert (await call(keyed, "POST", "/v1/bots", {"name": "shop", "token": SHOP_TOKEN}))[0] == 201
    for body, detail in [
        ({"name": "shop", "token": OTHER_TOKEN}, "bot 'shop' already exists"),
        ({"name": "default", "token": OTHER_TOKEN}, "bot 'default' already exists (configured)"),
        ({"name": "other", "token": SHOP_TOKEN}, "this token is already the token of 'shop'"),
        (
            {"name": "other", "token": BOT_TOKEN},
            "this token is already the token of a configured bot",
        ),
    ]:
        status, problem = await call(keyed, "POST", "/v1/bots", body)
        assert (status, problem["detail"]) == (409, detail)
        assert BOT_TOKEN.split(":")[1] not in json.dumps(problem)
    async with keyed.stub() as stub:
        error = await rpc_error(
            stub.CreateBot(pb.CreateBotRequest(name="x", token=SHOP_TOKEN), metadata=metadata())
        )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


@on_sqlite
async def test_bad_fields_are_named_without_echoing_the_token(keyed: Stack) -> None:
    bad_token = "not-a-token:" + SHOP_SECRET
    body = {
        "name": "Shop!",
        "token": bad_token,
        "rate_limit": 0.01,
        "paid_rate_limit": -1,
        "api_url": "ftp://example.com",
    }
    status, problem = await call(keyed, "POST", "/v1/bots", body)
    assert status == 400
    assert {e["field"] for e in problem["errors"]} == {
        "name",
        "token",
        "rate_limit",
        "paid_rate_limit",
        "api_url",
    }
    status, problem = await call(keyed, "POST", "/v1/bots", {"name": "a", "token": 5, "x": 1})
    assert status == 400
    assert {e["field"] for e in problem["errors"]} == {"token", "x"}
    assert not [c for c in keyed.simulator.calls if c.method == "getMe"]


@on_sqlite
async def test_the_scope_bots_admin_is_required(keyed: Stack) -> None:
    for method, path, body in [
        ("POST", "/v1/bots", {"name": "shop", "token": SHOP_TOKEN}),
        ("GET", "/v1/bots", None),
        ("GET", "/v1/bots/default", None),
        ("DELETE", "/v1/bots/default", None),
    ]:
        status, problem = await call(keyed, method, path, body, token=READER)
        assert (status, problem["detail"]) == (403, "this token lacks the scope bots:admin")
    async with keyed.stub() as stub:
        error = await rpc_error(stub.ListBots(pb.ListBotsRequest(), metadata=metadata(READER)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "bots:admin" in (error.details() or "")


@on_sqlite
async def test_a_token_limited_to_some_bots_sees_only_those(keyed: Stack) -> None:
    a_token = "333333333:AAbotAtokenSecretPart_0123456789abcde"
    for name, token in (("a", a_token), ("b", OTHER_TOKEN)):
        status, answer = await call(keyed, "POST", "/v1/bots", {"name": name, "token": token})
        assert status == 201, answer
    status, listed = await call(keyed, "GET", "/v1/bots", token=LIMITED)
    assert (status, [b["name"] for b in listed["bots"]]) == (200, ["a"])
    assert (await call(keyed, "GET", "/v1/bots/a", token=LIMITED))[0] == 200
    for method in ("GET", "DELETE"):  # as if b did not exist
        status, problem = await call(keyed, method, "/v1/bots/b", token=LIMITED)
        assert (status, problem["detail"]) == (404, "bot 'b' not found")
    body = {"name": "c", "token": SHOP_TOKEN}
    status, problem = await call(keyed, "POST", "/v1/bots", body, token=LIMITED)
    assert (status, problem["detail"]) == (403, "API token limited may not use bot 'c'")
    async with keyed.stub() as stub:
        listed_rpc = await stub.ListBots(pb.ListBotsRequest(), metadata=metadata(LIMITED))
        assert [b.name for b in listed_rpc.bots] == ["a"]
        error = await rpc_error(stub.GetBot(pb.GetBotRequest(name="b"), metadata=metadata(LIMITED)))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        error = await rpc_error(
            stub.CreateBot(
                pb.CreateBotRequest(name="c", token=SHOP_TOKEN), metadata=metadata(LIMITED)
            )
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_bot_with_unfinished_broadcasts_is_not_deleted(keyed: Stack) -> None:
    assert (await call(keyed, "POST", "/v1/bots", {"name": "shop", "token": SHOP_TOKEN}))[0] == 201
    store = keyed.running.backends.store
    later = datetime(2999, 1, 1, tzinfo=UTC)
    scheduled = await store.create_broadcast(
        NewBroadcast(content=Content(message="hi"), user_ids=(1,), send_at=later, bot="shop")
    )
    status, problem = await call(keyed, "DELETE", "/v1/bots/shop")
    assert status == 409
    assert problem["detail"].startswith(f"bot shop has unfinished broadcasts: {scheduled.id}")
    async with keyed.stub() as stub:
        error = await rpc_error(
            stub.DeleteBot(pb.DeleteBotRequest(name="shop"), metadata=metadata())
        )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition(error) == ("STATE", "bot", "unfinished_broadcasts")

    await store.move_broadcast(scheduled.id, Command.CANCEL)
    assert (await call(keyed, "DELETE", "/v1/bots/shop"))[0] == 204
    # Its broadcasts stay readable.
    assert (await store.get_broadcast(scheduled.id)).bot == "shop"
    # ... and are not recalled: no worker sends (or deletes) as a deleted bot.
    status, problem = await call(keyed, "POST", f"/v1/broadcasts/{scheduled.id}/recall")
    assert (status, problem["state"]) == (409, "bot_deleted")
    assert "bot 'shop', which was deleted" in problem["detail"]
    assert (await store.get_broadcast(scheduled.id)).status is BroadcastStatus.CANCELLED


@on_sqlite
async def test_a_configured_bot_is_deleted_in_the_configuration_only(keyed: Stack) -> None:
    status, problem = await call(keyed, "DELETE", "/v1/bots/default")
    assert status == 409
    assert problem["detail"] == (
        "bot default is configured in bots:/telegram.token; remove it there"
    )
    assert (await call(keyed, "DELETE", "/v1/bots/nobody"))[0] == 404


@on_sqlite
async def test_the_token_is_nowhere_in_clear(
    keyed: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"name": "shop", "token": SHOP_TOKEN}
    assert (await call(keyed, "POST", "/v1/bots", body))[0] == 201  # call() checks answers
    assert (await call(keyed, "POST", "/v1/bots", body))[0] == 409
    keyed.simulator.faults.inject(Fault.error(401, "Unauthorized"), method="getMe")
    assert (await call(keyed, "POST", "/v1/bots", {**body, "name": "x"}))[0] == 409
    assert (await call(keyed, "GET", "/v1/bots"))[0] == 200
    for record in caplog.records:
        assert SHOP_SECRET not in f"{record.getMessage()} {record.__dict__}"
    database = Path(keyed.settings.database.url.split("///", 1)[1])
    files = [path for path in database.parent.iterdir() if path.name.startswith(database.name)]
    assert database in files
    for path in files:
        assert SHOP_SECRET.encode() not in path.read_bytes(), path
    stored = await keyed.running.backends.store.get_stored_bot("shop")
    assert SHOP_SECRET not in stored.token_sealed


async def reseal(stack: Stack, keys: str) -> tuple[int, str, str]:
    """``tgbroadcast bots reseal`` on the stack's database with ``TGB_SERVER_SECRET_KEY``."""
    environ = {
        "PATH": "/usr/bin:/bin",
        "TGB_DATA_DIR": str(stack.settings.data_dir),
        "TGB_DATABASE_DSN": stack.settings.database.url,
        "TGB_SERVER_SECRET_KEY": keys,
    }
    proc = await asyncio.create_subprocess_exec(
        str(TGBROADCAST),
        "bots",
        "reseal",
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        stdout, stderr = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


@on_sqlite
async def test_keys_rotate_with_bots_reseal(keyed: Stack) -> None:
    assert (await call(keyed, "POST", "/v1/bots", {"name": "shop", "token": SHOP_TOKEN}))[0] == 201
    store = keyed.running.backends.store

    def directory(*keys: str) -> BotDirectory:
        server = dataclasses.replace(keyed.settings.server, secret_keys=keys)
        return BotDirectory(dataclasses.replace(keyed.settings, server=server), store)

    before = (await store.get_stored_bot("shop")).token_sealed
    returncode, stdout, stderr = await reseal(keyed, f"{NEW_KEY},{OLD_KEY}")
    assert returncode == 0, stderr
    assert "re-sealed 1 bot token(s)" in stdout
    assert SHOP_SECRET not in stdout + stderr
    assert (await store.get_stored_bot("shop")).token_sealed != before

    new_only = directory(NEW_KEY)
    await new_only.refresh()
    opened = new_only.get("shop")
    assert opened is not None
    assert opened.token == SHOP_TOKEN
    old_only = directory(OLD_KEY)
    await old_only.refresh()
    assert old_only.get("shop") is None  # the old key no longer opens it: it may be dropped

    # A key that opens nothing: the bot is named, left as it was, and the exit code says so.
    returncode, _, stderr = await reseal(keyed, "unrelated-key-0123456789abcdefghijklmn")
    assert returncode == 1
    assert "shop" in stderr


@on_sqlite
async def test_a_bot_created_elsewhere_is_found_by_lookup(
    keyed: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    other = BotDirectory(keyed.settings, keyed.running.backends.store, max_age=0.0)
    await other.refresh()
    assert other.get("shop") is None
    assert (await call(keyed, "POST", "/v1/bots", {"name": "shop", "token": SHOP_TOKEN}))[0] == 201
    assert other.get("shop") is None  # a snapshot until refreshed...
    found = await other.lookup("shop")  # ...which a miss does once
    assert found is not None
    assert (found.bot_id, found.rate_limit) == (111111111, keyed.settings.telegram.rate_limit)
    assert [bot.name for bot in other.all()] == ["default", "shop"]
    assert await other.lookup("nobody") is None
    # Deleted on the server: a stored bot's lookup trusts its snapshot only for max_age.
    assert (await call(keyed, "DELETE", "/v1/bots/shop"))[0] == 204
    assert other.get("shop") is not None
    assert await other.lookup("shop") is None
    assert await other.lookup("default") is not None  # configured: no refresh needed
    assert (await call(keyed, "POST", "/v1/bots", {"name": "shop", "token": SHOP_TOKEN}))[0] == 201

    caplog.set_level(logging.WARNING, logger="tgbroadcast.core.bots.directory")
    server = dataclasses.replace(keyed.settings.server, secret_keys=())
    keyless = BotDirectory(
        dataclasses.replace(keyed.settings, server=server), keyed.running.backends.store
    )
    await keyless.refresh()
    await keyless.refresh()
    assert [bot.name for bot in keyless.all()] == ["default"]
    skipped = [r for r in caplog.records if getattr(r, "bot", None) == "shop"]
    assert len(skipped) == 1  # logged once, by name
