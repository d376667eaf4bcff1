"""TLS and mutual TLS on both listeners, and certificates renewed without a restart.

Real sockets: the whole service in-process with ``TGB_SERVER_TLS_*`` pointing at PEM files
``trustme`` made (:mod:`tests.fixtures.tls`). A renewal is observed as the event it is: new
handshakes until the listener presents the new certificate, within a generous deadline.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import grpc
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from tests.fixtures.stack import API_TOKEN, Stack, open_backend, start_stack
from tests.fixtures.tls import (
    SERVER_NAMES,
    Identity,
    Pki,
    certificate_der,
    peer_certificate,
    until_served,
)
from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.server.tls import ServerCertificates
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
METADATA = (("authorization", f"Bearer {API_TOKEN}"),)
REFUSED_RPC = (grpc.StatusCode.UNAVAILABLE,)


@asynccontextmanager
async def tls_stack(
    simulator: Simulator, tmp_path: Path, pki: Pki, *, mutual: bool = False
) -> AsyncIterator[Stack]:
    async with (
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, pki.tls_overrides(mutual=mutual)) as stack,
    ):
        yield stack


def ports(stack: Stack) -> tuple[int, int]:
    assert stack.running.api is not None
    return stack.running.api.http_port, stack.running.api.grpc_port


def https_url(stack: Stack) -> str:
    return f"https://127.0.0.1:{ports(stack)[0]}"


async def send_https(stack: Stack, pki: Pki, identity: Identity | None = None) -> int:
    """``POST /send-message`` over HTTPS; the new broadcast's id."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            https_url(stack) + "/send-message",
            json={"message": "over TLS", "user_ids": [11]},
            headers=AUTH,
            ssl=pki.client_context(identity),
        ) as response,
    ):
        assert response.status == 202, await response.text()
        return int((await response.json())["broadcast_id"])


async def get_grpc(
    stack: Stack, credentials: grpc.ChannelCredentials | None, broadcast_id: int
) -> pb.Broadcast:
    """``GetBroadcast`` over a channel with ``credentials`` (``None``: plaintext)."""
    channel = (
        grpc.aio.insecure_channel(stack.grpc_target)
        if credentials is None
        else grpc.aio.secure_channel(stack.grpc_target, credentials)
    )
    async with channel:
        stub = pb_grpc.BroadcastServiceStub(channel)
        answer = await stub.GetBroadcast(
            pb.GetBroadcastRequest(broadcast_id=broadcast_id), metadata=METADATA, timeout=30
        )
    return answer.broadcast


async def assert_https_refused(
    stack: Stack, ssl_arg: ssl.SSLContext | bool, scheme: str = "https"
) -> None:
    url = f"{scheme}://127.0.0.1:{ports(stack)[0]}/v1/broadcasts/1"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(url, headers=AUTH, ssl=ssl_arg) as response:
                await response.read()


async def assert_grpc_refused(stack: Stack, credentials: grpc.ChannelCredentials | None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await get_grpc(stack, credentials, 1)
    assert refused.value.code() in REFUSED_RPC, refused.value


async def test_tls_serves_https_and_grpc_over_tls_only(
    simulator: Simulator, tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tgbroadcast.launcher.api")
    async with tls_stack(simulator, tmp_path, pki) as stack:
        listening = next(r for r in caplog.records if r.getMessage() == "API listening")
        assert (getattr(listening, "tls", None), getattr(listening, "mtls", None)) == (True, False)

        broadcast_id = await send_https(stack, pki)
        got = await get_grpc(stack, pki.grpc_credentials(), broadcast_id)
        assert got.broadcast_id == broadcast_id

        # The same ports speak nothing else: plain HTTP and a plaintext channel fail.
        await assert_https_refused(stack, True, scheme="http")
        await assert_grpc_refused(stack, None)
        # Nor is a certificate from another CA trusted by a careful client.
        await assert_https_refused(stack, True)


async def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(
    simulator: Simulator, tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tgbroadcast.launcher.api")
    async with tls_stack(simulator, tmp_path, pki, mutual=True) as stack:
        listening = next(r for r in caplog.records if r.getMessage() == "API listening")
        assert (getattr(listening, "tls", None), getattr(listening, "mtls", None)) == (True, True)

        for identity in (None, pki.stranger):
            await assert_https_refused(stack, pki.client_context(identity))
            await assert_grpc_refused(stack, pki.grpc_credentials(identity))

        broadcast_id = await send_https(stack, pki, pki.client)
        got = await get_grpc(stack, pki.grpc_credentials(pki.client), broadcast_id)
        assert got.broadcast_id == broadcast_id


async def test_a_renewed_certificate_is_served_without_a_restart(
    simulator: Simulator, tmp_path: Path, pki: Pki
) -> None:
    async with tls_stack(simulator, tmp_path, pki, mutual=True) as stack:
        http_port, grpc_port = ports(stack)
        first = await peer_certificate(http_port)
        assert await peer_certificate(grpc_port, alpn="h2") == first

        renewed = pki.other_ca.issue_cert(*SERVER_NAMES)
        pki.server.replace_with(renewed)
        await until_served(http_port, certificate_der(renewed), alpn="http/1.1")
        await until_served(grpc_port, certificate_der(renewed), alpn="h2")

        # Client certificates are still required and checked after the swap.
        await assert_https_refused(stack, pki.client_context(None))
        await assert_grpc_refused(stack, pki.grpc_credentials(pki.stranger))
        broadcast_id = await send_https(stack, pki, pki.client)
        got = await get_grpc(stack, pki.grpc_credentials(pki.client), broadcast_id)
        assert got.broadcast_id == broadcast_id


async def test_a_half_written_renewal_keeps_the_old_certificate(
    simulator: Simulator, tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tgbroadcast.server.tls")
    async with tls_stack(simulator, tmp_path, pki) as stack:
        http_port, grpc_port = ports(stack)
        old = await peer_certificate(http_port)
        renewed = pki.ca.issue_cert(*SERVER_NAMES)
        # The certificate is replaced, its key not yet: it does not load, the old one serves.
        pki.server.cert_file.write_bytes(renewed.cert_chain_pems[0].bytes())
        async with asyncio.timeout(60):  # the server looks again within a second
            while not any("do not load" in r.getMessage() for r in caplog.records):
                assert await peer_certificate(http_port) == old
                assert await peer_certificate(grpc_port, alpn="h2") == old
        warning = next(r for r in caplog.records if "do not load" in r.getMessage())
        assert warning.levelno == logging.WARNING
        assert "KEY_VALUES_MISMATCH" in str(getattr(warning, "reason", ""))
        await send_https(stack, pki)

        # The key arrives: the renewal completes on both listeners.
        pki.server.key_file.write_bytes(renewed.private_key_pem.bytes())
        await until_served(http_port, certificate_der(renewed), alpn="http/1.1")
        await until_served(grpc_port, certificate_der(renewed), alpn="h2")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_files_are_looked_at_no_more_than_once_per_interval(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    certificates = ServerCertificates(
        pki.server.cert_file, pki.server.key_file, pki.ca_file, check_interval=1.0, clock=clock
    )
    assert certificates.mutual
    first = certificates.current()
    assert first.cert_chain == pki.server.cert_file.read_bytes()
    assert first.client_ca == pki.ca_file.read_bytes()

    renewed = pki.ca.issue_cert(*SERVER_NAMES)
    pki.server.replace_with(renewed)
    clock.now = 0.5
    assert certificates.current() is first  # not looked at yet
    clock.now = 1.5
    second = certificates.current()
    assert second.cert_chain == pki.server.cert_file.read_bytes() != first.cert_chain
    assert second.context is not first.context
    clock.now = 3.0
    assert certificates.current() is second  # unchanged files: nothing re-read

    # A key from elsewhere: refused with a WARNING, the last good set kept.
    pki.server.key_file.write_bytes(pki.other_ca.issue_cert("x").private_key_pem.bytes())
    clock.now = 4.5
    with caplog.at_level(logging.WARNING, logger="tgbroadcast.server.tls"):
        assert certificates.current() is second
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert b"PRIVATE KEY" not in caplog.text.encode()


def test_files_that_do_not_load_at_start_are_a_config_error(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="KEY_VALUES_MISMATCH"):
        ServerCertificates(pki.server.cert_file, pki.client.key_file)
    with pytest.raises(ConfigError, match="No such file"):
        ServerCertificates(pki.folder / "missing.crt", pki.server.key_file)
    # A client CA that is no certificate is named as such (it was named tls_cert_file).
    not_a_ca = pki.folder / "not-a-ca.pem"
    not_a_ca.write_text("-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError) as raised:
        ServerCertificates(pki.server.cert_file, pki.server.key_file, not_a_ca)
    assert raised.value.key == "server.tls_client_ca_file"
    assert "None" not in str(raised.value)


def encrypted_key(leaf: trustme.LeafCert) -> bytes:
    """``leaf``'s private key as PEM, encrypted with a passphrase."""
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


def test_an_encrypted_key_is_refused_never_prompted_for(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenSSL would ask for the passphrase on the terminal: at start a ConfigError naming the
    key file, on renewal a WARNING and the last good set kept; never a prompt."""
    clock = FakeClock()
    certificates = ServerCertificates(
        pki.server.cert_file, pki.server.key_file, check_interval=1.0, clock=clock
    )
    first = certificates.current()
    renewed = pki.ca.issue_cert(*SERVER_NAMES)
    pki.server.replace_with(renewed)
    pki.server.key_file.write_bytes(encrypted_key(renewed))
    clock.now = 1.5
    with caplog.at_level(logging.WARNING, logger="tgbroadcast.server.tls"):
        assert certificates.current() is first
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "is encrypted" in caplog.records[0].reason  # type: ignore[attr-defined]

    with pytest.raises(ConfigError, match=r"server\.tls_key_file") as refused:
        ServerCertificates(pki.server.cert_file, pki.server.key_file)
    assert str(pki.server.key_file) in str(refused.value)
    assert "encrypted" in str(refused.value)
