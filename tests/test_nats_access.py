"""NATS credentials and TLS as settings (``nats.creds_file``, ``nats.user``/``nats.password``,
``nats.tls_ca_file``, ``nats.tls_cert_file``/``nats.tls_key_file``), each against a real
nats-server that demands them."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import nkeys
import pytest

from tests.fixtures.nats import new_prefix
from tests.fixtures.nats_secured import jwt_setup, new_nkey, secured_nats
from tests.fixtures.stack import Backend, start_stack
from tests.fixtures.tls import Pki
from tests.fixtures.watching import assert_watch_complete, watch
from tgbroadcast.core.config import load_settings
from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.core.queue import Job, NatsAccess, Queue
from tgbroadcast.core.queue.connection import Repeats
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

PASSWORD = "nats-pass-5f2d9c1e"


async def _round_trip(url: str, access: NatsAccess) -> None:
    """A job published and fetched back over a connection made with ``access``."""
    async with Queue.connect(url, prefix=new_prefix(), access=access) as queue:
        await queue.publish_jobs([Job(broadcast_id=1, user_ids=(7,))])
        [received] = await queue.fetch_jobs(max_jobs=1, timeout=5)
        assert received.job.user_ids == (7,)
        await received.ack()


async def _refused(url: str, access: NatsAccess, caplog: pytest.LogCaptureFixture) -> str:
    """Connecting with ``access`` is refused: the service keeps retrying (a credential may be
    renewed) and logs why each time; returns what it logged."""
    with caplog.at_level(logging.WARNING), pytest.raises(TimeoutError):
        async with asyncio.timeout(3), Queue.connect(url, prefix=new_prefix(), access=access):
            pass
    return caplog.text


async def test_user_and_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = f'authorization {{ user: svc, password: "{PASSWORD}" }}\n'
    async with secured_nats(tmp_path / "nats", config) as url:
        await _round_trip(url, NatsAccess(user="svc", password=PASSWORD))
        logged = await _refused(url, NatsAccess(user="svc", password="wrong-one"), caplog)
        assert "Authorization Violation" in logged
        assert "wrong-one" not in logged
        assert PASSWORD not in logged


async def test_nkey_seed_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    user, stranger = new_nkey(nkeys.PREFIX_BYTE_USER), new_nkey(nkeys.PREFIX_BYTE_USER)
    seed_file, stranger_file = tmp_path / "user.nk", tmp_path / "stranger.nk"
    seed_file.write_bytes(user.seed + b"\n")
    stranger_file.write_bytes(stranger.seed + b"\n")
    config = f"authorization {{ users: [ {{ nkey: {user.public} }} ] }}\n"
    async with secured_nats(tmp_path / "nats", config) as url:
        await _round_trip(url, NatsAccess(creds_file=seed_file))
        logged = await _refused(url, NatsAccess(creds_file=stranger_file), caplog)
        assert "Authorization Violation" in logged
        assert stranger.seed.decode() not in logged


async def test_jwt_creds_file_of_an_operator_mode_server(tmp_path: Path) -> None:
    setup = jwt_setup(tmp_path)
    creds = tmp_path / "tgbroadcast.creds"
    creds.write_text(setup.creds, encoding="utf-8")
    async with secured_nats(tmp_path / "nats", setup.server_config) as url:
        await _round_trip(url, NatsAccess(creds_file=creds))


async def test_tls_with_a_client_certificate(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    config = (
        f'tls {{ cert_file: "{pki.server.cert_file}", key_file: "{pki.server.key_file}", '
        f'ca_file: "{pki.ca_file}", verify: true }}\n'
    )
    async with secured_nats(tmp_path / "nats", config, scheme="tls") as url:
        mutual = NatsAccess(
            tls_ca_file=pki.ca_file,
            tls_cert_file=pki.client.cert_file,
            tls_key_file=pki.client.key_file,
        )
        await _round_trip(url, mutual)
        # A certificate of another CA is refused by the server...
        stranger = NatsAccess(
            tls_ca_file=pki.ca_file,
            tls_cert_file=pki.stranger.cert_file,
            tls_key_file=pki.stranger.key_file,
        )
        await _refused(url, stranger, caplog)
        # ... and a server the CA did not sign is refused by the service.
        caplog.clear()
        logged = await _refused(url, NatsAccess(tls_ca_file=pki.other_ca_file), caplog)
        assert "CERTIFICATE_VERIFY_FAILED" in logged


async def test_the_service_sends_through_a_nats_that_demands_tls_and_a_password(
    tmp_path: Path, pki: Pki, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The settings, from the environment, all the way: a broadcast sent and watched."""
    config = (
        f'tls {{ cert_file: "{pki.server.cert_file}", key_file: "{pki.server.key_file}" }}\n'
        f'authorization {{ user: svc, password: "{PASSWORD}" }}\n'
    )
    async with secured_nats(tmp_path / "nats", config, scheme="tls") as url:
        backend = Backend(
            environ={
                "TGB_DATA_DIR": str(tmp_path / "data"),
                "TGB_DATABASE_DSN": "",
                "TGB_NATS_URL": url,
                "TGB_NATS_USER": "svc",
                "TGB_NATS_PASSWORD": PASSWORD,
                "TGB_NATS_TLS_CA_FILE": str(pki.ca_file),
            },
            prefix=new_prefix(),
            data_dir=tmp_path / "data",
        )
        with caplog.at_level(logging.DEBUG):
            async with start_stack(backend, simulator) as stack, stack.stub() as stub:
                response = await stub.SendMessage(
                    pb.SendMessageRequest(message="hi", user_ids=[1, 2, 3]),
                    metadata=stack.metadata,
                )
                assert_watch_complete(await watch(stack, response.broadcast_id), {1, 2, 3})
    assert PASSWORD not in caplog.text


def test_unreadable_tls_and_creds_files_name_their_key(tmp_path: Path) -> None:
    """A file that is there but is not what it should be: a configuration error (exit 2)
    naming the key, before any connection — not a traceback."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for access, key in (
        (NatsAccess(tls_ca_file=junk), "nats.tls_ca_file"),
        (NatsAccess(tls_cert_file=junk, tls_key_file=junk), "nats.tls_cert_file"),
        (NatsAccess(creds_file=tmp_path), "nats.creds_file"),  # a folder
    ):
        with pytest.raises(ConfigError) as raised:
            access.connect_options()
        assert raised.value.key == key
        assert "not a certificate" not in str(raised.value)


def test_a_repeated_nats_error_is_written_once_a_minute_with_its_count() -> None:
    """nats-py reports each reconnect attempt, one a second while NATS is down."""
    repeats = Repeats()
    refused, other = "ConnectionRefusedError(111)", "TimeoutError()"
    written = [repeats.seen(refused, float(second)) for second in range(125)]
    assert [(t, n) for t, n in enumerate(written) if n is not None] == [(0, 0), (60, 59), (120, 59)]
    assert repeats.seen(other, 125.0) == 0  # another error is written at once


def test_settings_are_checked(tmp_path: Path) -> None:
    def load(**environ: str) -> None:
        load_settings(None, environ=environ, base_dir=tmp_path)

    with pytest.raises(ConfigError, match=r"nats\.password"):
        load(TGB_NATS_PASSWORD="x")
    (tmp_path / "cert.pem").write_text("x")
    with pytest.raises(ConfigError, match=r"nats\.tls_key_file"):
        load(TGB_NATS_TLS_CERT_FILE=str(tmp_path / "cert.pem"))
    with pytest.raises(ConfigError, match=r"nats\.creds_file.*does not exist"):
        load(TGB_NATS_CREDS_FILE=str(tmp_path / "absent.creds"))
    with pytest.raises(ConfigError, match=r"nats\.replicas.*cluster"):
        load(TGB_NATS_REPLICAS="3")
    with pytest.raises(ConfigError, match=r"nats\.replicas"):
        load(TGB_NATS_REPLICAS="6", TGB_NATS_URL="nats://a:4222")
    environ = {
        "TGB_NATS_REPLICAS": "3",
        "TGB_NATS_URL": "nats://a:4222,nats://b:4222",
        "TGB_NATS_USER": "svc",
        "TGB_NATS_PASSWORD": PASSWORD,
    }
    settings = load_settings(None, environ=environ, base_dir=tmp_path)
    assert (settings.nats.replicas, settings.nats.user) == (3, "svc")
    assert PASSWORD not in repr(settings)
