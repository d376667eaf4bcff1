"""What the simulator saw of one run, turned into the figures the report shows.

Times are the simulator's own wall-clock record of each answer (``Call.at``), so every sender
is measured by the same clock at the same place, whatever it reports about itself.

* **Steady rate**: accepted messages per second between the 10th and the 90th percentile
  delivery (the ramp-up and the tail are left out).
* **Per-second windows**: accepted messages in each whole second between those two
  deliveries, divided by the limit: their median, lowest and highest.
* **Latency**: from the moment the broadcast was requested (for a peer: when it started its
  loop) to each recipient's first accepted message; p50 and p99 over the recipients.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.children import SimCall

STEADY_LOW = 0.10
STEADY_HIGH = 0.90


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 0.5)


@dataclass(frozen=True, slots=True, kw_only=True)
class Deliveries:
    """One run as the simulator answered it."""

    recipients: int
    delivered: int
    """Recipients with at least one accepted message."""
    lost: int
    """Recipients with none."""
    duplicates: int
    """Accepted messages beyond the first per recipient."""
    rejected_429: int
    other_errors: int
    first_at: float | None
    last_at: float | None
    steady_rate: float | None
    window_counts: tuple[int, ...]
    latency_p50: float | None
    latency_p99: float | None
    latencies: tuple[float, ...]
    times: tuple[float, ...]
    """Every accepted message's time, sorted (for the charts)."""
    first_times: tuple[float, ...]
    """Each recipient's first acceptance, sorted (for the charts)."""

    @property
    def span(self) -> float | None:
        if self.first_at is None or self.last_at is None:
            return None
        return self.last_at - self.first_at

    @property
    def busiest_second(self) -> int:
        """The most messages accepted in any one second: a sliding window over the simulator's
        times of its answers (read just after its flood control's own), as flood control
        counts them."""
        most = start = 0
        for end, at in enumerate(self.times):
            while at - self.times[start] >= 1.0:
                start += 1
            most = max(most, end - start + 1)
        return most

    def ratio(self, limit: float) -> float | None:
        return None if self.steady_rate is None else self.steady_rate / limit

    def window_ratios(self, limit: float) -> tuple[float | None, float | None, float | None]:
        """(median, lowest, highest) of the per-second windows over ``limit``."""
        counts = [c / limit for c in self.window_counts]
        if not counts:
            return None, None, None
        return median(counts), min(counts), max(counts)

    def to_json(self, limit: float | None = None) -> dict[str, object]:
        data: dict[str, object] = {
            "recipients": self.recipients,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "rejected_429": self.rejected_429,
            "other_errors": self.other_errors,
            "steady_rate": _round(self.steady_rate),
            "span_s": _round(self.span),
            "latency_p50_s": _round(self.latency_p50),
            "latency_p99_s": _round(self.latency_p99),
            "window_counts": list(self.window_counts),
            "busiest_second": self.busiest_second,
        }
        if limit is not None:
            med, low, high = self.window_ratios(limit)
            data |= {
                "limit": limit,
                "rate_over_limit": _round(self.ratio(limit), 4),
                "window_ratio_median": _round(med, 4),
                "window_ratio_min": _round(low, 4),
                "window_ratio_max": _round(high, 4),
            }
        return data


def analyse(
    calls: Iterable[SimCall], recipients: Iterable[int], *, requested_at: float
) -> Deliveries:
    """The figures of a run that was asked to send one message to each of ``recipients``."""
    wanted = set(recipients)
    accepted: Counter[int] = Counter()
    first: dict[int, float] = {}
    times: list[float] = []
    rejected = errors = 0
    for call in calls:
        if call.chat_id not in wanted:
            continue
        if call.error_code is None:
            accepted[call.chat_id] += 1
            first.setdefault(call.chat_id, call.at)
            times.append(call.at)
        elif call.error_code == 429:
            rejected += 1
        else:
            errors += 1
    times.sort()
    latencies = tuple(sorted(at - requested_at for at in first.values()))
    return Deliveries(
        recipients=len(wanted),
        delivered=len(accepted),
        lost=len(wanted) - len(accepted),
        duplicates=sum(n - 1 for n in accepted.values()),
        rejected_429=rejected,
        other_errors=errors,
        first_at=times[0] if times else None,
        last_at=times[-1] if times else None,
        steady_rate=steady_rate(times),
        window_counts=window_counts(times),
        latency_p50=percentile(latencies, 0.5),
        latency_p99=percentile(latencies, 0.99),
        latencies=latencies,
        times=tuple(times),
        first_times=tuple(sorted(first.values())),
    )


def _steady_bounds(times: Sequence[float]) -> tuple[int, int] | None:
    if len(times) < 2:
        return None
    if len(times) < 20:
        return 0, len(times) - 1
    return math.floor(STEADY_LOW * len(times)), math.ceil(STEADY_HIGH * len(times)) - 1


def steady_rate(times: Sequence[float]) -> float | None:
    """Messages per second between the 10th and 90th percentile message (see module docs)."""
    bounds = _steady_bounds(times)
    if bounds is None:
        return None
    low, high = bounds
    elapsed = times[high] - times[low]
    return (high - low) / elapsed if elapsed > 0 else None


def window_counts(times: Sequence[float]) -> tuple[int, ...]:
    """Messages in each whole second from the 10th to the 90th percentile message."""
    bounds = _steady_bounds(times)
    if bounds is None:
        return ()
    start, end = times[bounds[0]], times[bounds[1]]
    whole = int(end - start)
    counts = [0] * whole
    for at in times:
        index = math.floor(at - start)
        if 0 <= index < whole:
            counts[index] += 1
    return tuple(counts)


def per_second(times: Sequence[float], origin: float) -> tuple[list[float], list[int]]:
    """Messages in each second from ``origin`` (for time-series charts)."""
    if not times:
        return [], []
    seconds = math.floor(times[-1] - origin) + 1
    counts = [0] * max(seconds, 0)
    for at in times:
        index = math.floor(at - origin)
        if 0 <= index < len(counts):
            counts[index] += 1
    return [float(i) for i in range(len(counts))], counts


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def spread(values: Sequence[float | None]) -> tuple[float | None, float | None, float | None]:
    """(median, lowest, highest) of the measured values (``None`` ones left out)."""
    known = [v for v in values if v is not None]
    if not known:
        return None, None, None
    return median(known), min(known), max(known)
