"""Bar charts of benchmark results, for the documentation site, from ``run.py``'s JSON.

    python bench/charts.py [RESULTS.json ...] [--out docs/benchmarks]

Reads the JSON that ``run.py`` writes (``results-<broker>[-<tag>].json``; by default the
runs kept in ``bench/published/``) and writes, for each broker and workload, an SVG bar
chart (``<broker>-<workload>.svg``: one bar per system, celeriac first, each bar labelled
with its value, the machine and load under it), and ``_figures.md``, the Markdown the
Benchmarks page includes: every chart with its caption (what was run, the machine, the
load during each system's rounds, the versions). The SVG is written by hand (no plotting
library), and the same JSON always gives the same bytes, so a test can check that the
committed charts are the ones their JSON gives.

To publish a new run: ``python bench/run.py ... --tag X``, copy its JSON to
``bench/published/<broker>.json``, run this script, commit both.
"""

from __future__ import annotations

import argparse
import json
import sys
from html import escape
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PUBLISHED = HERE / "published"
DEFAULT_OUT = HERE.parent / "docs" / "benchmarks"

#: the workloads charted, in page order
CHARTED = ("drain", "enqueue", "rtt_p50", "io")
BROKER_NAMES = {"redis": "Redis", "amqp": "RabbitMQ", "sqlite": "SQLite", "postgres": "PostgreSQL"}
SYSTEM_NAMES = {
    "celeriac": "celeriac",
    "celery": "Celery",
    "dramatiq": "Dramatiq",
    "rq": "RQ",
    "huey": "Huey",
    "procrastinate": "procrastinate",
}

WIDTH = 720
LABEL_W = 96
BAR_H = 24
GAP = 10
TOP = 52
VALUE_W = 90
FONT = "font-family='system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif'"


def _number(value: float, unit: str) -> str:
    return f"{value:,.2f} {unit}" if unit == "ms" else f"{value:,.0f} {unit}"


def _loads(report: dict[str, Any], name: str) -> str:
    """The 1-minute load averages before and after each of a system's rounds."""
    result = report["systems"].get(name, {})
    pairs = result.get("loadavg_per_run") or (
        [(result["loadavg_before"], result["loadavg_after"])] if "loadavg_before" in result else []
    )
    return ", ".join(f"{before[0]:.1f}->{after[0]:.1f}" for before, after in pairs)


def machine_line(report: dict[str, Any]) -> str:
    machine = report.get("machine", {})
    return f"{machine.get('cpus', '?')} CPUs, {machine.get('platform', '?')}"


def load_line(report: dict[str, Any], names: list[str]) -> str:
    """The load during the run: each system's rounds, or the run's own description."""
    parts = [f"{SYSTEM_NAMES.get(n, n)} {_loads(report, n)}" for n in names if _loads(report, n)]
    if parts:
        return "1-min load before->after each round: " + "; ".join(parts)
    return f"Load: {report.get('machine', {}).get('load', 'not recorded')}"


def chart_svg(report: dict[str, Any], row: dict[str, Any]) -> str:
    """One horizontal bar chart: a bar per system that has a value."""
    values = {n: v for n, v in row["values"].items() if v is not None}
    names = sorted(values, key=lambda n: (n != "celeriac", list(row["values"]).index(n)))
    higher = row["better"] == "higher"
    top = max(values.values()) if values else 1.0
    plot_w = WIDTH - LABEL_W - VALUE_W - 20
    height = TOP + len(names) * (BAR_H + GAP) + 58
    broker = BROKER_NAMES.get(report["broker"], report["broker"])
    title = f"{broker}: {row['label']} ({row['unit']}, {row['better']} is better)"
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        f"viewBox='0 0 {WIDTH} {height}' role='img' aria-label='{escape(title, quote=True)}'>",
        f"<rect width='{WIDTH}' height='{height}' fill='white'/>",
        f"<text x='10' y='24' {FONT} font-size='15' font-weight='600'>{escape(title)}</text>",
        f"<text x='10' y='42' {FONT} font-size='12' fill='#555'>"
        f"{escape(report.get('title', ''))}</text>",
    ]
    for i, name in enumerate(names):
        value = values[name]
        y = TOP + i * (BAR_H + GAP)
        width = max(1.0, plot_w * value / top)
        colour = "#2e7d32" if name == "celeriac" else "#9e9e9e"
        ratio = ""
        if name != "celeriac" and values.get("celeriac") and value:
            factor = values["celeriac"] / value if higher else value / values["celeriac"]
            ratio = (
                f"  (celeriac {factor:.1f}x better)"
                if factor >= 1
                else f"  (celeriac {1 / factor:.1f}x worse)"
            )
        out += [
            f"<text x='{LABEL_W - 8}' y='{y + BAR_H * 0.7:.1f}' {FONT} font-size='13' "
            f"text-anchor='end'>{escape(SYSTEM_NAMES.get(name, name))}</text>",
            f"<rect x='{LABEL_W}' y='{y}' width='{width:.1f}' height='{BAR_H}' fill='{colour}'/>",
            f"<text x='{LABEL_W + width + 6:.1f}' y='{y + BAR_H * 0.7:.1f}' {FONT} "
            f"font-size='12'>{escape(_number(value, row['unit']) + ratio)}</text>",
        ]
    y = TOP + len(names) * (BAR_H + GAP) + 14
    for line in (machine_line(report), load_line(report, names), _provenance(report)):
        out.append(f"<text x='10' y='{y}' {FONT} font-size='11' fill='#555'>{escape(line)}</text>")
        y += 15
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _provenance(report: dict[str, Any]) -> str:
    git = report.get("celeriac_git", {})
    text = f"celeriac at {git.get('commit', '?')}, measured {report.get('finished', '?')}"
    if report.get("transcribed_from"):
        text += "; figures as recorded in bench/RESULTS.md"
    return text


def _versions(report: dict[str, Any]) -> str:
    versions = report.get("versions", {})
    shown = []
    for key, value in sorted(versions.items()):
        version = value.get("version", "") if isinstance(value, dict) else value
        if version and isinstance(version, str):
            shown.append(f"{key} {version}")
    return ", ".join(shown)


def figures(reports: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write every chart and ``_figures.md`` into ``out``; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    markdown = [
        "<!-- written by bench/charts.py from bench/published/*.json: do not edit -->",
        "",
    ]
    order = {"redis": 0, "amqp": 1, "sqlite": 2, "postgres": 3}
    for report in sorted(reports, key=lambda r: order.get(r["broker"], 9)):
        broker = report["broker"]
        rows = {row["workload"]: row for row in report["rows"]}
        names = [n for n in report["systems"] if "cells" in report["systems"][n]]
        markdown += [f"### {BROKER_NAMES.get(broker, broker)}", ""]
        markdown += [
            f"`{report.get('command', '')}`: {report.get('title', '')}.",
            "",
        ]
        for workload in CHARTED:
            row = rows.get(workload)
            if row is None or not any(v is not None for v in row["values"].values()):
                continue
            path = out / f"{broker}-{workload}.svg"
            path.write_text(chart_svg(report, row), encoding="utf-8")
            written.append(path)
            markdown += [f"![{BROKER_NAMES.get(broker, broker)}: {row['label']}]({path.name})", ""]
        markdown += [
            f"Machine: {machine_line(report)}. {load_line(report, names)}. "
            f"celeriac at `{report.get('celeriac_git', {}).get('commit', '?')}`; "
            f"{_versions(report)}. Measured {report.get('finished', '?')}.",
            "",
        ]
        if report.get("transcribed_from"):
            markdown += [f"Source: {report['transcribed_from']}.", ""]
        notes = [
            f"{SYSTEM_NAMES.get(n, n)}: not run ({why})"
            for n, r in report["systems"].items()
            if (why := r.get("unavailable"))
        ]
        if notes:
            markdown += ["; ".join(notes) + ".", ""]
    figures_md = out / "_figures.md"
    figures_md.write_text("\n".join(markdown), encoding="utf-8")
    written.append(figures_md)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="*", type=Path, help="run.py JSON files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    paths = args.results or sorted(PUBLISHED.glob("*.json"))
    if not paths:
        parser.error(f"no results given and none in {PUBLISHED}")
    reports = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    for path in figures(reports, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
