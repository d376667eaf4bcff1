"""Prometheus metrics (docs/operations.md, "Metrics"): read from a live ``/metrics`` after real
requests, streams, webhooks and failures, on the whole service on real parts."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from tests.fixtures.forwarder import Forwarder
from tests.fixtures.nats import nats_server_url, wait_until
from tests.fixtures.services import free_port
from tests.fixtures.stack import Stack, open_backend, stack_settings, start_stack
from tests.fixtures.streams import open_grpc_watch, open_sse, scheduled_broadcast
from tgbroadcast.core.metrics import API_BUCKETS, Metrics
from tgbroadcast.launcher.app import running_service
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

BROADCAST_ROUTE = "/v1/broadcasts/{broadcast_id}"
WEBHOOK_ENV = {
    "TGB_WEBHOOK_SECRET": "webhook-secret-0123456789abcdef",
    "TGB_WEBHOOK_POLL_INTERVAL": "0.05",
    "TGB_WEBHOOK_BACKOFF_BASE": "0.01",
    "TGB_WEBHOOK_BACKOFF_CAP": "0.05",
    "TGB_WEBHOOK_MAX_ATTEMPTS": "3",
    "TGB_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",  # the receivers listen on 127.0.0.1
}


@dataclass(frozen=True, slots=True)
class Scrape:
    """One ``/metrics`` page: every sample by name, with its labels."""

    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float | None:
        """The sample ``name`` with exactly ``labels``, or None."""
        for sample_labels, value in self.samples.get(name, ()):
            if sample_labels == labels:
                return value
        return None

    def labels(self, name: str) -> list[dict[str, str]]:
        return [sample_labels for sample_labels, _ in self.samples.get(name, ())]


async def scrape(url: str) -> Scrape:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    page = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            page.samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return page


async def request(stack: Stack, method: str, path: str, **kwargs: Any) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, stack.http_url + path, **kwargs) as response,
    ):
        await response.read()
        return response.status


async def send(stack: Stack, body: Mapping[str, Any]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(stack.http_url + "/v1/broadcasts", json=body, headers=stack.auth) as r,
    ):
        assert r.status == 202, await r.text()
        broadcast_id: int = (await r.json())["broadcast_id"]
        return broadcast_id


async def test_http_requests_by_route_template_method_and_status(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    broadcast_id = await send(stack, {"message": "hi", "user_ids": [1]})
    path = f"/v1/broadcasts/{broadcast_id}"
    assert await request(stack, "GET", path, headers=stack.auth) == 200
    assert await request(stack, "GET", path, headers=stack.auth) == 200
    assert await request(stack, "GET", "/v1/broadcasts/987654", headers=stack.auth) == 404
    assert await request(stack, "GET", path) == 401
    assert await request(stack, "GET", f"/no/such/{broadcast_id}", headers=stack.auth) == 404
    assert await request(stack, "DELETE", path, headers=stack.auth) == 405

    page = await scrape(stack.http_url)
    count = "tgb_http_requests_total"
    assert page.value(count, route="/v1/broadcasts", method="POST", status="202") == 1
    assert page.value(count, route=BROADCAST_ROUTE, method="GET", status="200") == 2
    assert page.value(count, route=BROADCAST_ROUTE, method="GET", status="404") == 1
    assert page.value(count, route=BROADCAST_ROUTE, method="GET", status="401") == 1
    assert page.value(count, route="unmatched", method="GET", status="404") == 1
    assert page.value(count, route="unmatched", method="DELETE", status="405") == 1
    routes = {labels["route"] for labels in page.labels(count)}
    assert routes == {"/v1/broadcasts", BROADCAST_ROUTE, "unmatched"}  # never a raw path
    assert page.value(count, route="/metrics", method="GET", status="200") is None  # not yet

    buckets = [
        (labels["le"], value)
        for labels, value in page.samples["tgb_http_request_duration_seconds_bucket"]
        if labels["route"] == BROADCAST_ROUTE and labels["method"] == "GET"
    ]
    assert [float(le) for le, _ in buckets] == [*API_BUCKETS, float("inf")]
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == 4  # 200, 200, 404, 401
    seconds = "tgb_http_request_duration_seconds"
    assert page.value(seconds + "_count", route=BROADCAST_ROUTE, method="GET") == 4
    assert (page.value(seconds + "_sum", route=BROADCAST_ROUTE, method="GET") or 0) > 0

    again = await scrape(stack.http_url)
    assert again.value(count, route="/metrics", method="GET", status="200") == 1


async def test_grpc_calls_by_method_and_code(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    async with stack.stub() as stub:
        sent = await stub.SendMessage(
            pb.SendMessageRequest(message="hi", user_ids=[1, 2]), metadata=stack.metadata
        )
        await stub.GetBroadcast(
            pb.GetBroadcastRequest(broadcast_id=sent.broadcast_id), metadata=stack.metadata
        )
        for invalid in (
            pb.SendMessageRequest(message="", user_ids=[1]),
            pb.SendMessageRequest(message="no recipients"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.SendMessage(invalid, metadata=stack.metadata)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetBroadcast(pb.GetBroadcastRequest(broadcast_id=sent.broadcast_id))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        missing: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/no.such.Service/Anything"
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await missing(b"", metadata=stack.metadata)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED

    page = await scrape(stack.http_url)
    count = "tgb_grpc_requests_total"
    assert page.value(count, method="SendMessage", code="OK") == 1
    assert page.value(count, method="SendMessage", code="INVALID_ARGUMENT") == 2
    assert page.value(count, method="GetBroadcast", code="OK") == 1
    assert page.value(count, method="GetBroadcast", code="UNAUTHENTICATED") == 1
    assert page.value(count, method="unknown", code="UNIMPLEMENTED") == 1
    assert {labels["method"] for labels in page.labels(count)} == {
        "SendMessage",
        "GetBroadcast",
        "unknown",
    }
    seconds = "tgb_grpc_request_duration_seconds"
    assert page.value(seconds + "_count", method="SendMessage") == 3
    assert page.value(seconds + "_bucket", method="SendMessage", le="+Inf") == 3


async def test_watchers_count_open_streams_per_transport(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    broadcast_id = await scheduled_broadcast(stack.http_url)

    async def watchers(grpc_open: int, sse_open: int) -> bool:
        page = await scrape(stack.http_url)
        return (
            page.value("tgb_watchers", transport="grpc"),
            page.value("tgb_watchers", transport="sse"),
        ) == (grpc_open, sse_open)

    assert await watchers(0, 0)
    async with (
        AsyncExitStack() as streams,
        aiohttp.ClientSession() as session,
        grpc.aio.insecure_channel(stack.grpc_target) as channel,
    ):
        await open_sse(streams, session, stack.http_url, broadcast_id)
        assert await watchers(0, 1)  # the server holds the stream: counted already
        first = await open_grpc_watch(channel, broadcast_id)
        second = await open_grpc_watch(channel, broadcast_id)
        assert await watchers(2, 1)
        first.cancel()
        await wait_until(lambda: watchers(1, 1))
        second.cancel()
        await wait_until(lambda: watchers(0, 1))
    await wait_until(lambda: watchers(0, 0))


async def test_backlog_per_tier_and_a_standalone_workers_metrics(
    simulator: Simulator, tmp_path: Path
) -> None:
    """An API without a worker: jobs wait, per tier; a worker started with a metrics port
    takes them and serves the sender's metrics (limits, permits, outcomes) on it."""
    port = free_port()
    worker_env = {
        "TGB_WORKER_METRICS_PORT": str(port),
        "TGB_TELEGRAM_RATE_LIMIT": "250",
        "TGB_TELEGRAM_PAID_RATE_LIMIT": "500",
    }
    async with open_backend("sqlite", tmp_path) as backend:
        api_settings = stack_settings(backend, simulator)
        async with running_service(api_settings, api=True, workers=0) as running:
            stack = Stack(settings=api_settings, simulator=simulator, running=running)
            free = await send(stack, {"message": "free", "user_ids": [1, 2]})
            paid = await send(
                stack, {"message": "paid", "user_ids": [3], "allow_paid_broadcast": True}
            )

            async def backlog(tier: str) -> float | None:
                return (await scrape(stack.http_url)).value(
                    "tgb_queue_backlog_jobs", tier=tier, bot="default"
                )

            async def both_waiting() -> bool:
                return (await backlog("free") or 0) > 0 and (await backlog("paid") or 0) > 0

            await wait_until(both_waiting)
            api_page = await scrape(stack.http_url)
            assert api_page.labels("tgb_rate_limit_per_second") == []  # it sends nothing
            assert (api_page.value("tgb_queue_pending_jobs") or 0) > 0

            async with running_service(
                stack_settings(backend, simulator, worker_env), api=False, workers=1
            ):
                worker_url = f"http://127.0.0.1:{port}"
                await wait_until(lambda: _finished(stack, free, paid))
                await wait_until(lambda: _backlog_empty(worker_url))
                page = await scrape(worker_url)
    assert page.value("tgb_rate_limit_per_second", tier="free", bot="default") == 250
    assert page.value("tgb_rate_limit_per_second", tier="paid", bot="default") == 500
    assert page.value("tgb_rate_permits_total", tier="free", bot="default") == 2
    assert page.value("tgb_rate_permits_total", tier="paid", bot="default") == 1
    assert page.value("tgb_messages_total", outcome="sent", bot="default") == 3
    assert page.value("tgb_database_errors_total") == 0
    assert page.value("tgb_nats_errors_total") == 0
    assert (page.value("process_resident_memory_bytes") or 0) > 0
    assert "python_gc_collections_total" in page.samples
    assert page.labels("tgb_http_requests_total") == []  # the probe port is not the API


async def _finished(stack: Stack, *broadcast_ids: int) -> bool:
    async with aiohttp.ClientSession(headers=stack.auth) as session:
        for broadcast_id in broadcast_ids:
            async with session.get(f"{stack.http_url}/v1/broadcasts/{broadcast_id}") as r:
                if (await r.json())["status"] != "completed":
                    return False
    return True


async def _backlog_empty(url: str) -> bool:
    page = await scrape(url)
    backlog = [
        page.value("tgb_queue_backlog_jobs", tier=t, bot="default") for t in ("free", "paid")
    ]
    return backlog == [0, 0]


async def test_process_and_python_collectors(sqlite_stack: Stack) -> None:
    page = await scrape(sqlite_stack.http_url)
    assert (page.value("process_cpu_seconds_total") or 0) > 0
    assert (page.value("process_resident_memory_bytes") or 0) > 0
    assert (page.value("process_open_fds") or 0) > 0
    assert {labels["generation"] for labels in page.labels("python_gc_collections_total")} == {
        "0",
        "1",
        "2",
    }
    (info,) = page.labels("python_info")
    assert info["implementation"] == "CPython"


async def test_a_database_error_is_counted(sqlite_stack: Stack) -> None:
    """The broadcasts table renamed away under the running server: its queries fail for real
    (``no such table``), then work again once it is back."""
    stack = sqlite_stack
    broadcast_id = await send(stack, {"message": "hi", "user_ids": [1]})
    path = f"/v1/broadcasts/{broadcast_id}"
    await wait_until(lambda: _finished(stack, broadcast_id))  # no write of it in flight
    assert (await scrape(stack.http_url)).value("tgb_database_errors_total") == 0
    database = make_url(stack.settings.database.url).database
    assert database is not None
    with _renamed(Path(database), "broadcasts", "broadcasts_away"):
        assert await request(stack, "GET", path, headers=stack.auth) == 503
        errors = (await scrape(stack.http_url)).value("tgb_database_errors_total")
        assert (errors or 0) >= 1
    assert await request(stack, "GET", path, headers=stack.auth) == 200


class _renamed:  # noqa: N801 - used as a context manager
    def __init__(self, database: Path, table: str, to: str) -> None:
        self._database, self._table, self._to = database, table, to

    def __enter__(self) -> None:
        self._rename(self._table, self._to)

    def __exit__(self, *exc: object) -> None:
        self._rename(self._to, self._table)

    def _rename(self, old: str, new: str) -> None:
        connection = sqlite3.connect(self._database, timeout=30, isolation_level=None)
        try:  # the write lock first (waiting for it), then the change
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(f"ALTER TABLE {old} RENAME TO {new}")
            connection.execute("COMMIT")
        finally:
            connection.close()


async def test_nats_errors_are_counted(simulator: Simulator, tmp_path: Path) -> None:
    """NATS behind a forwarder that drops the connection (and at once forwards again): the
    connection reports the lost stream, and reconnects; none before."""
    async with (
        open_backend("sqlite", tmp_path) as backend,
        nats_server_url("embedded", tmp_path) as nats_url,
    ):
        host, _, port = nats_url.removeprefix("nats://").rpartition(":")
        async with Forwarder(host, int(port)) as forwarder:
            overrides = {"TGB_NATS_URL": forwarder.rewrite(nats_url)}
            async with start_stack(backend, simulator, overrides) as stack:
                assert (await scrape(stack.http_url)).value("tgb_nats_errors_total") == 0
                forwarder.cut()
                forwarder.restore()  # only the open connection is lost

                async def counted() -> bool:
                    page = await scrape(stack.http_url)
                    return (page.value("tgb_nats_errors_total") or 0) > 0

                await wait_until(counted)
                await wait_until(lambda: _ready(stack))  # reconnected before it stops


async def _ready(stack: Stack) -> bool:
    return await request(stack, "GET", "/readyz") == 200


@dataclass
class Receiver:
    url: str = ""
    answers: list[int] = field(default_factory=list)
    """Statuses answered in order; 200 once they run out."""


@asynccontextmanager
async def receiver(answers: list[int]) -> AsyncIterator[Receiver]:
    hook = Receiver(answers=list(answers))

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=hook.answers.pop(0) if hook.answers else 200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        hook.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        yield hook
    finally:
        await runner.cleanup()


async def test_webhook_deliveries_by_outcome(simulator: Simulator, tmp_path: Path) -> None:
    """One webhook answered 500 then 200 (retried, delivered), one answered 404 (failed)."""
    async with (
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, WEBHOOK_ENV) as stack,
        receiver([500]) as flaky,
        receiver([404]) as refusing,
    ):
        page = await scrape(stack.http_url)
        for outcome in ("delivered", "retried", "failed"):
            assert page.value("tgb_webhook_deliveries_total", outcome=outcome, bot="default") == 0
        await send(stack, {"message": "a", "user_ids": [1], "callback_url": flaky.url})
        await send(stack, {"message": "b", "user_ids": [2], "callback_url": refusing.url})

        async def settled() -> bool:
            page = await scrape(stack.http_url)
            return (
                page.value("tgb_webhook_deliveries_total", outcome="delivered", bot="default"),
                page.value("tgb_webhook_deliveries_total", outcome="failed", bot="default"),
            ) == (1, 1)

        await wait_until(settled)
        page = await scrape(stack.http_url)
        assert page.value("tgb_webhook_deliveries_total", outcome="retried", bot="default") == 1


class _Backlogs:
    """A queue whose backlog per bot is what the test sets (``None``: NATS does not answer)."""

    def __init__(self) -> None:
        self.by_bot: dict[str, dict[str, int]] | None = {}
        self.error_count = 0

    async def pending_jobs(self) -> int:
        return 0

    async def backlog_by_bot(self) -> dict[str, dict[str, int]]:
        if self.by_bot is None:
            raise ConnectionError("no NATS")
        return self.by_bot


async def test_the_backlog_has_a_series_per_bot_while_the_bot_has_jobs_or_consumers() -> None:
    metrics, queue = Metrics(), _Backlogs()
    metrics.add_queue(queue)

    async def backlog() -> dict[tuple[str, str], float]:
        page = (await metrics.render()).decode()
        return {
            (sample.labels["bot"], sample.labels["tier"]): sample.value
            for family in text_string_to_metric_families(page)
            for sample in family.samples
            if sample.name == "tgb_queue_backlog_jobs"
        }

    queue.by_bot = {"default": {"free": 0, "paid": 0}, "alpha": {"free": 3, "paid": 1}}
    assert await backlog() == {
        ("default", "free"): 0,
        ("default", "paid"): 0,
        ("alpha", "free"): 3,
        ("alpha", "paid"): 1,
    }
    queue.by_bot = None  # NATS does not answer: every series known reads NaN
    assert all(math.isnan(value) for value in (await backlog()).values())
    assert len(await backlog()) == 4
    queue.by_bot = {"default": {"free": 2, "paid": 0}}  # alpha deleted, its jobs purged
    assert await backlog() == {("default", "free"): 2, ("default", "paid"): 0}
    metrics.broadcast_created(bot="alpha", recipients=7)
    page = (await metrics.render()).decode()
    assert 'tgb_broadcasts_created_total{bot="alpha"} 1.0' in page
    assert 'tgb_recipients_accepted_total{bot="alpha"} 7.0' in page
