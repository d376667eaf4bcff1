"""The results of a benchmark run and how they are written: raw JSON lines and docs/benchmarks.md.

Scenarios return :class:`Section` values built only from what they measured: every figure
in a table went through :func:`fmt` from a number of the run, and every number is also
printed as a JSON line (:func:`emit`) the moment it is known.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bench.machine import Machine


def emit(scenario: str, run: str, numbers: dict[str, object]) -> None:
    """Print one measurement as a JSON line on stdout (the raw numbers of the report)."""
    print(json.dumps({"scenario": scenario, "run": run, **numbers}, default=str), flush=True)


def fmt(value: float | int | None, digits: int = 2, *, unit: str = "") -> str:
    """A figure for a table: ``n/a`` when it was not measured."""
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value:,.{digits}f}{unit}"


def fmt_range(middle: float | None, low: float | None, high: float | None, digits: int = 2) -> str:
    """``median [lowest-highest]``."""
    if middle is None:
        return "n/a"
    if low is None or high is None or low == high:
        return fmt(middle, digits)
    return f"{fmt(middle, digits)} [{fmt(low, digits)}-{fmt(high, digits)}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Table:
    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""

    def markdown(self) -> str:
        lines = []
        if self.caption:
            lines += [self.caption, ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Chart:
    """The data of one PNG; :mod:`bench.charts` draws it when matplotlib is installed.

    ``bars``: one group per category, one bar per series (``ys`` by category); ``lines``:
    each series a line; ``cdf``: each series' ``ys`` drawn as a cumulative distribution.
    """

    name: str
    title: str
    kind: Literal["bars", "lines", "cdf"]
    xlabel: str
    ylabel: str
    series: Sequence[Series]
    categories: Sequence[str] = ()
    target: float | None = None
    target_label: str = ""
    marks: Sequence[float] = ()
    marks_label: str = ""
    log_y: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One figure an issue set a target for: its value before the work and in this run."""

    item: str
    """The issue's item, as "#14.3 CPU per message"."""
    measured: str
    goal: str
    before: str
    """At the baseline commit (:data:`BASELINE`), as the issue quoted it; "-" if not measured."""
    now: str
    met: bool | None
    """``None``: not measured in this run."""


BASELINE = "78ce160"
"""The commit whose figures issue #14 quoted (make bench, 2026-12-04)."""


@dataclass(slots=True, kw_only=True)
class Section:
    """One scenario's part of the report."""

    key: str
    title: str
    setup: str
    tables: list[Table] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    chart_files: list[str] = field(default_factory=list)
    """Written PNGs, relative to the report."""
    targets: list[Target] = field(default_factory=list)
    seconds: float = 0.0
    load: tuple[float, float] | None = None
    """Cores busy on average during the scenario, and how many of them outside it."""


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def write_report(
    *,
    sections: Sequence[Section],
    machine: Machine,
    mode: str,
    command: str,
    seconds: float,
    notes: Iterable[str],
) -> str:
    """docs/benchmarks.md: a table of contents, the machine, versions and date, then every
    section."""
    out = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (the harness in `bench/`) from one run on the machine below; "
        "nothing here is typed in. Re-run it to check any figure: the harness prints every "
        "raw number as a JSON line while it runs. The machine is shared and noisy, so "
        "senders are compared within the same run, rates are given as ratios to the limit "
        "and, where repeated, as median [lowest-highest]. Where the time and memory go, "
        "recorded by hand with profilers, is in [profiles.md](profiles.md).",
        "",
        "- [Run](#run)",
        "- [Summary](#summary)",
        *(["- [Targets](#targets)"] if any(s.targets for s in sections) else []),
        *(f"- [{s.key}. {s.title}](#{_anchor(s)})" for s in sections),
        "",
        "## Run",
        "",
        *machine.markdown_lines(),
        f"- Mode: `{mode}` (`{command}`), {seconds / 60:.1f} minutes in all",
        "",
        "How the service is measured: the project's Telegram simulator runs in its own "
        "process (`python -m tgbroadcast.simulator`) and records the time of every answer; "
        "`tgbroadcast server` (with its embedded nats-server) and `tgbroadcast worker` "
        "processes run against it with their own data folder per scenario, and psutil "
        "reads their CPU time and memory. Rates come from the simulator's record: "
        "accepted messages per second between the 10th and 90th percentile delivery, and "
        "per whole second in that span.",
        "",
    ]
    for note in notes:
        out += [f"> {note}", ""]
    out += ["## Summary", ""]
    for s in sections:
        out.append(f"- [{s.key}. {s.title}](#{_anchor(s)}): " + " ".join(s.findings[:4]))
    out.append("")
    out += _targets(sections)
    for section in sections:
        out += [f"## {section.key}. {section.title}", "", section.setup, ""]
        for table in section.tables:
            out += [table.markdown(), ""]
        if section.findings:
            out += [f"- {finding}" for finding in section.findings]
            out.append("")
        for chart in section.chart_files:
            out += [f"![{section.title}]({chart})", ""]
        footer = f"Scenario time: {section.seconds:.0f} s"
        if section.load is not None:
            busy, others = section.load
            footer += (
                f"; the machine's 2 cores were {busy:.2f} busy on average, {others:.2f} of "
                "that by processes other than the harness and its children (other users' "
                "work, and the PostgreSQL server where it is used)"
            )
        out += [f"<sub>{footer}.</sub>", ""]
    return "\n".join(out)


def _targets(sections: Sequence[Section]) -> list[str]:
    targets = [(section, target) for section in sections for target in section.targets]
    if not targets:
        return []
    table = Table(
        columns=("item", "measured", "target", BASELINE, "this run", "met", "section"),
        rows=[
            [
                t.item,
                t.measured,
                t.goal,
                t.before,
                t.now,
                "n/a" if t.met is None else ("yes" if t.met else "**no**"),
                f"[{s.key}](#{_anchor(s)})",
            ]
            for s, t in targets
        ],
    )
    return [
        "## Targets",
        "",
        f"Issue #14's targets against the figures it quoted from {BASELINE} (same machine). "
        "For a target not met, [profiles.md](profiles.md) shows where the rest goes.",
        "",
        table.markdown(),
        "",
    ]


def _anchor(section: Section) -> str:
    text = f"{section.key}. {section.title}".lower()
    kept = "".join(ch for ch in text if ch.isalnum() or ch in " -")
    return kept.replace(" ", "-")


def progress(message: str) -> None:
    """A human-readable progress line on stderr (stdout carries the raw numbers)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)
