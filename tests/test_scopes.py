"""Scoped API tokens (``server.api_tokens`` objects), over REST and gRPC on a running stack.

Each scope allows its operations and only those; a missing scope is a 403 /
PERMISSION_DENIED naming it; ``name:token``, bare and ``server.api_token`` tokens keep every
scope; a token that may not use the bot ``default`` cannot send or touch its users and sees
none of its broadcasts. The table (:mod:`tgbroadcast.server.scopes`) covers every RPC and
every route. (Several bots: ``test_bots_isolation.py``.)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import aiohttp
import grpc
import pytest

from tests.fixtures.stack import API_TOKEN, Stack, open_backend, start_stack
from tgbroadcast.core.config.loading import load_settings
from tgbroadcast.core.domain.access import SCOPES
from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.server.auth import TokenCheck
from tgbroadcast.server.grpc.interceptors import AuthInterceptor
from tgbroadcast.server.rest.app import UNAUTHENTICATED_PATHS, create_app
from tgbroadcast.server.scopes import GRPC, REST, rest_rule
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc
from tgbroadcast_client import BroadcastClient, PermissionDenied

GRANTS = {
    "send": ["broadcasts:send"],
    "read": ["broadcasts:read"],
    "control": ["broadcasts:control"],
    "uwrite": ["users:write"],
    "uread": ["users:read"],
    "admin": ["bots:admin"],
    "reader-writer": ["broadcasts:read", "users:write"],
}
ELSEWHERE = "elsewhere"
"""Every scope, but only on the bots ``other`` and ``more``: not ``default``, the bot a
request that names none acts for with this token."""


def secret(name: str) -> str:
    return f"{name}-scoped-token-0123456789"


SCOPED_TOKENS = json.dumps(
    [{"name": name, "token": secret(name), "scopes": grants} for name, grants in GRANTS.items()]
    + [
        {
            "name": ELSEWHERE,
            "token": secret(ELSEWHERE),
            "bots": ["other", "more"],
            "scopes": [*SCOPES],
        }
    ]
)
USER = 4242


@pytest.fixture
async def scoped(simulator: Simulator, tmp_path: Path) -> AsyncIterator[tuple[Stack, int]]:
    """The stack with :data:`SCOPED_TOKENS` beside the legacy ones, and one broadcast."""
    overrides = {"TGB_SERVER_API_TOKENS": SCOPED_TOKENS}
    async with (
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, overrides) as stack,
    ):
        async with stack.stub() as stub:
            await stub.UpsertUsers(
                pb.UpsertUsersRequest(users=[pb.User(id=USER)]), metadata=stack.metadata
            )
            sent = await stub.SendMessage(
                pb.SendMessageRequest(message="hi", user_ids=[USER]), metadata=stack.metadata
            )
        yield stack, sent.broadcast_id


@dataclass(frozen=True)
class Route:
    scope: str
    method: str
    path: str
    body: Any = None
    csv: bool = False


ROUTES = [
    Route("broadcasts:send", "POST", "/v1/broadcasts", {"message": "hi", "user_ids": [USER]}),
    Route("broadcasts:send", "POST", "/send-message", {"message": "hi", "user_ids": [USER]}),
    Route(
        "broadcasts:send", "POST", "/v1/preview", {"message": {"message": "hi"}, "user_id": USER}
    ),
    Route("broadcasts:read", "GET", "/v1/broadcasts"),
    Route("broadcasts:read", "GET", "/v1/broadcasts/events"),
    Route("broadcasts:read", "GET", "/v1/broadcasts/{id}"),
    Route("broadcasts:read", "GET", "/v1/broadcasts/{id}/deliveries"),
    Route("broadcasts:read", "GET", "/v1/broadcasts/{id}/deliveries.csv"),
    Route("broadcasts:read", "GET", "/v1/broadcasts/{id}/events"),
    Route("broadcasts:control", "POST", "/v1/broadcasts/{id}/pause"),
    Route("broadcasts:control", "POST", "/v1/broadcasts/{id}/resume"),
    Route("broadcasts:control", "POST", "/v1/broadcasts/{id}/cancel"),
    Route("broadcasts:control", "POST", "/v1/broadcasts/{id}/recall"),
    Route("broadcasts:control", "POST", "/v1/broadcasts/{id}/edit", {"message": "fixed"}),
    Route("users:write", "POST", "/v1/users", {"users": [{"id": USER, "tags": ["a"]}]}),
    Route("users:write", "POST", "/v1/users/import", "id\n4243\n", csv=True),
    Route("users:write", "DELETE", "/v1/users/4243"),
    Route("users:read", "GET", "/v1/users"),
    Route("users:read", "GET", f"/v1/users/{USER}"),
    Route("bots:admin", "POST", "/v1/bots", {"name": "extra", "token": "123:not-a-real-token"}),
    Route("bots:admin", "GET", "/v1/bots"),
    Route("bots:admin", "GET", "/v1/bots/default"),
    Route("bots:admin", "DELETE", "/v1/bots/nosuch"),
]


async def rest(stack: Stack, route: Route, token: str, broadcast_id: int) -> tuple[int, Any]:
    """The status and the JSON body (None for another type); a stream is not read."""
    headers = {"Authorization": f"Bearer {token}"}
    kwargs: dict[str, Any] = {"json": route.body} if route.body is not None else {}
    if route.csv:
        kwargs = {"data": route.body.encode()}
        headers["Content-Type"] = "text/csv"
    url = stack.http_url + route.path.replace("{id}", str(broadcast_id))
    async with (
        aiohttp.ClientSession() as session,
        session.request(route.method, url, headers=headers, **kwargs) as answer,
    ):
        if answer.content_type.endswith("json"):
            return answer.status, await answer.json()
        return answer.status, None


Stub: TypeAlias = "pb_grpc.BroadcastServiceAsyncStub"
Call: TypeAlias = "Callable[[Stub, int, tuple[tuple[str, str], ...]], Awaitable[Any]]"


async def _first(call: Any) -> Any:
    """A stream's first message (the stream is cancelled then)."""
    try:
        return await call.read()
    finally:
        call.cancel()


async def _import(stub: pb_grpc.BroadcastServiceAsyncStub, _: int, metadata: Any) -> Any:
    async def chunks() -> AsyncIterator[pb.ImportUsersRequest]:
        yield pb.ImportUsersRequest(users=[pb.User(id=4243)])

    return await stub.ImportUsers(chunks(), metadata=metadata)


RPCS: dict[str, tuple[str, Call]] = {
    "SendMessage": (
        "broadcasts:send",
        lambda s, b, m: s.SendMessage(
            pb.SendMessageRequest(message="hi", user_ids=[USER]), metadata=m
        ),
    ),
    "PreviewMessage": (
        "broadcasts:send",
        lambda s, b, m: s.PreviewMessage(
            pb.PreviewMessageRequest(message=pb.SendMessageRequest(message="hi"), user_id=USER),
            metadata=m,
        ),
    ),
    "GetBroadcast": (
        "broadcasts:read",
        lambda s, b, m: s.GetBroadcast(pb.GetBroadcastRequest(broadcast_id=b), metadata=m),
    ),
    "ListBroadcasts": (
        "broadcasts:read",
        lambda s, b, m: s.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=m),
    ),
    "ListDeliveries": (
        "broadcasts:read",
        lambda s, b, m: s.ListDeliveries(pb.ListDeliveriesRequest(broadcast_id=b), metadata=m),
    ),
    "WatchBroadcast": (
        "broadcasts:read",
        lambda s, b, m: _first(
            s.WatchBroadcast(pb.WatchBroadcastRequest(broadcast_id=b), metadata=m)
        ),
    ),
    "WatchBroadcasts": (
        "broadcasts:read",
        lambda s, b, m: _first(s.WatchBroadcasts(pb.WatchBroadcastsRequest(), metadata=m)),
    ),
    "PauseBroadcast": (
        "broadcasts:control",
        lambda s, b, m: s.PauseBroadcast(pb.PauseBroadcastRequest(broadcast_id=b), metadata=m),
    ),
    "ResumeBroadcast": (
        "broadcasts:control",
        lambda s, b, m: s.ResumeBroadcast(pb.ResumeBroadcastRequest(broadcast_id=b), metadata=m),
    ),
    "CancelBroadcast": (
        "broadcasts:control",
        lambda s, b, m: s.CancelBroadcast(pb.CancelBroadcastRequest(broadcast_id=b), metadata=m),
    ),
    "RecallBroadcast": (
        "broadcasts:control",
        lambda s, b, m: s.RecallBroadcast(pb.RecallBroadcastRequest(broadcast_id=b), metadata=m),
    ),
    "EditBroadcast": (
        "broadcasts:control",
        lambda s, b, m: s.EditBroadcast(
            pb.EditBroadcastRequest(broadcast_id=b, message="fixed"), metadata=m
        ),
    ),
    "UpsertUsers": (
        "users:write",
        lambda s, b, m: s.UpsertUsers(pb.UpsertUsersRequest(users=[pb.User(id=USER)]), metadata=m),
    ),
    "ImportUsers": ("users:write", _import),
    "DeleteUser": (
        "users:write",
        lambda s, b, m: s.DeleteUser(pb.DeleteUserRequest(user_id=4243), metadata=m),
    ),
    "ListUsers": ("users:read", lambda s, b, m: s.ListUsers(pb.ListUsersRequest(), metadata=m)),
    "GetUser": (
        "users:read",
        lambda s, b, m: s.GetUser(pb.GetUserRequest(user_id=USER), metadata=m),
    ),
    "CreateBot": (
        "bots:admin",
        lambda s, b, m: s.CreateBot(
            pb.CreateBotRequest(name="extra", token="123:not-a-real-token"), metadata=m
        ),
    ),
    "ListBots": ("bots:admin", lambda s, b, m: s.ListBots(pb.ListBotsRequest(), metadata=m)),
    "GetBot": (
        "bots:admin",
        lambda s, b, m: s.GetBot(pb.GetBotRequest(name="default"), metadata=m),
    ),
    "DeleteBot": (
        "bots:admin",
        lambda s, b, m: s.DeleteBot(pb.DeleteBotRequest(name="nosuch"), metadata=m),
    ),
}


async def rpc(
    stack: Stack, name: str, token: str, broadcast_id: int
) -> tuple[grpc.StatusCode, str]:
    metadata = (("authorization", f"Bearer {token}"),)
    async with stack.stub() as stub:
        try:
            await RPCS[name][1](stub, broadcast_id, metadata)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


ALLOWED_STATUSES = {200, 202, 204, 400, 404, 409}
"""Served: a paused, finished or unknown thing is the service's answer, not the token's."""
REFUSED_CODES = {
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}


@pytest.mark.parametrize("name", [*GRANTS, "legacy"])
async def test_each_scope_allows_its_operations_and_only_those(
    scoped: tuple[Stack, int], name: str
) -> None:
    stack, broadcast_id = scoped
    grants = set(SCOPES) if name == "legacy" else set(GRANTS[name])
    token = API_TOKEN if name == "legacy" else secret(name)
    for route in ROUTES:
        status, body = await rest(stack, route, token, broadcast_id)
        if route.scope in grants:
            assert status in ALLOWED_STATUSES, (route, status, body)
        else:
            assert status == 403, (route, status)
            assert body["detail"] == f"this token lacks the scope {route.scope}"
    for method, (scope, _) in RPCS.items():
        code, details = await rpc(stack, method, token, broadcast_id)
        if scope in grants:
            assert code not in REFUSED_CODES, (method, code, details)
        else:
            assert (code, details) == (
                grpc.StatusCode.PERMISSION_DENIED,
                f"this token lacks the scope {scope}",
            ), method


async def test_a_token_without_the_bot_cannot_use_it_and_sees_no_broadcast(
    scoped: tuple[Stack, int],
) -> None:
    stack, broadcast_id = scoped
    token = secret(ELSEWHERE)
    not_found = f"broadcast {broadcast_id} not found"
    refused = f"API token {ELSEWHERE} may not use bot 'default'"
    for route in ROUTES:
        if route.scope == "bots:admin":  # checked by the bots API itself: test_bots_api.py
            continue
        status, body = await rest(stack, route, token, broadcast_id)
        if route.path == "/v1/broadcasts" and route.method == "GET":
            assert (status, body) == (200, {"broadcasts": [], "next_page_token": ""})
        elif route.path == "/v1/broadcasts/events":  # the list, live: none of its broadcasts
            assert status == 200
        elif route.scope in ("broadcasts:read", "broadcasts:control"):
            assert (status, body["detail"]) == (404, not_found), route
        else:
            assert (status, body["detail"]) == (403, refused), route
    for method, (scope, call) in RPCS.items():
        if scope == "bots:admin":
            continue
        if method in ("ListBroadcasts", "WatchBroadcasts"):
            async with stack.stub() as stub:
                listed = await call(stub, broadcast_id, (("authorization", f"Bearer {token}"),))
            seen = listed.broadcasts if method == "ListBroadcasts" else [listed.broadcast]
            assert [b for b in seen if b.broadcast_id] == []  # WatchBroadcasts: ready first
            continue
        code, details = await rpc(stack, method, token, broadcast_id)
        if scope in ("broadcasts:read", "broadcasts:control"):
            assert (code, details) == (grpc.StatusCode.NOT_FOUND, not_found), method
        else:
            assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED, refused), method
    # The legacy token still sees it: the broadcast exists.
    status, _ = await rest(stack, ROUTES[4], API_TOKEN, broadcast_id)
    assert status == 200


async def test_a_hidden_broadcast_is_answered_as_a_missing_one(scoped: tuple[Stack, int]) -> None:
    """Status, body, content type and gRPC trailers alike: the one the token may not see, and
    one that does not exist (asked with a token that sees every broadcast)."""
    stack, broadcast_id = scoped
    missing = broadcast_id + 1000

    async def get(token: str, id_: int) -> tuple[int, str, Any]:
        url = f"{stack.http_url}/v1/broadcasts/{id_}"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers={"Authorization": f"Bearer {token}"}) as answer,
        ):
            return answer.status, answer.content_type, await answer.json(content_type=None)

    async def got(token: str, id_: int) -> tuple[Any, ...]:
        async with stack.stub() as stub:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetBroadcast(
                    pb.GetBroadcastRequest(broadcast_id=id_),
                    metadata=(("authorization", f"Bearer {token}"),),
                )
        trailers = list(raised.value.trailing_metadata() or ())
        return raised.value.code(), raised.value.details(), trailers

    absent = await get(API_TOKEN, missing)
    assert absent[0] == 404
    assert await get(secret(ELSEWHERE), missing) == absent
    status, kind, body = await get(secret(ELSEWHERE), broadcast_id)
    assert (status, kind) == absent[:2]
    assert body == {**absent[2], "detail": f"broadcast {broadcast_id} not found"}
    rpc_absent = await got(API_TOKEN, missing)
    assert rpc_absent[0] == grpc.StatusCode.NOT_FOUND
    assert await got(secret(ELSEWHERE), missing) == rpc_absent
    code, details, trailers = await got(secret(ELSEWHERE), broadcast_id)
    assert (code, details) == (rpc_absent[0], f"broadcast {broadcast_id} not found")
    assert [k for k, _ in trailers] == [k for k, _ in rpc_absent[2]]


async def test_head_needs_the_scope_of_get(scoped: tuple[Stack, int]) -> None:
    stack, broadcast_id = scoped
    headers = {"Authorization": f"Bearer {secret('send')}"}
    async with aiohttp.ClientSession() as session:
        for path in (f"/v1/broadcasts/{broadcast_id}/deliveries.csv", "/v1/users"):
            async with session.head(stack.http_url + path, headers=headers) as answer:
                assert answer.status == 403, path


async def test_a_method_of_another_service_is_refused() -> None:
    """A service added beside ``BroadcastService`` has no scope yet: refused, not served."""
    server = grpc.aio.server(interceptors=[AuthInterceptor(TokenCheck([("t", API_TOKEN)]))])

    async def serve(request: bytes, context: Any) -> bytes:
        return b"served"

    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(serve)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("x.Other", {"Do": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/x.Other/Do"
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call(b"", metadata=(("authorization", f"Bearer {API_TOKEN}"),))
    finally:
        await server.stop(None)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_python_client_raises_permission_denied(scoped: tuple[Stack, int]) -> None:
    stack, broadcast_id = scoped
    async with BroadcastClient(stack.grpc_target, secret("read")) as client:
        assert (await client.get(broadcast_id)).broadcast_id == broadcast_id
        with pytest.raises(PermissionDenied) as raised:
            await client.cancel(broadcast_id)
    assert raised.value.details == "this token lacks the scope broadcasts:control"


def test_the_table_covers_every_rpc() -> None:
    service = pb.DESCRIPTOR.services_by_name["BroadcastService"]
    assert set(GRPC) == {method.name for method in service.methods}
    # and this file tries each (GetToken, which needs no scope: tests/test_list_events.py)
    assert set(RPCS) == set(GRPC) - {"GetToken"}
    assert all(GRPC[name].scope == scope for name, (scope, _) in RPCS.items())


async def test_the_table_covers_every_route(scoped: tuple[Stack, int]) -> None:
    stack, _ = scoped
    assert stack.running.api is not None
    app = create_app(
        stack.running.api.service, TokenCheck([("t", API_TOKEN)]), max_body_bytes=1 << 20
    )
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and route.resource.canonical not in UNAUTHENTICATED_PATHS
    }
    assert served == set(REST)
    assert all(rest_rule(method, path) is not None for method, path in served)
    tried = {(r.method, r.path.replace("{id}", "{broadcast_id}")) for r in ROUTES}
    tried = {(m, "/v1/users/{user_id}" if p.startswith("/v1/users/4") else p) for m, p in tried}
    tried = {(m, "/v1/bots/{name}" if p.startswith("/v1/bots/") else p) for m, p in tried}
    scoped_routes = {route for route, rule in REST.items() if rule.scope is not None}
    assert tried == scoped_routes  # and this file tries each (GET /v1/token: below)


@pytest.mark.parametrize("name", [*GRANTS, ELSEWHERE])
async def test_any_token_may_ask_what_it_may_do(scoped: tuple[Stack, int], name: str) -> None:
    """``GET /v1/token`` needs no scope: the answer is the caller's own grants, never a token."""
    stack, _ = scoped
    status, answer = await rest(stack, Route("", "GET", "/v1/token"), secret(name), 0)
    assert status == 200
    granted = sorted(SCOPES) if name == ELSEWHERE else sorted(GRANTS[name])
    assert (answer["name"], answer["scopes"]) == (name, granted)
    assert answer["bots"] == (["other", "more"] if name == ELSEWHERE else ["*"])
    limits = [bot["name"] for bot in answer["bot_limits"]]
    assert limits == ([] if name == ELSEWHERE else ["default"])
    assert secret(name) not in json.dumps(answer)


def load(tmp_path: Path, tokens: str) -> Any:
    return load_settings(None, environ={"TGB_SERVER_API_TOKENS": tokens}, base_dir=tmp_path)


def test_scoped_tokens_from_yaml_and_legacy_ones_together(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "server:\n"
        "  api_token: legacy-token-0123456789\n"
        "  api_tokens:\n"
        "    - ci:ci-token-0123456789\n"
        "    - name: reporting\n"
        "      token: reporting-token-0123456789\n"
        "      scopes: [broadcasts:read]\n"
        "      bots: [default, shop]\n",
        encoding="utf-8",
    )
    tokens = load_settings(config, environ={}, base_dir=tmp_path).server.api_tokens
    assert [(t.name, sorted(t.scopes), t.bots) for t in tokens[1:]] == [
        ("ci", sorted(SCOPES), ("*",)),
        ("reporting", ["broadcasts:read"], ("default", "shop")),
    ]
    assert tokens[0].scopes == SCOPES
    assert "reporting-token" not in repr(tokens)


def test_json_tokens_in_the_environment_default_to_every_bot(tmp_path: Path) -> None:
    value = json.dumps([{"name": "ops", "token": "ops-token-0123456789", "scopes": ["users:read"]}])
    settings = load(tmp_path, value)
    (token,) = settings.require_api_tokens()  # server.api_token is not needed
    assert (token.name, token.scopes, token.bots) == ("ops", frozenset({"users:read"}), ("*",))


@pytest.mark.parametrize(
    ("item", "key"),
    [
        ({"name": "a", "token": "a-token-0123456789abc"}, "server.api_tokens[0].scopes"),
        (
            {"name": "a", "token": "a-token-0123456789abc", "scopes": []},
            "server.api_tokens[0].scopes",
        ),
        (
            {"name": "a", "token": "a-token-0123456789abc", "scopes": ["broadcasts:delete"]},
            "server.api_tokens[0].scopes",
        ),
        (
            {"name": "a b", "token": "a-token-0123456789abc", "scopes": ["users:read"]},
            "server.api_tokens[0].name",
        ),
        (
            {"name": "a", "token": "a-token-01", "scopes": ["users:read"]},
            "server.api_tokens[0].token",
        ),
        (
            {
                "name": "a",
                "token": "a-token-0123456789abc",
                "scopes": ["users:read"],
                "bots": ["Shop!"],
            },
            "server.api_tokens[0].bots",
        ),
        (
            {"name": "a", "token": "a-token-0123456789abc", "scopes": ["users:read"], "bots": []},
            "server.api_tokens[0].bots",
        ),
        (
            {"name": "a", "token": "a-token-0123456789abc", "scopes": ["users:read"], "role": 1},
            "server.api_tokens[0]",
        ),
    ],
)
def test_a_bad_scoped_token_is_refused_naming_the_item(
    tmp_path: Path, item: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, json.dumps([item]))
    assert raised.value.key == key
    assert "a-token-01" not in str(raised.value)


@pytest.mark.parametrize("twice", ["name", "token"])
def test_a_name_or_a_token_given_twice_is_refused(tmp_path: Path, twice: str) -> None:
    first = {"name": "a", "token": "first-token-0123456789", "scopes": ["users:read"]}
    second = {**first, twice: first[twice]}
    second |= {"token": "second-token-0123456789"} if twice == "name" else {"name": "b"}
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, json.dumps([first, second]))
    assert raised.value.key == "server.api_tokens[1]"
    assert "token-0123456789" not in str(raised.value)


def test_json_that_does_not_parse_is_refused_without_echo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, '[{"name": "a", "token": "secret-token-0123456789"')
    assert raised.value.key == "server.api_tokens"
    assert "secret-token" not in str(raised.value)


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        # One object, not a list: never split at commas into tokens with every scope.
        (
            {"TGB_SERVER_API_TOKENS": '{"name":"a","token":"secret-token-0123456789"}'},
            "server.api_tokens",
        ),
        (
            {"TGB_SERVER_API_TOKEN": '[{"name":"a","token":"secret-token-0123456789"}]'},
            "server.api_token",
        ),
        (
            {
                "TGB_SERVER_API_TOKENS": '[{"name":"a","token":"secret-token-0123456789",'
                '"scopes":["users:read"],"scopes":["bots:admin"]}]'
            },
            "server.api_tokens",
        ),
        (
            {
                "TGB_SERVER_API_TOKENS": '[{"name":"a","token":"secret-token-0123456789",'
                '"scopes":[["users:read"]]}]'
            },
            "server.api_tokens[0].scopes",
        ),
        (  # the token in the wrong place: not echoed
            {
                "TGB_SERVER_API_TOKENS": '[{"name":"a","token":"other-token-0123456789",'
                '"scopes":["users:read"],"bots":["Secret.token-0123456789"]}]'
            },
            "server.api_tokens[0].bots",
        ),
    ],
)
def test_json_in_the_wrong_shape_is_refused(
    tmp_path: Path, environ: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, environ=environ, base_dir=tmp_path)
    assert raised.value.key == key
    assert "token-0123456789" not in str(raised.value)
