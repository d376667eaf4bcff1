"""The embedded nats-server: start, readiness, url file, stop, failures, persistence."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import nats
import pytest

from tests.fixtures.nats import delete_streams, fetched, new_prefix
from tests.fixtures.services import free_port, listening
from tgbroadcast.core.queue import Job, Queue
from tgbroadcast.launcher import natsserver
from tgbroadcast.launcher.natsserver import EmbeddedNatsServer, NatsServerError


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    return host, int(port)


def _process_gone(pid: int) -> bool:
    """True when no process (not even a zombie) has this pid any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_starts_with_jetstream_and_stops_without_leftovers(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    url_file = tmp_path / "run" / "nats.url"
    server = EmbeddedNatsServer(store_dir=store, url_file=url_file)
    async with server:
        url = server.url
        pid = server.pid
        assert pid is not None
        assert url.startswith("nats://127.0.0.1:")
        assert url_file.read_text().strip() == url
        assert store.is_dir()
        nc = await nats.connect(url, allow_reconnect=False)
        try:
            info = await nc.jetstream().account_info()
            assert info.streams == 0
        finally:
            await nc.close()
        assert (store / "jetstream").is_dir()
        assert "Server is ready" in (store / "nats-server.log").read_text()
    assert not url_file.exists()
    assert _process_gone(pid)
    assert not listening(_host_port(url))
    captured = capfd.readouterr()
    assert "nats-server" not in captured.out + captured.err  # its log went to the file
    with pytest.raises(RuntimeError):
        _ = server.url
    # A clean stop leaves its URL for the next run, which listens there again when it is free
    # (workers beside it reconnect by themselves); a port taken since: another one.
    last = url_file.with_name(url_file.name + ".last")
    assert last.read_text().strip() == url
    port = free_port()  # (this test process's own: nothing else takes it meanwhile)
    last.write_text(f"nats://127.0.0.1:{port}\n")
    async with EmbeddedNatsServer(store_dir=store, url_file=url_file) as again:
        assert again.url == f"nats://127.0.0.1:{port}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        async with EmbeddedNatsServer(store_dir=store, url_file=url_file) as elsewhere:
            assert elsewhere.url != f"nats://127.0.0.1:{port}"


async def test_a_last_port_taken_after_it_was_found_free_gives_way_to_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the check and nats-server's own bind another process may take it: the start
    goes on on another port rather than failing."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(natsserver, "_previous_port", lambda url_file, host: port)
        server = EmbeddedNatsServer(store_dir=tmp_path / "store", url_file=tmp_path / "url")
        async with server:
            assert server.url.startswith("nats://127.0.0.1:")
            assert server.url != f"nats://127.0.0.1:{port}"


async def test_port_taken_raises_with_log_tail(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = EmbeddedNatsServer(store_dir=tmp_path / "store", port=port)
        with pytest.raises(NatsServerError) as caught:
            async with server:
                pytest.fail("started on a taken port")
    message = str(caught.value)
    assert "exited with code" in message
    assert "address already in use" in message
    assert server.pid is not None
    assert _process_gone(server.pid)


async def test_second_server_on_the_same_store_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with EmbeddedNatsServer(store_dir=store) as first:
        second = EmbeddedNatsServer(store_dir=store)
        with pytest.raises(NatsServerError, match="is in use by another") as caught:
            async with second:
                pytest.fail("two servers on one store")
        assert f"nats-server pid {first.pid}" in str(caught.value)
        assert second.pid is None
        assert listening(_host_port(first.url))
    # Released on exit: the store can be used again.
    async with EmbeddedNatsServer(store_dir=store) as again:
        assert listening(_host_port(again.url))


async def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(store_dir=tmp_path / "store", binary=tmp_path / "no-such-binary")
    with pytest.raises(NatsServerError, match="cannot run nats-server"):
        async with server:
            pytest.fail("started without a binary")


async def test_explicit_port_is_used(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with EmbeddedNatsServer(store_dir=tmp_path / "store", port=port) as server:
        assert server.url == f"nats://127.0.0.1:{port}"
        assert listening(("127.0.0.1", port))


async def test_cancelled_task_stops_the_server(tmp_path: Path) -> None:
    started: asyncio.Future[EmbeddedNatsServer] = asyncio.get_running_loop().create_future()
    never = asyncio.Event()

    async def run() -> None:
        async with EmbeddedNatsServer(store_dir=tmp_path / "store") as server:
            started.set_result(server)
            await never.wait()

    task = asyncio.create_task(run())
    server = await started
    pid = server.pid
    assert pid is not None
    address = _host_port(server.url)
    assert listening(address)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _process_gone(pid)
    assert not listening(address)


async def test_data_persists_across_restart(tmp_path: Path) -> None:
    store = tmp_path / "store"
    prefix = new_prefix()
    job = Job(broadcast_id=7, user_ids=(1, 2, 3))
    async with (
        EmbeddedNatsServer(store_dir=store) as server,
        Queue.connect(server.url, prefix=prefix) as queue,
    ):
        await queue.publish_jobs([job])
    async with EmbeddedNatsServer(store_dir=store) as server:
        async with Queue.connect(server.url, prefix=prefix) as queue:
            received = await fetched(queue)
            assert [r.job for r in received] == [job]
            await received[0].ack()
        await delete_streams(server.url, prefix)
    assert (store / "nats-server.log.1").exists()


async def test_queue_reconnects_after_a_server_restart(tmp_path: Path) -> None:
    store = tmp_path / "store"
    prefix = new_prefix()
    before = Job(broadcast_id=8, user_ids=(1,))
    after = Job(broadcast_id=8, user_ids=(2,))
    async with EmbeddedNatsServer(store_dir=store) as server:
        url = server.url
        _, port = _host_port(url)
        async with Queue.connect(url, prefix=prefix) as queue:
            await queue.publish_jobs([before])
            await server.stop()
            assert not listening(_host_port(url))
            async with EmbeddedNatsServer(store_dir=store, port=port):
                # Same queue object: the client reconnects by itself, buffers meanwhile.
                await queue.publish_jobs([after])
                received = await fetched(queue, 2)
                assert sorted(r.job.user_ids for r in received) == [(1,), (2,)]
                for r in received:
                    await r.ack()
                await delete_streams(url, prefix)
