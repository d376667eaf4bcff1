"""The sender's gate (the rate slot) against a raw HTTP server that shows each connection: the
connection is open before the gate is asked and nothing is written before it opens, a gate's
failure is the send's, and the request's timeout runs from the gate, not from the send."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.fixtures.telegram import BOT_TOKEN
from tgbroadcast.core.domain.errors import TransientError
from tgbroadcast.core.domain.model import Content, MediaType
from tgbroadcast.simulator import Fault, Simulator
from tgbroadcast.worker.telegram import NotSent, TelegramSender

ANSWER = json.dumps(
    {
        "ok": True,
        "result": {"message_id": 7, "date": 0, "chat": {"id": 501, "type": "private"}},
    }
).encode()


@dataclass
class Server:
    """Accepts connections, reads each request (headers and a Content-Length body), answers
    a sent message."""

    connections: int = 0
    requests: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.connected.set()
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.requests += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(ANSWER)}\r\n\r\n".encode()
                    + ANSWER
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    state = Server()
    listening = await asyncio.start_server(state.serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield state, f"http://127.0.0.1:{port}"


async def test_the_connection_is_open_before_the_gate_and_nothing_is_written_before_it(
    server: tuple[Server, str],
) -> None:
    """A new connection (a TCP handshake, with TLS three round trips to Telegram) would put
    its time between the slot and the wire: the gate is asked once the server has the
    connection and nothing of the request. Refused, nothing of it reaches the server."""
    state, url = server
    seen: list[tuple[bool, int]] = []
    answers = [False, True]

    async def gate() -> bool:
        await state.connected.wait()  # never set if the gate came before the connection
        seen.append((state.connections > 0, state.requests))
        return answers.pop(0)

    async with TelegramSender(token=BOT_TOKEN, api_url=url, connections=1) as sender:
        with pytest.raises(NotSent):
            await sender.send(501, Content(message="refused at the slot"), gate=gate)
        sent = await sender.send(501, Content(message="at the slot"), gate=gate)
    assert sent.message_id == 7
    assert seen == [(True, 0), (True, 0)]  # connected, nothing written before either gate
    assert state.requests == 1


async def test_a_gate_that_fails_fails_the_send_and_leaks_no_connection(
    server: tuple[Server, str],
) -> None:
    state, url = server

    async def failing() -> bool:
        raise RuntimeError("the limiter closed")

    async with TelegramSender(token=BOT_TOKEN, api_url=url, connections=1) as sender:
        with pytest.raises(TransientError) as error:  # as any unexpected client failure
            await sender.send(501, Content(message="x"), gate=failing)
        assert "the limiter closed" in error.value.description
        # One connection allowed: a leaked one would leave this send waiting for it forever.
        assert (await sender.send(501, Content(message="y"))).message_id == 7
    assert state.requests == 1


async def test_the_timeout_runs_from_the_gate() -> None:
    """Waiting for a slot (a pause shorter than ``worker.park_after``) is not the request's
    time; once the gate opens, a hang still times out."""
    opened = asyncio.Event()

    async def late_gate() -> bool:
        await opened.wait()
        return True

    async def open_gate() -> bool:
        return True

    async with (
        Simulator() as sim,
        TelegramSender(token=BOT_TOKEN, api_url=sim.api_url, request_timeout=2.0) as client,
    ):
        sending = asyncio.create_task(client.send(501, Content(message="hi"), gate=late_gate))
        await asyncio.sleep(2.5)  # longer than request_timeout, spent waiting at the gate
        assert not sending.done()
        opened.set()
        assert (await sending).message_id == 1
        sim.faults.inject(Fault.hang(seconds=600))
        with pytest.raises(TransientError) as error:
            await client.send(502, Content(message="hangs"), gate=open_gate)
        assert "timeout" in error.value.description.lower()


async def test_an_upload_is_written_through_the_gate() -> None:
    """A multipart body (an uploaded file) opens the gate as the plain form does."""
    asked: list[int] = []

    async def gate() -> bool:
        asked.append(len(sim.calls))
        return True

    async with (
        Simulator() as sim,
        TelegramSender(token=BOT_TOKEN, api_url=sim.api_url) as client,
    ):
        content = Content(message="round", media_type=MediaType.VIDEO_NOTE, media_filename="r.mp4")
        sent = await client.send(501, content, upload=b"a round video", gate=gate)
        assert sent.file_id is not None
        assert asked == [0]
        assert [call.method for call in sim.calls] == ["sendVideoNote"]
