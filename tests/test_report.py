"""The report writes both files and carries the numbers it was given."""

from __future__ import annotations

from pathlib import Path

from recfunnel.evaluate.report import format_table, table_text, write_report

RESULT = {
    "dataset": "toy-beauty",
    "final": {"HR@10": 0.0671, "NDCG@10": 0.0394, "MRR@10": 0.0311, "coverage@10": 0.5123,
              "ILD@10": 0.8765, "novelty@10": 11.25},
    "pool": {"size": 1000, "HR": 0.4321},
    "channels": {"itemcf": {"quota": 300, "HR": 0.2468}, "popular": {"quota": 100, "HR": 0.0555}},
    "timings": {"recall": 1.5, "rank": 0.25},
    "unknown_key": {"ignored": True},
}
CURVES = {"itemcf": [(10, 0.05), (100, 0.15), (300, 0.2468)], "popular": [(10, 0.01), (100, 0.0555)]}
FUNNEL = [("channels", 0.5), ("pool", 0.4321), ("pre-rank", 0.3), ("final@10", 0.0671)]


def test_write_report(tmp_path: Path) -> None:
    md = write_report(RESULT, tmp_path / "out", CURVES, FUNNEL)
    assert md == tmp_path / "out" / "report.md"
    text = md.read_text()
    for needle in ["toy-beauty", "0.0671", "0.0394", "0.4321", "1,000", "itemcf", "300",
                   "0.2468", "recall", "1.5000", "pre-rank", "0.3000", "report.png"]:
        assert needle in text, needle
    assert "unknown_key" not in text
    png = (tmp_path / "out" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_write_report_without_curves_or_funnel(tmp_path: Path) -> None:
    md = write_report({"dataset": "x", "final": {"HR@10": 0.125}}, tmp_path, None, None)
    assert "0.1250" in md.read_text()
    assert (tmp_path / "report.png").stat().st_size > 0


def test_format_table() -> None:
    assert format_table(RESULT).row_count >= 12
    text = table_text(RESULT)
    for needle in ["HR@10", "0.0671", "itemcf", "0.2468", "1,000", "0.4321"]:
        assert needle in text, needle
