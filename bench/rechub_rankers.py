"""torch-rechub 0.9.0's DeepFM, DIN and MMoE as the funnel's ranker, on recfunnel's own rows.

The default funnel is fitted once and its ranker training rows are kept exactly as
bench/rank_compare.py keeps them (`rank_tune.fit_with_rows`: recall on each user's last
fit steps, the target plus 100 sampled pool negatives per query, point-in-time
sparse/sequence features, labels interact and like). Each torch-rechub model (bench/rechub_rank_adapter.py) is trained
on exactly those rows, swapped in as `funnel.ranker` (the re-ranker's expected exposure is
recomputed with it, as a fit with that ranker would), and evaluated end to end on the test
split by `evaluate_fitted`, then with rank_compare's example metrics (AUC, GAUC, logloss
on the test step's merged pools) and latency (one request tiled to 200 / 1000 candidates).
recfunnel's own DeepFM, trained on the same rows, is evaluated too as a same-run control
(stored under "rechub_run"; also as the `deepfm` row where the results have none, e.g. a
dataset bench/rank_compare.py has not been run on).

Rows `rechub_deepfm`, `rechub_din`, `rechub_mmoe` are added to rank_compare.json (loaded
from --out, else from bench/results) and rank_compare.md is rewritten with a note on them.

Usage: PYTHONPATH=src python bench/rechub_rankers.py [--data ../shared/data/ml-100k]
       [--models rechub_deepfm,rechub_din,rechub_mmoe] [--out bench/results] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rank_compare import line, measure, result_stem, write  # noqa: E402
from rank_tune import Rows, fit_with_rows, install_ranker, train_ranker, with_overrides  # noqa: E402
from rechub_rank_adapter import RechubRanker, RechubRankerConfig  # noqa: E402

from recfunnel.config import load_config  # noqa: E402
from recfunnel.data.loaders import load_dataset  # noqa: E402
from recfunnel.data.split import leave_last_out  # noqa: E402
from recfunnel.rank.metrics import auc, gauc  # noqa: E402

CONTROL_NOTE = "recfunnel's own DeepFM in the same fitted funnel (the control of bench/rechub_rankers.py)"
ROOT = Path(__file__).resolve().parents[1]
MODELS = ("rechub_deepfm", "rechub_din", "rechub_mmoe")
NOTE = (
    "torch-rechub 0.9.0 models trained by its CTRTrainer/MTLTrainer on the same training rows as deepfm "
    "(bench/rechub_rankers.py); probabilities are raw sigmoid outputs (no Platt scaling, so calib. err. is uncalibrated, "
    "on all held-out queries), ranked and re-ranked by their log-odds as recfunnel's rankers are; MMoE by the "
    "log-odds of (1.0 P(interact) + 0.5 P(like)) / 1.5"
)


def train_rechub(rows: Rows, name: str, **overrides) -> tuple[RechubRanker, float]:  # noqa: ANN003
    cfg = RechubRankerConfig(model=name.removeprefix("rechub_"), **overrides)
    t = time.perf_counter()
    ranker = RechubRanker(cfg).fit(rows.train, rows.labels, rows.features, specs=rows.specs, like=rows.like)
    return ranker, time.perf_counter() - t


def holdout_all(ranker, rows: Rows) -> dict:  # noqa: ANN001
    """AUC/GAUC of P(interact) on all held-out training queries (recfunnel's own report uses
    the half not used for Platt scaling; the rechub rows report all of them)."""
    held = np.flatnonzero(ranker._held_out(rows.train, np.random.default_rng(ranker.config.seed)))
    sub = rows.train.take(held)
    p = ranker.head_probabilities(sub)[:, 0]
    return {"auc": auc(rows.labels[held], p), "gauc": float(gauc(rows.labels[held], p, sub.query))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--epochs", type=int, default=20, help="most epochs of each rechub model (early stopping ends sooner)")
    ap.add_argument("--no-control", action="store_true", help="skip evaluating recfunnel's own DeepFM")
    ap.add_argument("--verbose", action="store_true", help="show the rechub trainers' output")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    ds = load_dataset(args.data)
    split = leave_last_out(ds)
    print(ds.describe(), flush=True)

    stem = result_stem(out, ds.name)
    results = {"dataset": ds.name, "users": int(len(split)), "rankers": {}}
    for src in (stem, result_stem(ROOT / "bench" / "results", ds.name)):
        if src.with_suffix(".json").exists():
            results = json.loads(src.with_suffix(".json").read_text())
            break

    base = load_config(None)
    t0 = time.perf_counter()
    funnel, rows = fit_with_rows(base, split)
    print(
        f"funnel fitted in {time.perf_counter() - t0:.0f}s; ranker rows {len(rows.labels)} "
        f"({int(rows.labels.sum())} positive, {len(np.unique(rows.train.query))} queries), {len(rows.specs.sparse)} "
        f"sparse, {len(rows.specs.dense)} dense, {len(rows.specs.sequence)} sequence features",
        flush=True,
    )
    run = {"torch_rechub": _version(), "rows": int(len(rows.labels)), "epochs_cap": args.epochs, "note": NOTE}
    if not args.no_control:
        t = time.perf_counter()
        cfg = with_overrides(base, "deepfm", {})
        ranker, train_s = train_ranker(rows, cfg)
        install_ranker(funnel, split, cfg, ranker)
        ctrl = measure(funnel, split, train_s, t)
        ctrl["holdout_all"] = holdout_all(funnel.ranker, rows)
        print(line("deepfm (ctrl)", ctrl), f"held-out (all) {ctrl['holdout_all']}", flush=True)
        run["control_deepfm"] = ctrl
        if "deepfm" not in results["rankers"]:  # no rank_compare run on this data yet: the control is its row
            results["rankers"]["deepfm"] = {**ctrl, "note": CONTROL_NOTE}
    for name in args.models.split(","):
        t = time.perf_counter()
        ranker, train_s = train_rechub(rows, name, epochs=args.epochs, verbose=args.verbose)
        print(f"{name}: trained in {train_s:.0f}s, report {ranker.report}", flush=True)
        install_ranker(funnel, split, funnel.config, ranker)
        row = measure(funnel, split, train_s, t)
        row["note"] = NOTE
        results["rankers"][name] = row
        results["rechub_run"] = run
        print(line(name, row), flush=True)
        write(results, stem)


def _version() -> str:
    from importlib.metadata import version

    return version("torch-rechub")


if __name__ == "__main__":
    main()
