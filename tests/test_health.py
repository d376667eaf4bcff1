"""Honest health: ``/livez``, ``/readyz`` and gRPC health say what is true.

The database and NATS are made unreachable for real — the service reaches them through a
TCP forwarder the test cuts (:mod:`tests.fixtures.forwarder`) — and readiness must fail,
naming the check, then pass again when they return. The database case runs on PostgreSQL and
MariaDB (required with ``CI=true``): a SQLite file cannot be cut off from its process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from tests.fixtures.forwarder import Forwarder
from tests.fixtures.nats import nats_server_url, wait_until
from tests.fixtures.services import MARIADB_ADDR, POSTGRES_ADDR, free_port
from tests.fixtures.stack import Backend, Stack, open_backend, stack_settings, start_stack
from tgbroadcast.core.domain.errors import BACKEND_UNAVAILABLE
from tgbroadcast.core.health import CHECK_TIMEOUT, MAX_AGE, Readiness
from tgbroadcast.core.store import Store
from tgbroadcast.launcher import app as launcher_app
from tgbroadcast.launcher.app import running_service
from tgbroadcast.server.grpc.health import INTERVAL
from tgbroadcast.simulator import Simulator

SERVICES = ("", "tgbroadcast.v1.BroadcastService")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def probe(url: str) -> tuple[int, str, Any]:
    """GET ``url`` without a token: the status, the content type and the decoded body."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.content_type, await response.json(content_type=None)


async def grpc_health(stack: Stack, service: str) -> int:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        answer: health_pb2.HealthCheckResponse = await check(
            health_pb2.HealthCheckRequest(service=service)
        )
        return int(answer.status)


async def ready(stack: Stack) -> bool:
    return (await probe(stack.http_url + "/readyz"))[0] == 200


async def not_ready(stack: Stack) -> bool:
    return (await probe(stack.http_url + "/readyz"))[0] == 503


async def grpc_says(stack: Stack, status: int) -> bool:
    return all([await grpc_health(stack, service) == status for service in SERVICES])


async def test_livez_and_readyz_answer_without_a_token(sqlite_stack: Stack) -> None:
    assert await probe(sqlite_stack.http_url + "/livez") == (
        200,
        "application/json",
        {"status": "live"},
    )
    assert await probe(sqlite_stack.http_url + "/readyz") == (
        200,
        "application/json",
        {"status": "ready"},
    )
    for service in SERVICES:
        assert await grpc_health(sqlite_stack, service) == SERVING


async def test_healthz_is_readyz_under_its_old_name(sqlite_stack: Stack) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(sqlite_stack.http_url + "/healthz") as response,
    ):
        assert (response.status, await response.json()) == (200, {"status": "ready"})
    sqlite_stack.running.readiness.start_draining()
    async with (
        aiohttp.ClientSession() as session,
        session.get(sqlite_stack.http_url + "/healthz") as response,
    ):
        assert (response.status, response.content_type) == (503, "application/problem+json")
        assert (await response.json())["checks"]["draining"] != "ok"


each_server = pytest.mark.parametrize(
    ("backend", "address"),
    [
        pytest.param("postgres", POSTGRES_ADDR, marks=pytest.mark.postgres),
        pytest.param("mariadb", MARIADB_ADDR, marks=pytest.mark.mariadb),
    ],
    indirect=["backend"],
)
"""A test's database server, and its address (for a forwarder the test can cut)."""


@each_server
async def test_an_unreachable_database_fails_readiness_until_it_returns(
    backend: Backend, address: tuple[str, int], simulator: Simulator
) -> None:
    async with Forwarder(*address) as forwarder:
        dsn = forwarder.rewrite(backend.environ["TGB_DATABASE_DSN"])
        async with start_stack(backend, simulator, {"TGB_DATABASE_DSN": dsn}) as stack:
            assert await ready(stack)
            assert await grpc_says(stack, SERVING)

            forwarder.cut()
            await wait_until(lambda: not_ready(stack))
            status, content_type, body = await probe(stack.http_url + "/readyz")
            assert (status, content_type) == (503, "application/problem+json")
            assert body["checks"]["database"] != "ok"
            assert body["checks"]["nats"] == "ok"
            assert body["checks"]["draining"] == "ok"
            assert body["detail"] == "not ready: database"
            await wait_until(lambda: grpc_says(stack, NOT_SERVING))
            assert await probe(stack.http_url + "/livez") == (
                200,
                "application/json",
                {"status": "live"},
            )

            forwarder.restore()
            await wait_until(lambda: ready(stack))
            await wait_until(lambda: grpc_says(stack, SERVING))


@each_server
async def test_a_database_unreachable_at_start_up_is_waited_for(
    backend: Backend,
    address: tuple[str, int],
    simulator: Simulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As NATS is: the start retries every second with a warning, then goes on once the
    database answers (it ended in a traceback)."""
    waiting = "the database cannot be reached; retrying every second"
    async with Forwarder(*address) as forwarder:
        forwarder.cut()  # (connections taken and closed: a proxy before a server starting)
        dsn = forwarder.rewrite(backend.environ["TGB_DATABASE_DSN"])
        started = asyncio.Event()

        async def start() -> None:
            async with start_stack(backend, simulator, {"TGB_DATABASE_DSN": dsn}) as stack:
                assert await ready(stack)
                started.set()

        starting = asyncio.create_task(start())

        async def warned() -> bool:
            assert not starting.done(), starting
            return any(r.getMessage() == waiting for r in caplog.records)

        await wait_until(warned)
        assert not started.is_set()
        forwarder.restore()
        await starting
        assert started.is_set()


SERVERS_AND_SQLITE = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]


@pytest.mark.parametrize("backend", SERVERS_AND_SQLITE)
async def test_a_database_refusing_for_good_fails_the_start_at_once(
    backend: str, tmp_path: Path
) -> None:
    """Not waited for as an unreachable one: a password refused, a database that does not
    exist, a SQLite file that is no database end the start with their error."""
    (tmp_path / "not-a-database").write_bytes(b"not SQLite at all " * 100)
    urls = {
        "sqlite": f"sqlite+aiosqlite:///{tmp_path / 'not-a-database'}",
        "postgres": f"postgresql+asyncpg://postgres@{POSTGRES_ADDR[0]}:{POSTGRES_ADDR[1]}/nodb",
        "mariadb": f"mysql+asyncmy://nobody:wrong@{MARIADB_ADDR[0]}:{MARIADB_ADDR[1]}/test",
    }
    async with Store.open(urls[backend]) as store:
        with pytest.raises((*BACKEND_UNAVAILABLE, DBAPIError)):
            await launcher_app._migrated(store)


async def test_an_unreachable_nats_fails_readiness_until_it_returns(
    simulator: Simulator, tmp_path: Path
) -> None:
    async with (
        open_backend("sqlite", tmp_path) as backend,
        nats_server_url("embedded", tmp_path) as nats_url,
    ):
        host, _, port = nats_url.removeprefix("nats://").rpartition(":")
        async with Forwarder(host, int(port)) as forwarder:
            overrides = {"TGB_NATS_URL": forwarder.rewrite(nats_url)}
            async with start_stack(backend, simulator, overrides) as stack:
                assert await ready(stack)
                forwarder.cut()
                await wait_until(lambda: not_ready(stack))
                _, _, body = await probe(stack.http_url + "/readyz")
                assert body["checks"]["nats"] != "ok"
                assert body["checks"]["database"] == "ok"
                assert "nats" in body["detail"]
                await wait_until(lambda: grpc_says(stack, NOT_SERVING))
                forwarder.restore()
                await wait_until(lambda: ready(stack))
                await wait_until(lambda: grpc_says(stack, SERVING))


async def test_a_standalone_worker_serves_livez_readyz_and_metrics(
    simulator: Simulator, tmp_path: Path
) -> None:
    port = free_port()
    async with (
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator),  # the API, and the embedded nats-server the worker uses
        running_service(
            stack_settings(backend, simulator, {"TGB_WORKER_METRICS_PORT": str(port)}),
            api=False,
            workers=1,
        ) as worker,
    ):
        url = f"http://127.0.0.1:{port}"
        assert await probe(url + "/livez") == (200, "application/json", {"status": "live"})
        assert await probe(url + "/readyz") == (200, "application/json", {"status": "ready"})
        async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
            assert response.status == 200
            assert "tgb_messages_total" in await response.text()

        await worker.drain()
        status, content_type, body = await probe(url + "/readyz")
        assert (status, content_type) == (503, "application/problem+json")
        assert body["checks"] == {"database": "ok", "nats": "ok", "draining": "shutting down"}
        assert body["detail"] == "not ready: draining"


async def test_grpc_health_says_not_serving_as_soon_as_the_drain_starts(
    sqlite_stack: Stack,
) -> None:
    async with grpc.aio.insecure_channel(sqlite_stack.grpc_target) as channel:
        watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )(health_pb2.HealthCheckRequest(service=""))
        assert await watch.read() == health_pb2.HealthCheckResponse(status=SERVING)
        drain = asyncio.create_task(sqlite_stack.running.drain())
        assert await watch.read() == health_pb2.HealthCheckResponse(status=NOT_SERVING)
        watch.cancel()
        await drain


# -- Readiness itself -------------------------------------------------------------------


class Gate:
    """A check that answers only while open, and counts its runs."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.runs = 0

    async def __call__(self) -> None:
        self.runs += 1
        await self.open.wait()


@pytest.fixture
async def gated() -> AsyncIterator[tuple[Readiness, Gate]]:
    gate = Gate()
    readiness = Readiness({"database": gate}, timeout=0.05, max_age=0.0)
    try:
        yield readiness, gate
    finally:
        gate.open.set()
        await readiness.aclose()


async def test_a_check_that_hangs_fails_in_time_and_is_not_run_twice(
    gated: tuple[Readiness, Gate],
) -> None:
    readiness, gate = gated
    report = await readiness.check()
    assert not report.ready
    assert report.failing == ("database",)
    assert report.checks["database"] == "no answer within 0.05 s"
    await readiness.check()
    assert gate.runs == 1  # still waited for, not started again

    gate.open.set()
    await wait_until(lambda: _ready(readiness))
    assert (await readiness.check()).checks == {"database": "ok", "draining": "ok"}


async def test_a_failing_check_is_named_by_its_error_type_only() -> None:
    async def refused() -> None:
        raise ConnectionRefusedError("connect to 10.0.0.7:5432 refused")

    readiness = Readiness({"database": refused})
    report = await readiness.check()
    assert report.checks["database"] == "failed (ConnectionRefusedError)"
    await readiness.aclose()


async def test_concurrent_callers_share_one_round() -> None:
    runs = 0

    async def counted() -> None:
        nonlocal runs
        runs += 1

    readiness = Readiness({"nats": counted}, max_age=60.0)
    reports = await asyncio.gather(*(readiness.check() for _ in range(50)))
    assert all(report.ready for report in reports)
    assert runs == 1
    await readiness.aclose()


async def test_draining_fails_readiness_at_once_and_for_good() -> None:
    readiness = Readiness()
    assert (await readiness.check()).ready
    readiness.start_draining()
    report = await readiness.check()
    assert report.failing == ("draining",)
    assert report.checks["draining"] == "shutting down"


async def _ready(readiness: Readiness) -> bool:
    return (await readiness.check()).ready


def test_grpc_health_follows_readiness_within_two_seconds() -> None:
    """A result reused for at most MAX_AGE, one re-check interval, then one check's timeout."""
    assert MAX_AGE + INTERVAL + CHECK_TIMEOUT < 2.0


async def test_the_database_check_does_not_wait_for_the_pool(
    store: Store, database_url: str
) -> None:
    """Every pooled connection busy (as under load): the ping still answers in time, on a
    connection of its own, so readiness measures the database, not the pool (``store``
    made the database; this one has a pool of one)."""
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=30)
    small = Store(engine)
    readiness = Readiness({"database": small.ping})
    try:
        async with engine.connect():  # the pool's only connection
            report = await readiness.check()
        assert report.checks["database"] == "ok"
    finally:
        await readiness.aclose()
        await small.close()
