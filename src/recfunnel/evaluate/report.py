"""The per-stage funnel report: Markdown tables plus one figure.

The figure answers the question the funnel report exists for — where is the target
lost? Left: each recall channel's HR@K as its quota grows. Right: the share of test
targets still present after each stage (channels -> pool -> pre-rank -> final list).

`result` shape (unknown keys are ignored, missing sections are left out):
    {"dataset": str,
     "final": {"HR@10": .., "NDCG@10": .., "MRR@10": .., "coverage@10": .., ...},
     "pool": {"size": int, "HR": float},
     "channels": {NAME: {"quota": int, "HR": float}},
     "timings": {STAGE: seconds}}
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.console import Console
from rich.table import Table

Curves = Mapping[str, Sequence[tuple[int, float]]]
Funnel = Sequence[tuple[str, float]]


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, numbers.Integral):
        return f"{int(v):,}"
    if isinstance(v, numbers.Real):
        return f"{float(v):.4f}"
    return str(v)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _sections(result: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, header, rows) for each section present in `result`."""
    out: list[tuple[str, list[str], list[list[Any]]]] = []
    final = result.get("final") or {}
    if final:
        out.append(("Final list", ["metric", "value"], [[k, v] for k, v in final.items()]))
    pool = result.get("pool") or {}
    if pool:
        out.append(("Merged pool", ["size", "HR"], [[pool.get("size"), pool.get("HR")]]))
    channels = result.get("channels") or {}
    if channels:
        rows = [[n, c.get("quota"), c.get("HR")] for n, c in channels.items()]
        out.append(("Recall channels", ["channel", "quota", "HR@quota"], rows))
    timings = result.get("timings") or {}
    if timings:
        rows = [[s, float(t)] for s, t in timings.items()]
        out.append(("Timings", ["stage", "seconds"], rows))
    return out


def format_table(result: Mapping[str, Any]) -> Table:
    """One rich table of every section, for the CLI to print."""
    table = Table(title=f"recfunnel evaluation: {result.get('dataset', '?')}")
    for col, justify in (("section", "left"), ("name", "left"), ("value", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for title, header, rows in _sections(result):
        for row in rows:
            if title == "Merged pool":
                table.add_row(title, "size", _fmt(row[0]))
                table.add_row(title, "HR", _fmt(row[1]))
            elif title == "Recall channels":
                table.add_row(title, f"{row[0]} (quota {_fmt(row[1])})", _fmt(row[2]))
            else:
                table.add_row(title, str(row[0]), _fmt(row[1]))
        table.add_section()
    return table


def table_text(result: Mapping[str, Any], width: int = 100) -> str:
    """`format_table` rendered to plain text (logs, tests)."""
    console = Console(width=width, record=True, file=None, force_terminal=False)
    with console.capture() as cap:
        console.print(format_table(result))
    return cap.get()


def _plot(path: Path, curves: Curves | None, funnel: Funnel | None, title: str) -> None:
    # A bare Figure renders with the Agg canvas and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5))
    left, right = fig.subplots(1, 2)
    if curves:
        for name, pts in curves.items():
            pts = sorted(pts)
            left.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        left.set_xscale("log")
        left.legend(fontsize=8)
    else:
        left.text(0.5, 0.5, "no channel curves", ha="center", va="center")
    left.set_xlabel("K (candidates per channel)")
    left.set_ylabel("HR@K")
    left.set_title("Recall channels: HR@K")
    left.grid(True, alpha=0.3)

    if funnel:
        names = [s for s, _ in funnel]
        shares = [float(v) for _, v in funnel]
        bars = right.bar(range(len(names)), shares, color="tab:blue")
        right.set_xticks(range(len(names)), names, rotation=20, ha="right")
        for bar, v in zip(bars, shares):
            right.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.3f}", ha="center", va="bottom")
        right.set_ylim(0, max(1.0, max(shares) * 1.1))
    else:
        right.text(0.5, 0.5, "no funnel stages", ha="center", va="center")
    right.set_ylabel("share of test targets")
    right.set_title("Share of test targets still present after each stage")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(
    result: Mapping[str, Any],
    out_dir: Path,
    curves: Curves | None = None,
    funnel: Funnel | None = None,
) -> Path:
    """Write `report.md` and `report.png` into `out_dir`; returns the Markdown path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = str(result.get("dataset", "?"))
    lines = [f"# Evaluation report: {dataset}", ""]
    lines += [
        "Protocol: leave-last-one-out by time, full ranking over fit-data items "
        "minus each user's seen items (PROTOCOL.md).",
        "",
    ]
    for title, header, rows in _sections(result):
        lines += [f"## {title}", ""] + _md_table(header, rows)
    if funnel:
        lines += ["## Funnel: targets still present", ""]
        lines += _md_table(["stage", "share of test targets"], [[s, float(v)] for s, v in funnel])
    if curves:
        lines += ["## Channel HR@K curves", ""]
        rows = [[n, ", ".join(f"{k}: {_fmt(float(h))}" for k, h in sorted(p))] for n, p in curves.items()]
        lines += _md_table(["channel", "K: HR@K"], rows)
    lines += ["![funnel report](report.png)", ""]
    _plot(out_dir / "report.png", curves, funnel, dataset)
    md = out_dir / "report.md"
    md.write_text("\n".join(lines))
    return md
