"""``python -m bench``: run the benchmark scenarios and write docs/benchmarks.md and its charts.

``make bench`` runs the full profile (about 17 minutes on the 2-core machine, 30 at most);
``--quick`` a short look; ``--smoke`` tiny sizes for the test suite. ``--only 1,7`` picks
scenarios. Raw numbers go to stdout as JSON lines, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from bench import charts
from bench.children import REPO, PeerPool, SimulatorProcess
from bench.machine import describe
from bench.meter import Meter, load_now, machine_load
from bench.profiles import ALL_PEERS, PROFILES, Bench, installed_peers
from bench.report import Section, progress, write_report
from bench.scenarios import (
    bots,
    crash,
    followups,
    latency,
    limits,
    overhead,
    replication,
    scale,
    tls,
    watching,
)

Scenario = Callable[[Bench], Awaitable[Section]]

SCENARIOS: dict[str, Scenario] = {
    "1": limits.utilisation,
    "2": overhead.overhead,
    "3": limits.paid,
    "4": scale.scale,
    "5": watching.watchers,
    "6": crash.crash,
    "7": latency.latency,
    "8": tls.tls_cost,
    "9": replication.replication,
    "10": bots.bots,
    "11": followups.recall,
    "12": followups.edit,
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short runs for a quick look")
    mode.add_argument("--smoke", action="store_true", help="tiny runs (the test suite's)")
    parser.add_argument("--only", default="", help="comma-separated scenario numbers")
    parser.add_argument(
        "--report",
        type=Path,
        default=REPO / "docs" / "benchmarks.md",
        help="the Markdown to write",
    )
    parser.add_argument(
        "--charts", type=Path, default=REPO / "docs" / "bench", help="folder for the PNGs"
    )
    parser.add_argument(
        "--peers", default="", help=f"comma-separated peers to run (default: {ALL_PEERS})"
    )
    parser.add_argument("--workdir", type=Path, help="keep the runs' logs and data here")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, command: str) -> int:
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    chosen = [key.strip() for key in args.only.split(",") if key.strip()] or list(SCENARIOS)
    unknown = [key for key in chosen if key not in SCENARIOS]
    if unknown:
        print(f"unknown scenarios {unknown}; known: {list(SCENARIOS)}", file=sys.stderr)
        return 2
    wanted = [peer.strip() for peer in args.peers.split(",") if peer.strip()] or ALL_PEERS
    if set(wanted) - set(ALL_PEERS):
        print(f"unknown peers {wanted}; known: {ALL_PEERS}", file=sys.stderr)
        return 2
    peers = tuple(peer for peer in installed_peers() if peer in wanted)
    notes = []
    missing = [peer for peer in wanted if peer not in peers]
    if missing:
        notes.append(
            f"Peers not measured (the bench extra is not installed): {', '.join(missing)}."
        )
    if len(wanted) < len(ALL_PEERS):
        notes.append(f"Peers chosen with --peers: {', '.join(wanted)}.")
    started = time.monotonic()
    machine = describe()
    sections: list[Section] = []
    async with AsyncExitStack() as stack:
        if args.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tgb-bench-")))
        else:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        sim = await stack.enter_async_context(SimulatorProcess.start(workdir))
        meter = Meter()
        meter.track("simulator", sim.child.pid)
        meter.track("harness", os.getpid())
        if not meter.available:
            notes.append("CPU and memory not measured: psutil (the bench extra) is missing.")
        bench = Bench(
            profile=profile,
            workdir=workdir,
            sim=sim,
            meter=meter,
            peer_kinds=peers,
            peers=PeerPool(stack, workdir / "peers", sim),
        )
        for key in chosen:
            progress(f"scenario {key} ({profile.name})")
            began, load = time.monotonic(), load_now()
            section = await SCENARIOS[key](bench)
            section.seconds = time.monotonic() - began
            section.load = machine_load(load, load_now())
            sections.append(section)
    if charts.available():
        args.charts.mkdir(parents=True, exist_ok=True)
        for section in sections:
            written = charts.draw(section.charts, args.charts, machine.short())
            base = args.report.resolve().parent
            section.chart_files = [_relative(path, base) for path in written]
    elif any(section.charts for section in sections):
        notes.append("Charts not drawn: matplotlib (the bench extra) is missing.")
    text = write_report(
        sections=sections,
        machine=machine,
        mode=profile.name,
        command=command,
        seconds=time.monotonic() - started,
        notes=notes,
    )
    args.report.write_text(text, encoding="utf-8")
    progress(f"wrote {args.report} in {(time.monotonic() - started) / 60:.1f} minutes")
    return 0


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path.resolve())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    return asyncio.run(run(args, command.strip()))


if __name__ == "__main__":
    sys.exit(main())
