"""Scenario 8: what TLS costs per request, next to plain text.

Two runs of ``tgbroadcast server`` alone (SQLite, embedded NATS), identical but for
``server.tls_cert_file`` / ``tls_key_file`` (a throw-away CA and certificate from trustme):
a cheap authenticated read — ``GetBroadcast`` over gRPC, ``GET /v1/broadcasts/{id}`` over
REST — from several concurrent callers, first on connections kept open (TLS adds record
encryption only), then on a new connection per request (a TCP and a TLS handshake each).
The per-token rate limit is off, so every request is served.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc

from bench.analysis import percentile
from bench.children import API_TOKEN, Cluster, ServiceConfig
from bench.profiles import Bench
from bench.report import Section, Table, emit, fmt, progress
from bench.runs import track_cluster
from bench.scenarios.latency import timed_load
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc

Call = Callable[[], Awaitable[None]]
PLANS = (("gRPC", "kept"), ("REST", "kept"), ("gRPC", "new"), ("REST", "new"))


@dataclass(frozen=True, slots=True)
class Measured:
    p50_ms: float | None
    p99_ms: float | None
    cpu_ms: float | None
    """Server CPU milliseconds per request."""


async def tls_cost(bench: Bench) -> Section:
    profile = bench.profile
    requests = profile.latency_small_requests
    fresh = max(requests // 4, 4)
    concurrency = profile.latency_concurrency
    section = Section(
        key="8",
        title="TLS cost",
        setup=(
            f"A cheap authenticated read (`GetBroadcast`, `GET /v1/broadcasts/{{id}}`) from "
            f"{concurrency} concurrent callers: {fmt(requests)} requests on connections kept "
            f"open, then {fmt(fresh)} with a new connection each (a handshake per request), "
            "against `tgbroadcast server` alone (SQLite, embedded NATS) in plain text and with "
            "`server.tls_cert_file` / `tls_key_file` set (an ECDSA P-256 certificate from a "
            "throw-away CA); latency measured by the caller, server CPU by psutil."
        ),
    )
    try:
        import trustme
    except ImportError:
        section.findings.append("Not measured: trustme (the dev extra) is not installed.")
        return section
    folder = bench.folder("tls")
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.crt", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.ECDSA)
    cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_file))

    results: dict[tuple[str, str, str], Measured] = {}
    for mode in ("plain", "TLS"):
        environ: dict[str, str] = {}
        if mode == "TLS":
            environ |= {"TGB_SERVER_TLS_CERT_FILE": str(cert_file)}
            environ |= {"TGB_SERVER_TLS_KEY_FILE": str(key_file)}
        config = ServiceConfig(environ=environ)
        async with (
            Cluster.start(bench.folder(f"tls-{mode.lower()}"), bench.sim, config) as cluster,
            _Caller.open(cluster, ca_file if mode == "TLS" else None, concurrency) as caller,
        ):
            track_cluster(bench.meter, cluster)
            await caller.create()
            for transport, connection in PLANS:
                count = requests if connection == "kept" else fresh
                progress(f"8. {mode} {transport}, {count} requests, {connection} connections")
                call = caller.call(transport, connection)
                async with bench.meter.measuring() as window:
                    latencies = await timed_load(call, count, concurrency)
                cpu = window.cpu("server")
                p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
                measured = Measured(
                    p50_ms=None if p50 is None else p50 * 1000,
                    p99_ms=None if p99 is None else p99 * 1000,
                    cpu_ms=None if cpu is None else cpu * 1000 / count,
                )
                results[(transport, connection, mode)] = measured
                emit(
                    "8",
                    f"{mode} {transport} {connection}",
                    {
                        "requests": count,
                        "concurrency": concurrency,
                        "p50_ms": _round(measured.p50_ms),
                        "p99_ms": _round(measured.p99_ms),
                        "server_cpu_ms_per_request": _round(measured.cpu_ms, 3),
                    },
                )
    _report(section, results)
    return section


def _report(section: Section, results: dict[tuple[str, str, str], Measured]) -> None:
    rows = []
    for transport, connection in PLANS:
        plain = results[(transport, connection, "plain")]
        tls = results[(transport, connection, "TLS")]
        extra = None
        if plain.cpu_ms is not None and tls.cpu_ms is not None:
            extra = tls.cpu_ms - plain.cpu_ms
        where = "kept open" if connection == "kept" else "new per request"
        rows.append(
            [
                transport,
                where,
                f"{fmt(plain.p50_ms)} / {fmt(plain.p99_ms)}",
                f"{fmt(tls.p50_ms)} / {fmt(tls.p99_ms)}",
                fmt(plain.cpu_ms, 3),
                fmt(tls.cpu_ms, 3),
                fmt(extra, 3),
            ]
        )
        section.findings.append(
            f"{transport}, connection {where}: p50 {fmt(plain.p50_ms)} ms plain, "
            f"{fmt(tls.p50_ms)} ms TLS; server CPU {fmt(extra, 3)} ms more per request."
        )
    section.tables.append(
        Table(
            columns=(
                "transport",
                "connection",
                "plain p50 / p99 (ms)",
                "TLS p50 / p99 (ms)",
                "plain server CPU ms / request",
                "TLS server CPU ms / request",
                "TLS extra CPU ms / request",
            ),
            rows=rows,
        )
    )


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


class _Caller:
    """Calls the service in plain text, or over TLS trusting ``ca_file``."""

    def __init__(
        self,
        cluster: Cluster,
        ca_file: Path | None,
        session: aiohttp.ClientSession,
        fresh: aiohttp.ClientSession,
        channel: grpc.aio.Channel,
    ) -> None:
        self.cluster = cluster
        self.ca_file = ca_file
        self._ssl: ssl.SSLContext | bool = (
            True if ca_file is None else ssl.create_default_context(cafile=ca_file)
        )
        self._session = session
        self._fresh = fresh
        self._stub = pb_grpc.BroadcastServiceStub(channel)
        self._headers = {"Authorization": f"Bearer {API_TOKEN}"}
        self._metadata = (("authorization", f"Bearer {API_TOKEN}"),)
        self.broadcast_id = 0

    @classmethod
    @asynccontextmanager
    async def open(
        cls, cluster: Cluster, ca_file: Path | None, concurrency: int
    ) -> AsyncIterator[_Caller]:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as kept,
            # force_close: every request opens (and handshakes) its own connection.
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
            _channel(cluster.grpc_target, ca_file) as channel,
        ):
            yield cls(cluster, ca_file, kept, fresh, channel)

    async def create(self) -> None:
        """One broadcast to read back."""
        async with self._session.post(
            self.cluster.http_url + "/send-message",
            json={"message": "TLS benchmark", "user_ids": [1]},
            headers=self._headers,
            ssl=self._ssl,
        ) as response:
            if response.status != 202:
                raise RuntimeError(f"send-message: {response.status} {await response.text()}")
            self.broadcast_id = int((await response.json())["broadcast_id"])

    def call(self, transport: str, connection: str) -> Call:
        if transport == "REST":
            session = self._session if connection == "kept" else self._fresh
            return lambda: self._get_rest(session)
        if connection == "kept":
            return lambda: self._get_grpc(self._stub)
        return self._get_grpc_fresh

    async def _get_rest(self, session: aiohttp.ClientSession) -> None:
        url = f"{self.cluster.http_url}/v1/broadcasts/{self.broadcast_id}"
        async with session.get(url, headers=self._headers, ssl=self._ssl) as response:
            if response.status != 200:
                raise RuntimeError(f"get broadcast: {response.status} {await response.text()}")
            await response.read()

    async def _get_grpc(self, stub: pb_grpc.BroadcastServiceAsyncStub) -> None:
        request = pb.GetBroadcastRequest(broadcast_id=self.broadcast_id)
        await stub.GetBroadcast(request, metadata=self._metadata)

    async def _get_grpc_fresh(self) -> None:
        async with _channel(self.cluster.grpc_target, self.ca_file, fresh=True) as channel:
            await self._get_grpc(pb_grpc.BroadcastServiceStub(channel))


def _channel(target: str, ca_file: Path | None, *, fresh: bool = False) -> grpc.aio.Channel:
    """A channel; ``fresh``: with its own connection (channels otherwise share one)."""
    options = [("grpc.use_local_subchannel_pool", 1)] if fresh else []
    if ca_file is None:
        return grpc.aio.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
    return grpc.aio.secure_channel(target, credentials, options=options)
