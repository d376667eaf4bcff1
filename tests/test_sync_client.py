"""The blocking client, ``tgbroadcast_client.Client``.

Mostly against ``grpc_testing``'s channel: the test plays the server from a thread, taking
each call the client makes and answering it as scripted, so request building, the token's
metadata, deadlines, the error mapping and the watch stream are checked call by call. One
test runs a script against the whole service over a real socket.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import grpc
import grpc_testing  # type: ignore[import-untyped]  # no stubs, no py.typed
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tests.fixtures.stack import API_TOKEN, Stack
from tgbroadcast.simulator import ChatState
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast_client import (
    AlreadyExists,
    BroadcastClientError,
    Client,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
    message_request,
)

SERVICE = pb.DESCRIPTOR.services_by_name["BroadcastService"]
TOKEN = "sync-client-token-0123456789"
AUTHORIZATION = ("authorization", f"Bearer {TOKEN}")
OK = grpc.StatusCode.OK


class ScriptedChannel:
    """``grpc_testing``'s channel: the client calls through it, the test answers with
    ``take_*``. It also records each call's timeout, which ``grpc_testing`` drops."""

    def __init__(self) -> None:
        self.testing = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
        self.timeouts: list[tuple[str, float | None]] = []
        self.closed = False

    def _recording(self, method: str, multicallable: Any) -> Callable[..., Any]:
        def call(request: Any, timeout: float | None = None, **kwargs: Any) -> Any:
            self.timeouts.append((method.rsplit("/", 1)[1], timeout))
            return multicallable(request, timeout=timeout, **kwargs)

        return call

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        return self._recording(method, self.testing.unary_unary(method, *args, **kwargs))

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        return self._recording(method, self.testing.unary_stream(method, *args, **kwargs))

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        return self._recording(method, self.testing.stream_unary(method, *args, **kwargs))

    def close(self) -> None:
        self.closed = True
        self.testing.close()

    def answer(
        self,
        method: str,
        response: Message | None = None,
        *,
        code: grpc.StatusCode = OK,
        details: str = "",
        trailing: Sequence[tuple[str, str | bytes]] = (),
    ) -> Any:
        """Takes the next unary call to ``method``, checks its token and answers it; the
        request it carried."""
        metadata, request, rpc = self.testing.take_unary_unary(SERVICE.methods_by_name[method])
        assert AUTHORIZATION in metadata
        rpc.terminate(response, tuple(trailing), code, details)
        return request


@contextmanager
def serving(script: Callable[[], None]) -> Iterator[None]:
    """Plays ``script`` (the server's side) in a thread while the block runs the client; on
    the way out, waits for the script to finish and raises what it raised. A daemon thread:
    if the client fails before calling, the script's wait cannot hold the run open."""
    finished = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            script()
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)
        finally:
            finished.set()

    threading.Thread(target=run, daemon=True).start()
    yield
    finished.wait()
    if errors:
        raise errors[0]


@pytest.fixture
def channel() -> Iterator[ScriptedChannel]:
    scripted = ScriptedChannel()
    yield scripted
    scripted.close()


def client_over(channel: ScriptedChannel, *, timeout: float | None = 30.0) -> Client:
    return Client("grpc-testing", TOKEN, timeout=timeout, channel=cast(grpc.Channel, channel))


def broadcast(broadcast_id: int, status: pb.BroadcastStatus.ValueType) -> pb.Broadcast:
    return pb.Broadcast(broadcast_id=broadcast_id, status=status)


# Request building: every call, the message it sends and what it returns.


@dataclass(frozen=True)
class Case:
    method: str
    call: Callable[[Client], object]
    request: Message
    response: Message
    result: object


CASES = [
    Case(
        "SendMessage",
        lambda c: c.send("<b>Hi</b>", tags=["vip"], parse_mode="html", idempotency_key="k-1"),
        pb.SendMessageRequest(
            message="<b>Hi</b>",
            filter=pb.UserFilter(tags=["vip"]),
            parse_mode=pb.PARSE_MODE_HTML,
            idempotency_key="k-1",
        ),
        pb.SendMessageResponse(broadcast_id=7, total=2),
        pb.SendMessageResponse(broadcast_id=7, total=2),
    ),
    Case(
        "SendMessage",
        lambda c: c.send_request(pb.SendMessageRequest(message="ready", all_users=True)),
        pb.SendMessageRequest(message="ready", all_users=True),
        pb.SendMessageResponse(broadcast_id=8, replayed=True),
        pb.SendMessageResponse(broadcast_id=8, replayed=True),
    ),
    Case(
        "GetBroadcast",
        lambda c: c.get(7),
        pb.GetBroadcastRequest(broadcast_id=7),
        pb.GetBroadcastResponse(broadcast=pb.Broadcast(broadcast_id=7, sent=3)),
        pb.Broadcast(broadcast_id=7, sent=3),
    ),
    Case(
        "ListBroadcasts",
        lambda c: c.list_broadcasts(
            statuses=["running", pb.BROADCAST_STATUS_PAUSED], page_size=5, page_token="t"
        ),
        pb.ListBroadcastsRequest(
            statuses=[pb.BROADCAST_STATUS_RUNNING, pb.BROADCAST_STATUS_PAUSED],
            page_size=5,
            page_token="t",
        ),
        pb.ListBroadcastsResponse(next_page_token="next"),
        pb.ListBroadcastsResponse(next_page_token="next"),
    ),
    Case(
        "CancelBroadcast",
        lambda c: c.cancel(7),
        pb.CancelBroadcastRequest(broadcast_id=7),
        pb.CancelBroadcastResponse(broadcast=broadcast(7, pb.BROADCAST_STATUS_CANCELLED)),
        broadcast(7, pb.BROADCAST_STATUS_CANCELLED),
    ),
    Case(
        "RecallBroadcast",
        lambda c: c.recall(7),
        pb.RecallBroadcastRequest(broadcast_id=7),
        pb.RecallBroadcastResponse(broadcast=broadcast(7, pb.BROADCAST_STATUS_RECALLING)),
        broadcast(7, pb.BROADCAST_STATUS_RECALLING),
    ),
    Case(
        "EditBroadcast",
        lambda c: c.edit(7, "new", parse_mode="html", media_url="AgADfileid"),
        pb.EditBroadcastRequest(
            broadcast_id=7, message="new", parse_mode=pb.PARSE_MODE_HTML, media_url="AgADfileid"
        ),
        pb.EditBroadcastResponse(broadcast=broadcast(7, pb.BROADCAST_STATUS_COMPLETED)),
        broadcast(7, pb.BROADCAST_STATUS_COMPLETED),
    ),
    Case(
        "PauseBroadcast",
        lambda c: c.pause(7),
        pb.PauseBroadcastRequest(broadcast_id=7),
        pb.PauseBroadcastResponse(broadcast=broadcast(7, pb.BROADCAST_STATUS_PAUSED)),
        broadcast(7, pb.BROADCAST_STATUS_PAUSED),
    ),
    Case(
        "ResumeBroadcast",
        lambda c: c.resume(7),
        pb.ResumeBroadcastRequest(broadcast_id=7),
        pb.ResumeBroadcastResponse(broadcast=broadcast(7, pb.BROADCAST_STATUS_RUNNING)),
        broadcast(7, pb.BROADCAST_STATUS_RUNNING),
    ),
    Case(
        "ListDeliveries",
        lambda c: c.list_deliveries(7, outcomes=["blocked"], page_size=10, page_token="t"),
        pb.ListDeliveriesRequest(
            broadcast_id=7,
            outcomes=[pb.DELIVERY_OUTCOME_BLOCKED],
            page_size=10,
            page_token="t",
        ),
        pb.ListDeliveriesResponse(results=[pb.DeliveryResult(user_id=5)]),
        pb.ListDeliveriesResponse(results=[pb.DeliveryResult(user_id=5)]),
    ),
    Case(
        "PreviewMessage",
        lambda c: c.preview(message_request("Hi {first_name}", personalize=True), user_id=5),
        pb.PreviewMessageRequest(
            message=pb.SendMessageRequest(message="Hi {first_name}", personalize=True),
            user_id=5,
        ),
        pb.PreviewMessageResponse(text="Hi Ann"),
        pb.PreviewMessageResponse(text="Hi Ann"),
    ),
    Case(
        "UpsertUsers",
        lambda c: c.upsert_users([pb.User(id=1), pb.User(id=2, tags=["vip"])]),
        pb.UpsertUsersRequest(users=[pb.User(id=1), pb.User(id=2, tags=["vip"])]),
        pb.UpsertUsersResponse(upserted=2),
        2,
    ),
    Case(
        "ListUsers",
        lambda c: c.list_users(language_codes=["de"], active_only=True, page_size=3),
        pb.ListUsersRequest(
            filter=pb.UserFilter(language_codes=["de"]), active_only=True, page_size=3
        ),
        pb.ListUsersResponse(users=[pb.User(id=4)]),
        pb.ListUsersResponse(users=[pb.User(id=4)]),
    ),
    Case(
        "GetUser",
        lambda c: c.get_user(5),
        pb.GetUserRequest(user_id=5),
        pb.GetUserResponse(user=pb.User(id=5, first_name="Ann")),
        pb.User(id=5, first_name="Ann"),
    ),
    Case(
        "DeleteUser",
        lambda c: c.delete_user(5),
        pb.DeleteUserRequest(user_id=5),
        pb.DeleteUserResponse(),
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.method)
def test_each_call_sends_its_request_with_the_token(channel: ScriptedChannel, case: Case) -> None:
    received: list[Any] = []
    with serving(lambda: received.append(channel.answer(case.method, case.response))):
        result = case.call(client_over(channel))
    assert received == [case.request]
    assert result == case.result
    assert channel.timeouts == [(case.method, 30.0)]


def test_import_users_streams_one_request_a_chunk(channel: ScriptedChannel) -> None:
    chunks: list[Any] = []

    def server() -> None:
        metadata, rpc = channel.testing.take_stream_unary(SERVICE.methods_by_name["ImportUsers"])
        assert AUTHORIZATION in metadata
        chunks.extend([rpc.take_request(), rpc.take_request()])
        rpc.requests_closed()
        rpc.terminate(pb.ImportUsersResponse(imported=3), (), OK, "")

    with serving(server):
        imported = client_over(channel).import_users(
            iter([[pb.User(id=1), pb.User(id=2)], (pb.User(id=3),)])
        )
    assert imported == 3
    assert chunks == [
        pb.ImportUsersRequest(users=[pb.User(id=1), pb.User(id=2)]),
        pb.ImportUsersRequest(users=[pb.User(id=3)]),
    ]


def test_iter_users_follows_the_page_tokens(channel: ScriptedChannel) -> None:
    requests: list[Any] = []

    def server() -> None:
        first = pb.ListUsersResponse(users=[pb.User(id=1), pb.User(id=2)], next_page_token="p2")
        requests.append(channel.answer("ListUsers", first))
        requests.append(channel.answer("ListUsers", pb.ListUsersResponse(users=[pb.User(id=3)])))

    with serving(server):
        users = list(client_over(channel).iter_users(tags=iter(["vip"]), page_size=2))
    assert [u.id for u in users] == [1, 2, 3]
    vip = pb.UserFilter(tags=["vip"])
    assert requests == [
        pb.ListUsersRequest(filter=vip, page_size=2),
        pb.ListUsersRequest(filter=vip, page_size=2, page_token="p2"),
    ]


# Deadlines: what the async client does — unary calls carry the configured timeout; a watch
# lasts as long as its broadcast, the import stream as long as its chunks (millions of users
# take minutes) unless given a timeout of its own.


@pytest.mark.parametrize("timeout", [12.5, None])
def test_calls_carry_the_configured_deadline_and_a_watch_none(
    channel: ScriptedChannel, timeout: float | None
) -> None:
    def server() -> None:
        channel.answer("GetBroadcast", pb.GetBroadcastResponse())
        for _ in range(2):
            _, rpc = channel.testing.take_stream_unary(SERVICE.methods_by_name["ImportUsers"])
            rpc.take_request()
            rpc.requests_closed()
            rpc.terminate(pb.ImportUsersResponse(imported=1), (), OK, "")
        _, _, watch = channel.testing.take_unary_stream(SERVICE.methods_by_name["WatchBroadcast"])
        watch.terminate((), OK, "")

    with serving(server), client_over(channel, timeout=timeout) as client:
        client.get(1)
        client.import_users([[pb.User(id=1)]])
        client.import_users([[pb.User(id=1)]], timeout=600.0)
        assert list(client.watch(1)) == []
    assert channel.timeouts == [
        ("GetBroadcast", timeout),
        ("ImportUsers", None),
        ("ImportUsers", 600.0),
        ("WatchBroadcast", None),
    ]


# The watch stream


def progress(sent: int, status: pb.BroadcastStatus.ValueType) -> pb.WatchBroadcastResponse:
    return pb.WatchBroadcastResponse(progress=pb.Progress(status=status, total=2, sent=sent))


def result(user_id: int, sent: int) -> pb.WatchBroadcastResponse:
    update = progress(sent, pb.BROADCAST_STATUS_RUNNING)
    update.result.CopyFrom(pb.DeliveryResult(user_id=user_id, outcome=pb.DELIVERY_OUTCOME_SENT))
    return update


def test_watch_yields_the_stream_in_order(channel: ScriptedChannel) -> None:
    scripted = [result(11, 1), result(12, 2), progress(2, pb.BROADCAST_STATUS_COMPLETED)]

    def server() -> None:
        method = SERVICE.methods_by_name["WatchBroadcast"]
        metadata, request, rpc = channel.testing.take_unary_stream(method)
        assert AUTHORIZATION in metadata
        assert request == pb.WatchBroadcastRequest(broadcast_id=7)
        for update in scripted:
            rpc.send_response(update)
        rpc.terminate((), OK, "")

    with serving(server):
        updates = list(client_over(channel).watch(7))
    assert updates == scripted


def test_watch_from_now_asks_for_it(channel: ScriptedChannel) -> None:
    def server() -> None:
        method = SERVICE.methods_by_name["WatchBroadcast"]
        _, request, rpc = channel.testing.take_unary_stream(method)
        assert request == pb.WatchBroadcastRequest(broadcast_id=7, from_now=True, max_batch=50)
        rpc.terminate((), OK, "")

    with serving(server):
        assert list(client_over(channel).watch(7, from_now=True, max_batch=50)) == []


def test_an_error_mid_stream_raises_ours(channel: ScriptedChannel) -> None:
    first = result(11, 1)
    failing = grpc.StatusCode.UNAVAILABLE
    # grpc_testing drops the messages not yet read when an RPC fails (a real channel
    # delivers them first): the server fails the call once the client has the first.
    read_first = threading.Event()

    def server() -> None:
        method = SERVICE.methods_by_name["WatchBroadcast"]
        _, _, rpc = channel.testing.take_unary_stream(method)
        rpc.send_response(first)
        read_first.wait()
        rpc.terminate((), failing, "the queue cannot be reached")

    with serving(server):
        watch = client_over(channel).watch(7)
        assert next(watch) == first
        read_first.set()
        with pytest.raises(Unavailable, match="the queue cannot be reached") as raised:
            next(watch)
    assert raised.value.code == failing


def test_closing_a_watch_cancels_the_call(channel: ScriptedChannel) -> None:
    first = result(11, 1)
    cancelled = threading.Event()

    def server() -> None:
        method = SERVICE.methods_by_name["WatchBroadcast"]
        _, _, rpc = channel.testing.take_unary_stream(method)
        rpc.send_response(first)
        rpc.cancelled()  # blocks until the client cancels; raises if it ends otherwise
        cancelled.set()

    with serving(server):
        watch = client_over(channel).watch(7)
        assert next(watch) == first
        assert not cancelled.is_set()
        watch.close()
    assert cancelled.is_set()
    with pytest.raises(StopIteration):
        next(watch)


# The error mapping: each status the server answers, through the blocking stack.


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.INTERNAL, BroadcastClientError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, BroadcastClientError),
    ],
)
def test_each_status_raises_its_error(
    channel: ScriptedChannel, code: grpc.StatusCode, error_type: type[BroadcastClientError]
) -> None:
    details = "broadcast 7 is completed"
    with (
        serving(lambda: channel.answer("PauseBroadcast", code=code, details=details)),
        pytest.raises(BroadcastClientError) as raised,
    ):
        client_over(channel).pause(7)
    assert type(raised.value) is error_type
    assert (raised.value.code, raised.value.details) == (code, details)
    assert str(raised.value) == f"{code.name}: {details}"
    assert TOKEN not in str(raised.value)


def bad_request(*violations: tuple[str, str]) -> list[tuple[str, str | bytes]]:
    """Trailing metadata as the server sends it: a google.rpc.Status with a BadRequest."""
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in violations
            ]
        )
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad", details=[detail])
    return list(rpc_status.to_status(status).trailing_metadata)


def test_invalid_argument_names_every_field_on_unary_and_stream_calls(
    channel: ScriptedChannel,
) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    send_fields = bad_request(("user_ids[0]", "must be positive"), ("message", "is empty"))
    import_fields = bad_request(("users[1].id", "must be positive"))

    def server() -> None:
        channel.answer("SendMessage", code=invalid, details="bad", trailing=send_fields)
        _, rpc = channel.testing.take_stream_unary(SERVICE.methods_by_name["ImportUsers"])
        rpc.take_request()
        rpc.terminate(None, tuple(import_fields), invalid, "bad")

    with serving(server), client_over(channel) as client:
        with pytest.raises(InvalidArgument) as sent:
            client.send("", user_ids=[0])
        with pytest.raises(InvalidArgument) as imported:
            client.import_users([[pb.User(id=1), pb.User(id=0)]])
    assert sent.value.violations == (
        FieldViolation("user_ids[0]", "must be positive"),
        FieldViolation("message", "is empty"),
    )
    assert imported.value.violations == (FieldViolation("users[1].id", "must be positive"),)


# Construction


def test_construction_needs_a_token_and_never_shows_it(channel: ScriptedChannel) -> None:
    with pytest.raises(ValueError, match="API token is required"):
        Client("127.0.0.1:1", "")
    with pytest.raises(ValueError, match="not both"):
        Client("x", TOKEN, secure=True, channel=cast(grpc.Channel, channel))
    with client_over(channel):
        assert not channel.closed
    assert channel.closed  # a channel handed over is the client's to close
    with Client("127.0.0.1:1", TOKEN) as client:
        assert repr(client) == "Client(target='127.0.0.1:1')"
        assert TOKEN not in repr(vars(client))


def test_an_unreachable_service_is_unavailable() -> None:
    with Client("127.0.0.1:1", TOKEN, timeout=10) as client, pytest.raises(Unavailable) as raised:
        client.get(1)
    assert TOKEN not in str(raised.value)


# End to end: a blocking script against the whole service (its event loop runs in the
# test's thread, so the script runs in another).


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_script_sends_and_watches_over_a_real_socket(stack: Stack) -> None:
    blocked = 93
    stack.simulator.chats.declare(blocked, ChatState.BLOCKED)

    def script() -> tuple[InvalidArgument, list[pb.WatchBroadcastResponse], pb.Broadcast]:
        with Client(stack.grpc_target, API_TOKEN) as client:
            assert client.upsert_users([pb.User(id=91, first_name="Ann"), pb.User(id=92)]) == 2
            with pytest.raises(InvalidArgument) as invalid:
                client.send("", user_ids=[0, 5], media_type="photo")
            sent = client.send("Hello from a script!", user_ids=[91, 92, blocked])
            assert sent.total == 3
            updates = list(client.watch(sent.broadcast_id))
            return invalid.value, updates, client.get(sent.broadcast_id)

    invalid, updates, final = await asyncio.to_thread(script)
    assert {"user_ids[0]", "media_url"} <= {v.field for v in invalid.violations}
    *results, last = updates
    outcomes = {u.result.user_id: u.result.outcome for u in results}
    assert outcomes == {
        91: pb.DELIVERY_OUTCOME_SENT,
        92: pb.DELIVERY_OUTCOME_SENT,
        blocked: pb.DELIVERY_OUTCOME_BLOCKED,
    }
    assert not last.HasField("result")
    assert last.progress.status == pb.BROADCAST_STATUS_COMPLETED
    assert final.status == pb.BROADCAST_STATUS_COMPLETED
    assert (final.sent, final.failed, final.pending) == (2, 1, 0)
    chats = [int(c.params["chat_id"]) for c in stack.simulator.calls if c.method == "sendMessage"]
    assert sorted(chats) == [91, 92, blocked]
