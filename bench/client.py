"""The service's API as a bot developer calls it: REST (aiohttp) and gRPC (grpc.aio)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiohttp
import grpc

from bench.children import API_TOKEN
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc

FINAL = frozenset({"completed", "failed"})
TEXT = "Benchmark broadcast: hello!"


class ServiceError(RuntimeError):
    """The service answered something a benchmark did not expect."""


class ServiceClient:
    """One HTTP session and one gRPC channel to a running service."""

    def __init__(
        self, http_url: str, session: aiohttp.ClientSession, channel: grpc.aio.Channel
    ) -> None:
        self.http_url = http_url
        self._session = session
        self.stub = pb_grpc.BroadcastServiceStub(channel)
        self._headers = {"Authorization": f"Bearer {API_TOKEN}"}
        self.metadata = (("authorization", f"Bearer {API_TOKEN}"),)

    @classmethod
    @asynccontextmanager
    async def connect(cls, http_url: str, grpc_target: str) -> AsyncIterator[ServiceClient]:
        connector = aiohttp.TCPConnector(limit=256)
        timeout = aiohttp.ClientTimeout(total=600)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            grpc.aio.insecure_channel(
                grpc_target,
                options=[
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ],
            ) as channel,
        ):
            yield cls(http_url, session, channel)

    async def send_rest(self, user_ids: Sequence[int], *, paid: bool = False) -> int:
        """``POST /send-message``; the broadcast id of the 202."""
        return await self.send_raw(send_body(user_ids, paid=paid))

    async def send_raw(self, body: bytes) -> int:
        """``POST /send-message`` with a body already encoded (:func:`send_body`)."""
        headers = {**self._headers, "Content-Type": "application/json"}
        async with self._session.post(
            self.http_url + "/send-message", data=body, headers=headers
        ) as response:
            if response.status != 202:
                raise ServiceError(f"send-message: {response.status} {await response.text()}")
            data: dict[str, Any] = await response.json()
        return int(data["broadcast_id"])

    async def wait_sending(self, broadcast_id: int, *, within: float, poll: float = 0.1) -> None:
        """Until the broadcast has a first outcome (polled)."""
        try:
            async with asyncio.timeout(within):
                while True:
                    state = await self.get(broadcast_id)
                    if state["sent"] + state["failed"] > 0:
                        return
                    await asyncio.sleep(poll)
        except TimeoutError:
            raise ServiceError(f"broadcast {broadcast_id} sent nothing in {within:.0f} s") from None

    async def wait_watchers(self, count: int, *, within: float, poll: float = 0.2) -> None:
        """Until ``count`` watch streams are open on the server (polled)."""
        try:
            async with asyncio.timeout(within):
                while True:
                    if await self.open_watchers() >= count:
                        return
                    await asyncio.sleep(poll)
        except TimeoutError:
            raise ServiceError(f"{count} watch streams not open after {within:.0f} s") from None

    async def open_watchers(self) -> int:
        """Open watch streams on the server (``tgb_watchers`` of ``/metrics``, all transports)."""
        async with self._session.get(self.http_url + "/metrics") as response:
            text = await response.text()
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("tgb_watchers{")
        )

    async def cancel(self, broadcast_id: int) -> None:
        """``POST /v1/broadcasts/{id}/cancel``."""
        async with self._session.post(
            f"{self.http_url}/v1/broadcasts/{broadcast_id}/cancel",
            json={},
            headers=self._headers,
        ) as response:
            if response.status != 200:
                raise ServiceError(f"cancel: {response.status} {await response.text()}")

    async def recall(self, broadcast_id: int) -> None:
        """``POST /v1/broadcasts/{id}/recall``."""
        async with self._session.post(
            f"{self.http_url}/v1/broadcasts/{broadcast_id}/recall", headers=self._headers
        ) as response:
            if response.status != 200:
                raise ServiceError(f"recall: {response.status} {await response.text()}")

    async def edit(self, broadcast_id: int, body: dict[str, Any]) -> None:
        """``POST /v1/broadcasts/{id}/edit`` with ``body``."""
        async with self._session.post(
            f"{self.http_url}/v1/broadcasts/{broadcast_id}/edit", json=body, headers=self._headers
        ) as response:
            if response.status != 200:
                raise ServiceError(f"edit: {response.status} {await response.text()}")

    async def wait_edited(
        self, broadcast_id: int, *, within: float, poll: float = 0.25
    ) -> dict[str, Any]:
        """The broadcast once its edit has ended (polled)."""
        state: dict[str, Any] = {}
        try:
            async with asyncio.timeout(within):
                while True:
                    state = await self.get(broadcast_id)
                    if state["edit_at"] is not None and not state["editing"]:
                        break
                    await asyncio.sleep(poll)
        except TimeoutError:
            raise ServiceError(
                f"broadcast {broadcast_id} not edited after {within:.0f} s: {state}"
            ) from None
        return state

    async def wait_recalled(
        self, broadcast_id: int, *, within: float, poll: float = 0.25
    ) -> dict[str, Any]:
        """The broadcast once it is ``recalled`` (polled)."""
        state: dict[str, Any] = {}
        try:
            async with asyncio.timeout(within):
                while True:
                    state = await self.get(broadcast_id)
                    if state["status"] == "recalled":
                        break
                    await asyncio.sleep(poll)
        except TimeoutError:
            raise ServiceError(
                f"broadcast {broadcast_id} not recalled after {within:.0f} s: {state}"
            ) from None
        return state

    async def send_grpc(self, user_ids: Sequence[int], *, paid: bool = False, bot: str = "") -> int:
        """``SendMessage`` (as ``bot``; empty: ``default``); the broadcast id."""
        request = pb.SendMessageRequest(
            message=TEXT, user_ids=list(user_ids), allow_paid_broadcast=paid, bot=bot
        )
        answer = await self.stub.SendMessage(request, metadata=self.metadata)
        return int(answer.broadcast_id)

    async def get(self, broadcast_id: int) -> dict[str, Any]:
        """``GET /v1/broadcasts/{id}``."""
        async with self._session.get(
            f"{self.http_url}/v1/broadcasts/{broadcast_id}", headers=self._headers
        ) as response:
            if response.status != 200:
                raise ServiceError(f"get broadcast: {response.status} {await response.text()}")
            data: dict[str, Any] = await response.json()
        return data

    async def wait_final(
        self, broadcast_id: int, *, within: float, poll: float = 0.25
    ) -> dict[str, Any]:
        """The broadcast once it is ``completed`` or ``failed`` (polled)."""
        try:
            async with asyncio.timeout(within):
                while True:
                    state = await self.get(broadcast_id)
                    if state["status"] in FINAL:
                        return state
                    await asyncio.sleep(poll)
        except TimeoutError:
            raise ServiceError(
                f"broadcast {broadcast_id} not finished after {within:.0f} s: {state}"
            ) from None

    async def watch(self, broadcast_id: int) -> AsyncIterator[tuple[float, pb.DeliveryResult]]:
        """Each outcome of ``WatchBroadcast`` with the wall-clock time it arrived."""
        call = self.stub.WatchBroadcast(
            pb.WatchBroadcastRequest(broadcast_id=broadcast_id), metadata=self.metadata
        )
        async for message in call:
            if message.HasField("result"):
                yield time.time(), message.result


def send_body(user_ids: Sequence[int], *, paid: bool = False, bot: str = "") -> bytes:
    """The JSON body of ``POST /send-message`` to ``user_ids`` (as ``bot``; empty: the
    token's only bot, else ``default``)."""
    body: dict[str, Any] = {"message": TEXT, "user_ids": list(user_ids)}
    if paid:
        body["allow_paid_broadcast"] = True
    if bot:
        body["bot"] = bot
    return json.dumps(body).encode()


def finished_at(state: dict[str, Any]) -> float | None:
    """The broadcast's ``finished_at`` as a wall-clock second."""
    value = state.get("finished_at")
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
