"""The peers' common frame: options, the tally, and the start handshake."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

TEXT = "Benchmark broadcast: hello!"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerOptions:
    kind: str
    api_url: str
    token: str
    rate: float
    concurrency: int
    recipients: tuple[int, ...]
    paid: bool = False


@dataclass(slots=True)
class Tally:
    """What a peer counted itself; the simulator's record is what the report uses."""

    started_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    """When the last send returned (before the bot's session closes)."""
    sent: int = 0
    failed: int = 0
    retried: int = 0


async def run_peer(
    options: PeerOptions, *, ready: Callable[[], None], go: Callable[[], Awaitable[None]]
) -> Tally:
    """Open the peer's bot, call ``ready``, wait for ``go``, send to every recipient."""
    if options.kind == "ptb":
        from bench.peers.ptb import send_with_ptb

        return await send_with_ptb(options, ready=ready, go=go)
    from bench.peers.aiogram_loops import send_with_aiogram

    return await send_with_aiogram(options, ready=ready, go=go)
