"""Scenario 11: how fast a broadcast is recalled, against the bot's limit.

The simulator allows ``L`` messages per second per bot, and counts a delete like a send (as
Telegram does). The service (``telegram.rate_limit`` = L, one worker, SQLite, embedded NATS)
sends a broadcast to N recipients; once it is completed, ``POST /v1/broadcasts/{id}/recall``
deletes every message, one ``deleteMessage`` per chat, under the same budget. Measured from the
recall request until the broadcast is ``recalled``.
"""

from __future__ import annotations

import time

from bench.analysis import analyse
from bench.children import Cluster, ServiceConfig
from bench.client import ServiceClient
from bench.profiles import Bench
from bench.report import Section, Table, Target, emit, fmt, fmt_range, progress, verdict
from bench.runs import SERVICE_ROLES, RunResult, track_cluster

TARGET = 0.95
"""#15: a recall runs at 0.95 of the bot's limit or more, with no 429 and nobody missed."""
COLUMNS = (
    "recipients",
    "delete rate / L",
    "per-second rate / L: median [min-max]",
    "429s",
    "not deleted",
    "deletes repeated",
    "total (s)",
    "service CPU s / 1k deletes",
)


async def recall(bench: Bench) -> Section:
    limit, count = bench.profile.recall_limit, bench.profile.recall_recipients
    section = Section(
        key="11",
        title="Recall throughput",
        setup=(
            f"The simulator allows L = {limit} messages per bot in any one-second window, a "
            f"delete counted like a send. The service (`telegram.rate_limit` = L, one worker, "
            f"SQLite, embedded NATS) sends {fmt(count)} recipients one message each; once the "
            "broadcast is completed it is recalled (`POST /v1/broadcasts/{id}/recall`), timed "
            "from that request until it is `recalled`. *delete rate / L* is the steady rate "
            "(10th to 90th percentile delete) over L; *not deleted*: recipients whose recall "
            "is not `deleted`; *service CPU*: server + nats-server + worker over the recall."
        ),
    )
    recipients = list(range(1, count + 1))
    await bench.sim.reset()
    await bench.sim.set_limits(bot=limit)
    within = count / limit * 4 + 60
    async with (
        Cluster.start(
            bench.folder("recall"), bench.sim, ServiceConfig(rate_limit=limit), workers=1
        ) as cluster,
        ServiceClient.connect(cluster.http_url, cluster.grpc_target) as client,
    ):
        progress(f"11. recall: sending {count} recipients at L={limit}")
        broadcast_id = await client.send_rest(recipients)
        await client.wait_final(broadcast_id, within=within)
        sends = await bench.sim.calls()
        since = max((call.seq for call in sends), default=0)
        progress("11. recall: recalling them")
        track_cluster(bench.meter, cluster)
        async with bench.meter.measuring() as window:
            requested_at = time.time()
            await client.recall(broadcast_id)
            state = await client.wait_recalled(broadcast_id, within=within)
            recalled_at = time.time()  # its finished_at is still the completion's
    deletes = await bench.sim.calls(since=since, method="deleteMessage")
    result = RunResult(
        label="recall",
        deliveries=analyse(deletes, recipients, requested_at=requested_at),
        window=window,
        requested_at=requested_at,
        done_at=recalled_at,
        cpu_roles=SERVICE_ROLES,
    )
    d = result.deliveries
    not_deleted = count - int(state.get("recall_counts", {}).get("deleted", 0))
    emit("11", f"recall L={limit}", {**result.numbers(limit), "not_deleted": not_deleted})
    med, low, high = d.window_ratios(limit)
    section.tables.append(
        Table(
            caption=f"**Recall of {fmt(count)} recipients, L = {limit} per second**",
            columns=COLUMNS,
            rows=[
                [
                    fmt(count),
                    fmt(d.ratio(limit), 3),
                    fmt_range(med, low, high, 3),
                    fmt(d.rejected_429),
                    fmt(not_deleted),
                    fmt(d.duplicates),
                    fmt(result.total_seconds, 1),
                    fmt(result.cpu_per_1k, 3),
                ]
            ],
        )
    )
    ratio = d.ratio(limit)
    met = ratio is not None and ratio >= TARGET and d.rejected_429 == 0 and not_deleted == 0
    section.targets.append(
        Target(
            item="#15 recall",
            measured=f"{fmt(count)} recipients at L = {limit}/s: delete rate / L, 429s, missed",
            goal=f"≥ {TARGET}, 0 x 429, none missed",
            before="-",
            now=f"{fmt(ratio, 3)}, {fmt(d.rejected_429)} x 429, {fmt(not_deleted)} missed",
            met=met,
        )
    )
    section.findings.append(
        f"Target: a recall at {TARGET} of L or more, no 429, every recipient deleted: "
        + verdict(met)
        + "."
    )
    return section
