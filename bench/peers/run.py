"""The peers' common frame: one run's options, and its tally."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TEXT = "Benchmark broadcast: hello!"
LIBRARIES = {"aiogram-sleep": "aiogram", "aiogram-retry": "aiogram", "ptb": "ptb"}


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerRun:
    kind: str
    rate: float
    concurrency: int
    recipients: tuple[int, ...]
    paid: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PeerRun:
        first, count = int(data["first"]), int(data["count"])
        return cls(
            kind=str(data["kind"]),
            rate=float(data["rate"]),
            concurrency=int(data.get("concurrency", 32)),
            recipients=tuple(range(first, first + count)),
            paid=bool(data.get("paid", False)),
        )


@dataclass(slots=True)
class Tally:
    """What a peer counted itself; the simulator's record is what the report uses."""

    started_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    """When the last send returned."""
    sent: int = 0
    failed: int = 0
    retried: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at or time.time(),
            "sent": self.sent,
            "failed": self.failed,
            "retried": self.retried,
        }
