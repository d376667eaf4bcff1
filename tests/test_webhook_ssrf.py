"""Webhooks cannot reach inside: a ``callback_url`` spelled as an internal address is refused
at request time (REST and gRPC), a name that resolves to one is refused at delivery, the
connection goes to the address that was checked, and redirects are not followed — unless
``webhook.allow_private_networks`` is set."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import grpc
import pytest
import trustme
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fixtures.stack import Stack, open_backend, start_stack
from tests.test_webhooks import (
    SECRET,
    WEBHOOK_ENV,
    database,
    eventually,
    finished,
    receiver,
    send,
    settled,
    webhook_state,
)
from tgbroadcast.core.background.webhooks import WebhookNotifier
from tgbroadcast.core.config import WebhookSettings
from tgbroadcast.core.outbound import CheckedResolver, Refusal, RefusedDestination
from tgbroadcast.core.rules import addresses
from tgbroadcast.core.rules.addresses import Address, literal_address, refusal
from tgbroadcast.core.store import Store
from tgbroadcast.core.store.tables import broadcasts
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

SSRF_ENV = {**WEBHOOK_ENV, "TGB_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "false"}
LATER = "2099-01-01T00:00:00Z"
"""A ``send_at`` that keeps an accepted broadcast scheduled: its webhook is never sent."""

INTERNAL_URLS = {
    # spelling: (callback_url, the address it reaches)
    "loopback": ("http://127.0.0.1/h", "127.0.0.1"),
    "loopback with a port": ("http://127.0.0.1:8080/h?k=v", "127.0.0.1"),
    "with credentials": ("https://user:pw@127.0.0.1/h", "127.0.0.1"),
    "after a userinfo": ("http://example.com@127.0.0.1/h", "127.0.0.1"),
    "decimal": ("http://2130706433/h", "127.0.0.1"),
    "octal": ("http://0177.0.0.1/h", "127.0.0.1"),
    "octal, one part": ("http://017700000001/h", "127.0.0.1"),
    "hex parts": ("http://0x7f.0.0.1/h", "127.0.0.1"),
    "hex": ("http://0x7f000001/h", "127.0.0.1"),
    "short": ("http://127.1/h", "127.0.0.1"),
    "short private": ("http://10.1/h", "10.0.0.1"),
    "trailing dot": ("http://127.0.0.1./h", "127.0.0.1"),
    "percent-encoded": ("http://%31%32%37.0.0.1/h", "127.0.0.1"),
    "full-width": ("http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/h", "127.0.0.1"),
    "ideographic dots": ("http://127\u30020\u30020\u30021/h", "127.0.0.1"),
    "unspecified": ("http://0.0.0.0/h", "0.0.0.0"),
    "zero": ("http://0/h", "0.0.0.0"),
    "metadata": ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    "private 10": ("http://10.0.0.1/h", "10.0.0.1"),
    "private 172": ("http://172.16.0.1/h", "172.16.0.1"),
    "private 192": ("http://192.168.1.1/h", "192.168.1.1"),
    "CGNAT": ("http://100.64.0.1/h", "100.64.0.1"),
    "multicast": ("http://224.0.0.1/h", "224.0.0.1"),
    "broadcast": ("http://255.255.255.255/h", "255.255.255.255"),
    "reserved": ("http://240.0.0.1/h", "240.0.0.1"),
    "benchmarking": ("http://198.18.0.1/h", "198.18.0.1"),
    "documentation": ("http://192.0.2.1/h", "192.0.2.1"),
    "IPv6 loopback": ("http://[::1]/h", "::1"),
    "IPv6 loopback, long": ("http://[0:0:0:0:0:0:0:1]:80/h", "::1"),
    "IPv6 unspecified": ("http://[::]/h", "::"),
    "IPv4-mapped": ("http://[::ffff:127.0.0.1]/h", "::ffff:7f00:1"),
    "IPv4-mapped, hex": ("http://[::FFFF:7f00:1]/h", "::ffff:7f00:1"),
    "IPv4-mapped metadata": ("http://[::ffff:169.254.169.254]/h", "::ffff:a9fe:a9fe"),
    "IPv4-compatible": ("http://[::127.0.0.1]/h", "::7f00:1"),
    "NAT64 of loopback": ("http://[64:ff9b::127.0.0.1]/h", "64:ff9b::7f00:1"),
    "6to4 of loopback": ("http://[2002:7f00:1::1]/h", "2002:7f00:1::1"),
    "6to4 of private": ("http://[2002:c0a8:101::1]/h", "2002:c0a8:101::1"),
    "unique local": ("http://[fd12:3456::1]/h", "fd12:3456::1"),
    "link-local": ("http://[fe80::1]/h", "fe80::1"),
    "zone id": ("http://[fe80::1%25eth0]/h", "fe80::1"),
    "site-local": ("http://[fec0::1]/h", "fec0::1"),
    "IPv6 multicast": ("http://[ff02::1]/h", "ff02::1"),
    "IPv6 documentation": ("http://[2001:db8::1]/h", "2001:db8::1"),
    "Teredo": ("http://[2001:0:4136:e378::1]/h", "2001:0:4136:e378::1"),
    "discard": ("http://[100::1]/h", "100::1"),
}

PUBLIC_URLS = (
    "http://93.184.215.14/h",
    "https://8.8.8.8:8443/h",
    "https://[2606:4700::1111]/h",
    "http://[2001:4860:4860::8888]/h",
    "http://[::ffff:93.184.215.14]/h",  # IPv4-mapped public
    "http://[64:ff9b::93.184.215.14]/h",  # NAT64 of a public address
    "http://[2002:5db8:d70e::1]/h",  # 6to4 of a public address
    "https://example.com/h",
    "http://localhost:1/h",  # a name: checked when delivered, not when sent
    "http://0x7g.0.0.1/h",  # not an address as inet_aton reads it: a name too
)


# -- the rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "address"), INTERNAL_URLS.values(), ids=INTERNAL_URLS.keys())
def test_every_spelling_of_an_internal_address_is_read_and_refused(url: str, address: str) -> None:
    host = urlsplit(url).hostname
    assert host is not None
    spelled = literal_address(host)
    assert spelled is not None
    assert str(_without_zone(spelled)) == address
    refused = addresses.host_refusal(host, allow_private=False)
    assert refused is not None
    assert refused.startswith(f"{address} is ")
    assert addresses.host_refusal(host, allow_private=True) is None


@pytest.mark.parametrize("url", PUBLIC_URLS)
def test_public_addresses_and_names_pass_the_request_time_check(url: str) -> None:
    assert addresses.host_refusal(urlsplit(url).hostname or "", allow_private=False) is None


@pytest.mark.parametrize(
    "spelling",
    [
        "127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0X7F.0.0.1", "0x7f000001",
        "127.1", "127.0.1", "10.1", "0", "00", "017700000001", "4294967295", "1.16777215",
        "4294967296", "1.16777216", "256.0.0.1", "08", "0x", "0x.1", "1..1", "1.2.3.4.5",
        "-1", "+1", "1e3", "", ".", "a.b.c.d", "0x1g", "09.1",
    ],
)  # fmt: skip
def test_ipv4_spellings_are_read_as_inet_aton_reads_them(spelling: str) -> None:
    try:
        expected: IPv4Address | None = IPv4Address(socket.inet_aton(spelling))
    except OSError:
        expected = None
    assert literal_address(spelling) == expected


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("0.1.2.3", "unspecified"), ("10.255.255.255", "private"),
        ("100.127.255.254", "carrier-grade NAT"), ("127.255.0.1", "loopback"),
        ("169.254.0.1", "link-local"), ("172.31.255.255", "private"), ("192.0.0.9", "reserved"),
        ("192.88.99.1", "reserved"), ("192.168.0.1", "private"), ("198.19.255.255", "reserved"),
        ("198.51.100.7", "documentation"), ("203.0.113.9", "documentation"),
        ("239.255.255.250", "multicast"), ("::", "unspecified"), ("::1", "loopback"),
        ("::ffff:0:10.0.0.1", "IPv4-translated"), ("64:ff9b:1::1", "local-use NAT64"),
        ("100::ffff", "discard-only"), ("2001:1::1", "reserved"), ("3fff::1", "documentation"),
        ("fc00::1", "unique local"), ("febf::1", "link-local"), ("ff05::2", "multicast"),
        ("5f00::1", "not global unicast"), ("4000::1", "not global unicast"),
    ],
)  # fmt: skip
def test_each_documented_range_is_refused(address: str, kind: str) -> None:
    refused = refusal(ip_address(address))
    assert refused is not None
    assert refused.startswith(kind)


@pytest.mark.parametrize(
    "address",
    ["93.184.215.14", "8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "172.32.0.1",
     "192.169.0.1", "223.255.255.255", "2606:4700::1111", "2a00:1450:4001::200e",
     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)  # fmt: skip
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ip_address(address)) is None


def _without_zone(address: Address) -> Address:
    return IPv6Address(int(address)) if isinstance(address, IPv6Address) else address


# -- at request time -----------------------------------------------------------------------------


async def send_later(stack: Stack, callback_url: str) -> tuple[int, Any, str]:
    body = {"message": "hi", "user_ids": [1], "callback_url": callback_url, "send_at": LATER}
    async with (
        aiohttp.ClientSession() as session,
        session.post(stack.http_url + "/v1/broadcasts", json=body, headers=stack.auth) as r,
    ):
        return r.status, await r.json(content_type=None), r.content_type


async def test_internal_callback_urls_are_refused_over_rest_and_grpc(
    tmp_path: Path, simulator: Simulator
) -> None:
    async with (
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, SSRF_ENV) as stack,
        stack.stub() as stub,
    ):
        for name, (url, address) in INTERNAL_URLS.items():
            status, problem, content_type = await send_later(stack, url)
            assert (status, content_type) == (400, "application/problem+json"), name
            [error] = problem["errors"]
            assert error["field"] == "callback_url", name
            assert error["message"].startswith(
                f"must not reach an internal network: {address} is "
            ), name
            assert "TGB_WEBHOOK_ALLOW_PRIVATE_NETWORKS" in error["message"]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.SendMessage(
                    pb.SendMessageRequest(message="hi", user_ids=[1], callback_url=url),
                    metadata=stack.metadata,
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            details = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
            assert details is not None
            bad_request = error_details_pb2.BadRequest()
            assert details.details[0].Unpack(bad_request)
            [violation] = bad_request.field_violations
            assert (violation.field, violation.description) == ("callback_url", error["message"])
        for url in PUBLIC_URLS:
            status, accepted, _ = await send_later(stack, url)
            assert status == 202, (url, accepted)
            assert accepted["status"] == "scheduled"
    assert simulator.calls == ()


async def test_allow_private_networks_accepts_internal_callback_urls(
    tmp_path: Path, simulator: Simulator
) -> None:
    async with (
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, WEBHOOK_ENV) as stack,
    ):
        assert stack.settings.webhook.allow_private_networks
        for name, (url, _) in INTERNAL_URLS.items():
            status, accepted, _ = await send_later(stack, url)
            assert status == 202, (name, accepted)


# -- at delivery time ----------------------------------------------------------------------------


async def attempts(engine: AsyncEngine, broadcast_id: int) -> int | None:
    statement = select(broadcasts.c.callback_attempts).where(broadcasts.c.id == broadcast_id)
    async with engine.connect() as connection:
        made: int | None = await connection.scalar(statement)
    return made


def failures(caplog: pytest.LogCaptureFixture) -> dict[int, logging.LogRecord]:
    """The "webhook failed" WARNINGs, by broadcast id."""
    return {
        record.__dict__["broadcast_id"]: record
        for record in caplog.records
        if record.getMessage() == "webhook failed" and record.levelno == logging.WARNING
    }


async def test_a_name_resolving_to_loopback_is_refused_at_delivery(
    tmp_path: Path, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tgbroadcast.core.background.webhooks")
    async with (
        receiver([]) as hook,
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, SSRF_ENV) as stack,
        database(stack.settings.database.url) as engine,
    ):
        url = hook.url.replace("127.0.0.1", "localhost")  # same receiver, by name
        status, accepted = await send(
            stack, {"message": "hi", "user_ids": [1], "callback_url": url}
        )
        assert status == 202, accepted  # a name is not resolved at request time
        broadcast_id = accepted["broadcast_id"]
        await eventually(settled(engine, broadcast_id))
        assert await webhook_state(engine, broadcast_id) == "failed"
        assert await attempts(engine, broadcast_id) == 1  # permanent: not retried
    assert hook.received == []
    record = failures(caplog)[broadcast_id]
    port = url.split(":")[2].split("/")[0]
    assert record.__dict__["url"] == f"http://localhost:{port}"  # redacted
    assert record.__dict__["reason"].startswith("destination refused: localhost resolves to ")
    assert "which is loopback" in record.__dict__["reason"]
    assert "receiver-private" not in caplog.text


DELIVERY_SPELLINGS = (
    "127.0.0.1",
    "0x7f.0.0.1",
    "0x7f000001",
    "2130706433",
    "127.1",
    "[::ffff:127.0.0.1]",
    "[::1]",
    "localhost",
)


@asynccontextmanager
async def notifier_store(
    tmp_path: Path, *, allow_private: bool, resolver: AbstractResolver | None = None
) -> AsyncIterator[tuple[Store, AsyncEngine, WebhookNotifier]]:
    settings = WebhookSettings(
        secret=SECRET,
        max_attempts=3,
        backoff_base=0.01,
        backoff_cap=0.05,
        poll_interval=0.05,
        allow_private_networks=allow_private,
    )
    url = f"sqlite+aiosqlite:///{tmp_path / 'hooks.db'}"
    async with Store.open(url) as store, database(url) as engine:
        await store.migrate()
        async with WebhookNotifier(store=store, settings=settings, resolver=resolver) as notifier:
            yield store, engine, notifier


async def test_stored_internal_urls_are_refused_at_delivery_in_every_spelling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """URLs stored before the rule (or with the setting on then) are checked again when
    delivered; nothing reaches the receiver listening on the address they spell."""
    caplog.set_level(logging.INFO, logger="tgbroadcast.core.background.webhooks")
    async with receiver([]) as hook, notifier_store(tmp_path, allow_private=False) as opened:
        store, engine, notifier = opened
        ids = {}
        for host in DELIVERY_SPELLINGS:
            ids[host] = await finished(store, hook.url.replace("127.0.0.1", host))
        notifier.wake()
        for broadcast_id in ids.values():
            await eventually(settled(engine, broadcast_id))
            assert await webhook_state(engine, broadcast_id) == "failed"
            assert await attempts(engine, broadcast_id) == 1
    assert hook.received == []
    logged = failures(caplog)
    for host, broadcast_id in ids.items():
        assert logged[broadcast_id].__dict__["reason"].startswith("destination refused: "), host


@dataclass
class Redirector:
    url: str = ""
    seen: int = 0


@asynccontextmanager
async def redirecting_to(location: str) -> AsyncIterator[Redirector]:
    """A receiver that answers every POST with 307 to ``location``."""
    state = Redirector()

    async def handle(request: web.Request) -> web.Response:
        state.seen += 1
        return web.Response(status=307, headers={"Location": location})

    app = web.Application()
    app.router.add_post("/hooks/tgb", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/tgb"
        yield state
    finally:
        await runner.cleanup()


async def test_a_redirect_is_not_followed_and_fails_the_webhook(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tgbroadcast.core.background.webhooks")
    async with (
        receiver([]) as target,
        redirecting_to(target.url) as first,
        notifier_store(tmp_path, allow_private=True) as (store, engine, notifier),
    ):
        broadcast_id = await finished(store, first.url)
        notifier.wake()
        await eventually(settled(engine, broadcast_id))
        assert await webhook_state(engine, broadcast_id) == "failed"
        assert await attempts(engine, broadcast_id) == 1
    assert (first.seen, target.received) == (1, [])
    reason = failures(caplog)[broadcast_id].__dict__["reason"]
    assert reason == "HTTP 307 (redirects are not followed)"


# -- the connection goes to the checked address --------------------------------------------------


@dataclass
class FakeResolver(AbstractResolver):
    """Answers from a table, one answer per call in turn (the last one repeated): a name
    that answers differently each time, as a rebinding attacker's DNS does."""

    answers: Mapping[str, list[list[str]]]
    calls: list[str] = field(default_factory=list)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        turns = self.answers[host]
        answer = turns[min(self.calls.count(host), len(turns) - 1)]
        self.calls.append(host)
        return [_result(host, address, port) for address in answer]

    async def close(self) -> None:
        pass


def _result(host: str, address: str, port: int) -> ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return {
        "hostname": host,
        "host": address,
        "port": port,
        "family": family,
        "proto": 0,
        "flags": 0,
    }


def only(*allowed: str) -> Refusal:
    """A policy allowing just ``allowed`` (so a test can tell two loopback addresses apart)."""

    def check(address: Address) -> str | None:
        return None if str(address) in allowed else "not allowed by the test"

    return check


@asynccontextmanager
async def checked_session(resolver: CheckedResolver) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def test_each_connection_goes_to_the_address_that_was_checked() -> None:
    async with receiver([]) as hook:
        port = hook.url.split(":")[2].split("/")[0]
        fake = FakeResolver({"hook.test": [["127.0.0.1"], ["127.0.0.2"]]})
        resolver = CheckedResolver(refusal=only("127.0.0.1"), resolver=fake)
        url = f"http://hook.test:{port}/hooks/tgb"
        async with checked_session(resolver) as session:
            async with session.post(url, data=b"{}") as response:
                assert response.status == 200
            assert fake.calls == ["hook.test"]  # resolved once, for the one connection
            with pytest.raises(RefusedDestination, match=r"hook.test resolves to 127\.0\.0\.2"):
                await session.post(url, data=b"{}")  # the next answer is checked too
    assert len(hook.received) == 1
    assert hook.received[0][1]["Host"] == f"hook.test:{port}"


async def test_one_internal_answer_refuses_the_whole_name() -> None:
    fake = FakeResolver({"mixed.test": [["93.184.215.14", "127.0.0.1"]]})
    resolver = CheckedResolver(refusal=refusal, resolver=fake)
    with pytest.raises(RefusedDestination, match=r"mixed\.test resolves to 127\.0\.0\.1, which is"):
        await resolver.resolve("mixed.test", 80)
    spelled = CheckedResolver(refusal=refusal, resolver=FakeResolver({}))
    with pytest.raises(RefusedDestination, match=r"0x7f\.1 spells 127\.0\.0\.1, which is loop"):
        await spelled.resolve("0x7f.1", 80)  # never asked of the resolver


async def test_the_notifier_connects_where_its_resolver_pointed(tmp_path: Path) -> None:
    """A name only the injected resolver knows reaches the receiver (with the setting on),
    and is refused without it."""
    async with receiver([]) as hook:
        url = hook.url.replace("127.0.0.1", "hook.test")
        answers = {"hook.test": [["127.0.0.1"]]}
        async with notifier_store(
            tmp_path / "a", allow_private=False, resolver=FakeResolver(answers)
        ) as (store, engine, notifier):
            refused = await finished(store, url)
            notifier.wake()
            await eventually(settled(engine, refused))
            assert await webhook_state(engine, refused) == "failed"
        assert hook.received == []
        async with notifier_store(
            tmp_path / "b", allow_private=True, resolver=FakeResolver(answers)
        ) as (store, engine, notifier):
            delivered = await finished(store, url)
            notifier.wake()
            await eventually(settled(engine, delivered))
            assert await webhook_state(engine, delivered) == "delivered"
    assert len(hook.received) == 1
    assert hook.received[0][1]["Host"].startswith("hook.test:")


async def test_https_keeps_the_name_for_sni_and_certificate_checks() -> None:
    """Connecting to the checked address does not lose the name: TLS is verified against
    the URL's host."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hook.test").configure_cert(server_context)
    names: list[str | None] = []
    server_context.sni_callback = lambda _socket, name, _context: names.append(name)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=request.host)

    app = web.Application()
    app.router.add_post("/h", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context).start()
        port = runner.addresses[0][1]
        fake = FakeResolver({"hook.test": [["127.0.0.1"]]})
        resolver = CheckedResolver(refusal=only("127.0.0.1"), resolver=fake)
        async with (
            checked_session(resolver) as session,
            session.post(f"https://hook.test:{port}/h", ssl=client_context) as response,
        ):
            assert (response.status, await response.text()) == (200, f"hook.test:{port}")
    finally:
        await runner.cleanup()
    assert names == ["hook.test"]
