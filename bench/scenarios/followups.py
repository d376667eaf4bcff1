"""Scenarios 11 and 12: how fast a sent broadcast is recalled, and edited, against the bot's
limit.

The simulator allows ``L`` messages per second per bot, and counts a delete or an edit like a
send (as Telegram does). The service (``telegram.rate_limit`` = L, one worker, SQLite,
embedded NATS) sends a broadcast to N recipients; once it is completed, it is recalled
(``POST /v1/broadcasts/{id}/recall``: one ``deleteMessage`` per chat) or edited
(``POST /v1/broadcasts/{id}/edit``: one ``editMessageText`` per chat), under the same budget.
Measured from the request until the broadcast is ``recalled``, or no longer ``editing``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.analysis import analyse
from bench.children import Cluster, ServiceConfig
from bench.client import ServiceClient
from bench.profiles import Bench
from bench.report import Section, Table, Target, emit, fmt, fmt_range, progress, verdict
from bench.runs import SERVICE_ROLES, RunResult, track_cluster

TARGET = 0.95
"""#15: a recall or an edit runs at 0.95 of the bot's limit or more, with no 429 and nobody
missed."""


@dataclass(frozen=True, slots=True)
class _FollowUp:
    key: str
    name: str
    """``recall`` or ``edit``."""
    method: str
    """The Bot API method each recipient takes."""
    done: str
    """The outcome every recipient should get."""
    request: Callable[[ServiceClient, int], Awaitable[None]]
    wait: Callable[[ServiceClient, int, float], Awaitable[dict[str, Any]]]
    counts: str
    """The broadcast's field with the outcomes per name."""


async def _recall(client: ServiceClient, broadcast_id: int) -> None:
    await client.recall(broadcast_id)


async def _edit(client: ServiceClient, broadcast_id: int) -> None:
    await client.edit(broadcast_id, {"message": "corrected"})


RECALL = _FollowUp(
    key="11",
    name="recall",
    method="deleteMessage",
    done="deleted",
    request=_recall,
    wait=lambda client, broadcast_id, within: client.wait_recalled(broadcast_id, within=within),
    counts="recall_counts",
)
EDIT = _FollowUp(
    key="12",
    name="edit",
    method="editMessageText",
    done="edited",
    request=_edit,
    wait=lambda client, broadcast_id, within: client.wait_edited(broadcast_id, within=within),
    counts="edit_counts",
)


async def recall(bench: Bench) -> Section:
    return await _measure(bench, RECALL)


async def edit(bench: Bench) -> Section:
    return await _measure(bench, EDIT)


async def _measure(bench: Bench, kind: _FollowUp) -> Section:
    limit, count = bench.profile.recall_limit, bench.profile.recall_recipients
    call = kind.method
    section = Section(
        key=kind.key,
        title=f"{kind.name.capitalize()} throughput",
        setup=(
            f"The simulator allows L = {limit} messages per bot in any one-second window, "
            f"`{call}` counted like a send. The service (`telegram.rate_limit` = L, one "
            f"worker, SQLite, embedded NATS) sends {fmt(count)} recipients one message each; "
            f"once the broadcast is completed it is {kind.name}ed (`POST "
            f"/v1/broadcasts/{{id}}/{kind.name}`), timed from that request until it is done. "
            f"*{kind.name} rate / L* is the steady rate (10th to 90th percentile `{call}`) "
            f"over L; *missed*: recipients whose outcome is not `{kind.done}`; *service CPU*: "
            f"server + nats-server + worker over the {kind.name}."
        ),
    )
    recipients = list(range(1, count + 1))
    await bench.sim.reset()
    await bench.sim.set_limits(bot=limit)
    within = count / limit * 4 + 60
    async with (
        Cluster.start(
            bench.folder(kind.name), bench.sim, ServiceConfig(rate_limit=limit), workers=1
        ) as cluster,
        ServiceClient.connect(cluster.http_url, cluster.grpc_target) as client,
    ):
        progress(f"{kind.key}. {kind.name}: sending {count} recipients at L={limit}")
        broadcast_id = await client.send_rest(recipients)
        await client.wait_final(broadcast_id, within=within)
        sends = await bench.sim.calls()
        since = max((c.seq for c in sends), default=0)
        progress(f"{kind.key}. {kind.name}: {kind.name}ing them")
        track_cluster(bench.meter, cluster)
        async with bench.meter.measuring() as window:
            requested_at = time.time()
            await kind.request(client, broadcast_id)
            state = await kind.wait(client, broadcast_id, within)
            done_at = time.time()
    calls = await bench.sim.calls(since=since, method=call)
    result = RunResult(
        label=kind.name,
        deliveries=analyse(calls, recipients, requested_at=requested_at),
        window=window,
        requested_at=requested_at,
        done_at=done_at,
        cpu_roles=SERVICE_ROLES,
    )
    d = result.deliveries
    missed = count - int(state.get(kind.counts, {}).get(kind.done, 0))
    emit(kind.key, f"{kind.name} L={limit}", {**result.numbers(limit), "missed": missed})
    med, low, high = d.window_ratios(limit)
    section.tables.append(
        Table(
            caption=f"**{kind.name.capitalize()} of {fmt(count)} recipients, L = {limit} per "
            "second**",
            columns=(
                "recipients",
                f"{kind.name} rate / L",
                "per-second rate / L: median [min-max]",
                "429s",
                "missed",
                "calls repeated",
                "total (s)",
                f"service CPU s / 1k {kind.name}s",
            ),
            rows=[
                [
                    fmt(count),
                    fmt(d.ratio(limit), 3),
                    fmt_range(med, low, high, 3),
                    fmt(d.rejected_429),
                    fmt(missed),
                    fmt(d.duplicates),
                    fmt(result.total_seconds, 1),
                    fmt(result.cpu_per_1k, 3),
                ]
            ],
        )
    )
    ratio = d.ratio(limit)
    met = ratio is not None and ratio >= TARGET and d.rejected_429 == 0 and missed == 0
    section.targets.append(
        Target(
            item=f"#15 {kind.name}",
            measured=f"{fmt(count)} recipients at L = {limit}/s: {kind.name} rate / L, 429s, "
            "missed",
            goal=f"≥ {TARGET}, 0 x 429, none missed",
            before="-",
            now=f"{fmt(ratio, 3)}, {fmt(d.rejected_429)} x 429, {fmt(missed)} missed",
            met=met,
        )
    )
    section.findings.append(
        f"Target: a {kind.name} at {TARGET} of L or more, no 429, every recipient "
        f"{kind.done}: " + verdict(met) + "."
    )
    return section
