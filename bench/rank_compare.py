"""Every ranker in one funnel, on PROTOCOL.md, same split, same recall, same training rows.

The funnel (default config) is fitted once; its ranker training rows (its own recall on each
user's last `rank.train_steps` fit steps: the next item positive, sampled pool negatives,
like labels) are kept, and every ranker (`none` = merged recall order, `lightgbm`, and the
neural rankers, each with its `[rank.<model>]` settings) is trained on exactly those rows,
swapped into the fitted funnel and evaluated end to end (final NDCG@10, HR@10). The
ranker's input on the test step is then scored as examples: every row of each test user's
merged pool, the held-out item as the positive and the rest of the pool as negatives,
giving AUC, GAUC (per user) and logloss (probability outputs only; LightGBM LambdaRank
scores are not probabilities). Calibration error is the ranker's own held-out training
queries'. Latency: one request's hydrated pool, tiled to 200 and 1000 candidates, scored
alone (p50/p99). Recall runs once: later rankers reuse each batch's merged pool
(`rank_tune.reuse_recall`), so the first ranker's wall time includes the channels.

Writes bench/results/rank_compare[_<dataset>].json and .md after every ranker (partial runs count).
Usage: python bench/rank_compare.py [--data ../shared/data/ml-100k] [--models lr,din,...] [--update]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from recfunnel.config import FunnelConfig, load_config  # noqa: E402
from recfunnel.data.loaders import load_dataset  # noqa: E402
from recfunnel.data.split import leave_last_out  # noqa: E402
from recfunnel.evaluate.protocol import evaluate_fitted  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from rank_tune import example_metrics, fit_with_rows, reuse_recall, swap_ranker  # noqa: E402
MODELS = ("none", "lightgbm", "lr", "fm", "ffm", "gbdt_lr", "widedeep", "deepfm", "din", "dien", "shared_bottom", "mmoe")


def latency(funnel, first) -> dict:
    """p50/p99 ms of scoring one request's candidates (features already hydrated)."""
    if first is None:
        return {}
    _, ranked = first
    rows = np.flatnonzero(ranked.query == 0)
    one = ranked.take(rows)
    one.query = np.zeros(len(one), dtype=np.int32)
    one.n_queries = 1
    out = {}
    for n in (200, 1000):
        idx = np.resize(np.arange(len(one)), n)
        c = one.take(idx)
        times = []
        for _ in range(40):
            t = time.perf_counter()
            funnel.ranker.score(c)
            times.append((time.perf_counter() - t) * 1000)
        out[f"p50_ms@{n}"] = float(np.percentile(times, 50))
        out[f"p99_ms@{n}"] = float(np.percentile(times, 99))
    return out


def write(results: dict, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    lines = [
        f"# Rankers on {results['dataset']} ({results['users']} test users, PROTOCOL.md)",
        "",
        "Funnel: default config fitted once; every ranker trained on the same "
        f"{results.get('train_rows', '?')} training rows and swapped in (`bench/rank_compare.py`). Example metrics: the test step's merged pool "
        "(target positive, rest of the pool negative). Calibration: the ranker's held-out training queries. "
        "Latency: scoring one request's hydrated candidates (p50 / p99 ms), on a shared 2-core machine under other "
        "jobs' load (noisy: compare within a run).",
        "",
        "| ranker | NDCG@10 | HR@10 | AUC | GAUC | logloss | calib. err. | fit rank s | ms @200 | ms @1000 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def f(v, nd=4):
        return "–" if v is None else f"{v:.{nd}f}"

    for name, r in results["rankers"].items():
        ex, lat = r.get("examples", {}), r.get("latency", {})
        lines.append(
            f"| {name} | {r['NDCG@10']:.4f} | {r['HR@10']:.4f} | {f(ex.get('AUC'))} | {f(ex.get('GAUC'))} | "
            f"{f(ex.get('logloss'))} | {f(r.get('calibration_error'))} | {f(r.get('fit_rank_s'), 1)} | "
            f"{f(lat.get('p50_ms@200'), 2)} / {f(lat.get('p99_ms@200'), 2)} | "
            f"{f(lat.get('p50_ms@1000'), 2)} / {f(lat.get('p99_ms@1000'), 2)} |"
        )
    notes = {r["note"] for r in results["rankers"].values() if r.get("note")}
    for note in sorted(notes):
        names = ", ".join(f"`{n}`" for n, r in results["rankers"].items() if r.get("note") == note)
        lines += ["", f"{names}: {note}."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def result_stem(out: Path, dataset: str) -> Path:
    """ML-100K keeps the historical file name; other data sets get their own."""
    return out / ("rank_compare" if dataset == "ml-100k" else f"rank_compare_{dataset}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--config", default=None, help="funnel config (default: the shipped default)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--update", action="store_true", help="keep the other rankers' rows of an earlier run")
    args = ap.parse_args()
    ds = load_dataset(args.data)
    split = leave_last_out(ds)
    print(ds.describe(), flush=True)
    stem = result_stem(Path(args.out), ds.name)
    results = {"dataset": ds.name, "users": int(len(split)), "rankers": {}}
    if args.update and stem.with_suffix(".json").exists():
        results = json.loads(stem.with_suffix(".json").read_text())
    base = load_config(args.config)
    t = time.perf_counter()
    funnel, rows = fit_with_rows(base, split)
    reuse_recall(funnel)
    results["funnel_fit_s"] = time.perf_counter() - t
    results["train_rows"] = int(len(rows.labels))
    print(f"funnel and {results['train_rows']} ranker rows in {results['funnel_fit_s']:.0f}s", flush=True)
    for name in args.models.split(","):
        data = base.model_dump(mode="json")
        data["rank"]["model"] = name
        cfg = FunnelConfig.model_validate(data)
        t = time.perf_counter()
        fit_s = swap_ranker(funnel, rows, split, cfg)
        row = measure(funnel, split, fit_s if name != "none" else None, t)
        row["settings"] = data["rank"].get(name)
        results["rankers"][name] = row
        print(line(name, row), flush=True)
        write(results, stem)


def measure(funnel, split, fit_s: float | None, wall_from: float) -> dict:  # noqa: ANN001
    """One ranker's row: end to end, example metrics, calibration, latency."""
    ev = evaluate_fitted(funnel, split, progress=False)
    ex, first = example_metrics(funnel, split)
    rep = ev.result["ranker"]
    return {
        "NDCG@10": ev.result["final"]["NDCG@10"],
        "HR@10": ev.result["final"]["HR@10"],
        "ranked": ev.result["ranked"],
        "examples": ex,
        "calibration_error": rep.get("model:calibration_error"),
        "calibration_error_raw": rep.get("model:calibration_error_raw"),
        "holdout": {k[6:]: v for k, v in rep.items() if k.startswith("model:")},
        "fit_rank_s": fit_s,
        "wall_s": time.perf_counter() - wall_from,
        "latency": latency(funnel, first),
    }


def line(name: str, row: dict) -> str:
    ex, nan = row["examples"], float("nan")
    ll, cal = ex.get("logloss"), row["calibration_error"]
    return (
        f"{name:14s} NDCG@10 {row['NDCG@10']:.4f} HR@10 {row['HR@10']:.4f} AUC {ex.get('AUC', nan):.4f} "
        f"GAUC {ex.get('GAUC', nan):.4f} logloss {ll if ll is not None else nan:.4f} "
        f"calib {cal if cal is not None else nan:.4f} fit:rank {row['fit_rank_s'] or 0:.1f}s "
        f"wall {row['wall_s']:.0f}s latency " + " ".join(f"{k} {v:.2f}" for k, v in row["latency"].items())
    )


if __name__ == "__main__":
    main()
