"""PNG charts of a run, drawn with matplotlib (part of the bench extra).

Every chart carries the machine, versions and date in its footer. Without matplotlib the
harness writes the tables and says the charts were skipped.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.report import Chart

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def draw(charts: Sequence[Chart], folder: Path, footer: str) -> list[Path]:
    """Write each chart as ``folder/<name>.png``; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for chart in charts:
        figure, axes = plt.subplots(figsize=(9, 4.8), dpi=110)
        if chart.kind == "bars":
            _bars(axes, chart)
        elif chart.kind == "lines":
            _lines(axes, chart)
        else:
            _cdf(axes, chart)
        if chart.target is not None:
            axes.axhline(
                chart.target, color="black", linestyle="--", linewidth=1, label=chart.target_label
            )
        for i, mark in enumerate(chart.marks):
            axes.axvline(
                mark,
                color="red",
                linestyle=":",
                linewidth=1,
                label=chart.marks_label if i == 0 else None,
            )
        if chart.log_y:
            axes.set_yscale("log")
        axes.set_title(chart.title)
        axes.set_xlabel(chart.xlabel)
        axes.set_ylabel(chart.ylabel)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
        figure.text(0.01, 0.01, footer, fontsize=6.5, color="#555555")
        figure.tight_layout(rect=(0, 0.03, 1, 1))
        path = folder / f"{chart.name}.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


def _bars(axes: Axes, chart: Chart) -> None:
    count = max(len(chart.series), 1)
    width = 0.8 / count
    positions = list(range(len(chart.categories)))
    for i, series in enumerate(chart.series):
        offsets = [p - 0.4 + width * (i + 0.5) for p in positions]
        heights = [0.0 if y is None else y for y in series.ys]
        bars = axes.bar(offsets, heights, width=width, label=series.label)
        for bar, y in zip(bars, series.ys, strict=True):
            text = "n/a" if y is None else f"{y:.2f}" if y < 100 else f"{y:,.0f}"
            axes.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    axes.set_xticks(positions, list(chart.categories), fontsize=8)


def _lines(axes: Axes, chart: Chart) -> None:
    for series in chart.series:
        axes.plot(
            list(series.xs),
            [float("nan") if y is None else y for y in series.ys],
            label=series.label,
            linewidth=1.2,
        )


def _cdf(axes: Axes, chart: Chart) -> None:
    for series in chart.series:
        values = sorted(y for y in series.ys if y is not None)
        if not values:
            continue
        fractions = [(i + 1) / len(values) for i in range(len(values))]
        axes.plot(values, fractions, label=series.label, linewidth=1.2)
