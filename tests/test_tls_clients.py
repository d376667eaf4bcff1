"""The Python clients (async and blocking) and ``tgbroadcast send`` over TLS and mutual TLS,
against the whole service serving certificates ``trustme`` made."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypedDict

import pytest

from tests.fixtures.processes import run_send
from tests.fixtures.stack import API_TOKEN, Stack, open_backend, start_stack
from tests.fixtures.tls import Pki
from tgbroadcast.simulator import Simulator
from tgbroadcast_client import BroadcastClient, Client, Unavailable
from tgbroadcast_client import cli as send_cli


@pytest.fixture(params=[False, True], ids=["tls", "mtls"])
async def tls_stack(
    request: pytest.FixtureRequest, simulator: Simulator, tmp_path: Path, pki: Pki
) -> AsyncIterator[Stack]:
    overrides = pki.tls_overrides(mutual=request.param)
    async with (
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, overrides) as stack,
    ):
        yield stack


class TlsFiles(TypedDict, total=False):
    ca_file: Path
    cert_file: Path
    key_file: Path


def client_files(stack: Stack, pki: Pki) -> TlsFiles:
    """What a client passes: the CA, and its certificate when the server asks for one."""
    files = TlsFiles(ca_file=pki.ca_file)
    if stack.settings.server.tls_client_ca_file is not None:
        files["cert_file"] = pki.client.cert_file
        files["key_file"] = pki.client.key_file
    return files


async def test_the_async_client_speaks_tls(tls_stack: Stack, pki: Pki) -> None:
    files = client_files(tls_stack, pki)
    async with BroadcastClient(tls_stack.grpc_target, API_TOKEN, **files) as client:
        sent = await client.send("over TLS", user_ids=[21])
        assert (await client.get(sent.broadcast_id)).broadcast_id == sent.broadcast_id
    # Without the CA (the system's roots) the server's certificate is not trusted.
    async with BroadcastClient(tls_stack.grpc_target, API_TOKEN, secure=True) as client:
        with pytest.raises(Unavailable):
            await client.get(sent.broadcast_id)
    if "cert_file" in files:
        async with BroadcastClient(tls_stack.grpc_target, API_TOKEN, ca_file=pki.ca_file) as client:
            with pytest.raises(Unavailable):
                await client.get(sent.broadcast_id)


async def test_the_blocking_client_speaks_tls(tls_stack: Stack, pki: Pki) -> None:
    files = client_files(tls_stack, pki)

    def run() -> tuple[int, int]:
        with Client(tls_stack.grpc_target, API_TOKEN, **files) as client:
            sent = client.send("over TLS", user_ids=[22])
            return sent.broadcast_id, client.get(sent.broadcast_id).broadcast_id

    sent_id, got_id = await asyncio.to_thread(run)
    assert sent_id == got_id > 0


def test_the_clients_want_a_certificate_with_its_key(pki: Pki) -> None:
    for make in (BroadcastClient, Client):
        with pytest.raises(ValueError, match="cert_file and key_file go together"):
            make("127.0.0.1:1", API_TOKEN, cert_file=pki.client.cert_file)
        with pytest.raises(FileNotFoundError):
            make("127.0.0.1:1", API_TOKEN, ca_file=pki.folder / "missing.pem")


async def test_the_cli_speaks_tls_from_flags_and_from_the_environment(
    tls_stack: Stack, pki: Pki
) -> None:
    files = client_files(tls_stack, pki)
    flags = [f"--{name.replace('_', '-')}={path}" for name, path in files.items()]
    common = ["--target", tls_stack.grpc_target, "--message", "hi", "--user-id", "23"]
    code, out, err = await run_send(*common, *flags, environ={"TGBROADCAST_TOKEN": API_TOKEN})
    assert code == 0, err
    assert out.startswith("broadcast ")

    variables = {f"TGBROADCAST_{name.upper()}": str(path) for name, path in files.items()}
    code, out, err = await run_send(
        *common, "--watch", environ={"TGBROADCAST_TOKEN": API_TOKEN, **variables}
    )
    assert code == 0, err
    assert "completed" in out.lower()

    # Plaintext to a TLS port: the call fails, exit 1, and the token is never shown.
    code, out, err = await run_send(*common, environ={"TGBROADCAST_TOKEN": API_TOKEN})
    assert code == 1
    assert "UNAVAILABLE" in err
    assert API_TOKEN not in out + err


async def test_the_cli_refuses_a_certificate_without_its_key(pki: Pki) -> None:
    err = io.StringIO()
    code = send_cli.main(
        ["--user-id", "1", "--token", API_TOKEN, "--cert-file", str(pki.client.cert_file)],
        environ={},
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == send_cli.EXIT_USAGE
    assert "cert_file and key_file go together" in err.getvalue()
