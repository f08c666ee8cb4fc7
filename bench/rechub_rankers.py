"""torch-rechub 0.9.0's DeepFM, DIN and MMoE as the funnel's ranker, on recfunnel's own rows.

The default funnel is fitted once with rank.model = "deepfm", so it builds its ranker
training rows exactly as bench/rank_compare.py's neural rankers get them (recall on each
user's last 3 fit steps, the target plus 100 sampled pool negatives per query, point-in-time
sparse/sequence features, labels interact and like); a wrapper around the DeepFM ranker's
`fit` keeps those rows. Each torch-rechub model (bench/rechub_rank_adapter.py) is trained
on exactly those rows, swapped in as `funnel.ranker` (the re-ranker's expected exposure is
recomputed with it, as a fit with that ranker would), and evaluated end to end on the test
split by `evaluate_fitted`, then with rank_compare's example metrics (AUC, GAUC, logloss
on the test step's merged pools) and latency (one request tiled to 200 / 1000 candidates).
recfunnel's own DeepFM, trained in the same funnel, is evaluated too as a same-run control
(stored under "rechub_run"; also as the `deepfm` row where the results have none, e.g. a
dataset bench/rank_compare.py has not been run on).

Rows `rechub_deepfm`, `rechub_din`, `rechub_mmoe` are added to rank_compare.json (loaded
from --out, else from bench/results) and rank_compare.md is rewritten with a note on them.

Usage: PYTHONPATH=src python bench/rechub_rankers.py [--data ../shared/data/ml-100k]
       [--models rechub_deepfm,rechub_din,rechub_mmoe] [--out bench/results] [--epochs 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rank_compare import example_metrics, latency, write  # noqa: E402
from rechub_rank_adapter import RechubRanker, RechubRankerConfig  # noqa: E402

from recfunnel import funnel as funnel_module  # noqa: E402
from recfunnel.candidates import Candidates  # noqa: E402
from recfunnel.config import FunnelConfig, load_config  # noqa: E402
from recfunnel.data.loaders import load_dataset  # noqa: E402
from recfunnel.data.split import Split, leave_last_out  # noqa: E402
from recfunnel.evaluate.protocol import evaluate_fitted  # noqa: E402
from recfunnel.features.specs import FeatureSpecs  # noqa: E402
from recfunnel.funnel import Funnel  # noqa: E402
from recfunnel.rank.metrics import auc, gauc  # noqa: E402

CONTROL_NOTE = "recfunnel's own DeepFM in the same fitted funnel (the control of bench/rechub_rankers.py)"
ROOT = Path(__file__).resolve().parents[1]
MODELS = ("rechub_deepfm", "rechub_din", "rechub_mmoe")
NOTE = (
    "torch-rechub 0.9.0 models trained by its CTRTrainer/MTLTrainer on the same training rows as deepfm "
    "(bench/rechub_rankers.py); scores are raw sigmoid outputs (no Platt scaling, so calib. err. is uncalibrated, "
    "on all held-out queries); MMoE ranks by 1.0 P(interact) + 0.5 P(like)"
)


@dataclass
class Rows:
    """The ranker training rows the funnel built, as its ranker's fit received them."""

    train: Candidates
    labels: np.ndarray
    features: list[str]
    specs: FeatureSpecs
    like: np.ndarray | None


@contextlib.contextmanager
def capture_rows(model: str = "deepfm"):
    """While active, the funnel's `model` ranker records its training rows in the yielded list."""
    base = funnel_module.RANKERS[model]
    got: list[Rows] = []

    def fit(self, train, labels, features, progress=False, specs=None, like=None):  # noqa: ANN001, ANN202
        got.append(Rows(train, labels, list(features), specs, like))
        return base.fit(self, train, labels, features, progress=progress, specs=specs, like=like)

    funnel_module.RANKERS[model] = type(f"Capturing{base.__name__}", (base,), {"fit": fit})
    try:
        yield got
    finally:
        funnel_module.RANKERS[model] = base


def fit_funnel(split: Split, config: FunnelConfig | None = None) -> tuple[Funnel, Rows]:
    """The default funnel with recfunnel's DeepFM ranker, and that ranker's training rows."""
    cfg = config or load_config(None)
    cfg.rank.model = "deepfm"  # type: ignore[assignment]
    with capture_rows("deepfm") as got:
        funnel = Funnel(cfg).fit(split.fit, progress=False)
    assert len(got) == 1, "the funnel fitted its ranker more than once"
    return funnel, got[0]


def swap_ranker(funnel: Funnel, split: Split, ranker, fit_s: float | None = None) -> None:  # noqa: ANN001
    """Serve `ranker` in the fitted funnel; recompute what the fit derived from its ranker."""
    funnel.ranker = ranker
    funnel.fit_seconds["fit:rank"] = fit_s
    funnel.ranker_report = {**{k: v for k, v in funnel.ranker_report.items() if not k.startswith("model:")},
                            **{f"model:{k}": v for k, v in getattr(ranker, "report", {}).items()}}
    if funnel.config.rerank.diversity.exposure_penalty > 0:
        funnel.catalog.set_exposure(funnel._expected_exposure(split.fit))


def train_rechub(rows: Rows, name: str, **overrides) -> tuple[RechubRanker, float]:  # noqa: ANN003
    cfg = RechubRankerConfig(model=name.removeprefix("rechub_"), **overrides)
    t = time.perf_counter()
    ranker = RechubRanker(cfg).fit(rows.train, rows.labels, rows.features, specs=rows.specs, like=rows.like)
    return ranker, time.perf_counter() - t


def measure(funnel: Funnel, split: Split, fit_s: float | None, wall_from: float) -> dict:
    """rank_compare's row: end to end, example metrics, latency."""
    ev = evaluate_fitted(funnel, split, progress=False)
    ex, first = example_metrics(funnel, split)
    rep = ev.result["ranker"]
    return {
        "NDCG@10": ev.result["final"]["NDCG@10"],
        "HR@10": ev.result["final"]["HR@10"],
        "ranked": ev.result["ranked"],
        "examples": ex,
        "calibration_error": rep.get("model:calibration_error"),
        "holdout": {k[6:]: v for k, v in rep.items() if k.startswith("model:")},
        "fit_rank_s": fit_s,
        "wall_s": time.perf_counter() - wall_from,
        "latency": latency(funnel, first),
    }


def holdout_all(ranker, rows: Rows) -> dict:  # noqa: ANN001
    """AUC/GAUC of P(interact) on all held-out training queries (recfunnel's own report uses
    the half not used for Platt scaling; the rechub rows report all of them)."""
    held = np.flatnonzero(ranker._held_out(rows.train, np.random.default_rng(ranker.config.seed)))
    sub = rows.train.take(held)
    p = ranker.head_probabilities(sub)[:, 0]
    return {"auc": auc(rows.labels[held], p), "gauc": float(gauc(rows.labels[held], p, sub.query))}


def _line(name: str, row: dict) -> str:
    ex = row["examples"]
    nan = float("nan")
    ll = ex.get("logloss")
    return (
        f"{name:14s} NDCG@10 {row['NDCG@10']:.4f} HR@10 {row['HR@10']:.4f} AUC {ex.get('AUC', nan):.4f} "
        f"GAUC {ex.get('GAUC', nan):.4f} logloss {ll if ll is not None else nan:.4f} "
        f"calib {row['calibration_error'] if row['calibration_error'] is not None else nan:.4f} "
        f"fit:rank {row['fit_rank_s'] or 0:.1f}s wall {row['wall_s']:.0f}s latency "
        + " ".join(f"{k} {v:.2f}" for k, v in row["latency"].items())
    )


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

    results = {"dataset": ds.name, "users": int(len(split)), "rankers": {}}
    for src in (out / "rank_compare.json", ROOT / "bench" / "results" / "rank_compare.json"):
        if src.exists():
            earlier = json.loads(src.read_text())
            if earlier.get("dataset") == ds.name:
                results = earlier
                break

    t0 = time.perf_counter()
    funnel, rows = fit_funnel(split)
    fit_s = time.perf_counter() - t0
    own_fit_rank = funnel.fit_seconds.get("fit:rank")
    print(
        f"funnel fitted in {fit_s:.0f}s; ranker rows {len(rows.labels)} ({int(rows.labels.sum())} positive, "
        f"{len(np.unique(rows.train.query))} queries), {len(rows.specs.sparse)} sparse, {len(rows.specs.dense)} dense, "
        f"{len(rows.specs.sequence)} sequence features",
        flush=True,
    )
    run = {"torch_rechub": _version(), "rows": int(len(rows.labels)), "epochs_cap": args.epochs, "note": NOTE}
    if not args.no_control:
        t = time.perf_counter()
        ctrl = measure(funnel, split, own_fit_rank, t)
        ctrl["holdout_all"] = holdout_all(funnel.ranker, rows)
        print(_line("deepfm (ctrl)", ctrl), f"held-out (all) {ctrl['holdout_all']}", flush=True)
        run["control_deepfm"] = ctrl
        if "deepfm" not in results["rankers"]:  # no rank_compare run on this data yet: the control is its row
            results["rankers"]["deepfm"] = {**ctrl, "note": CONTROL_NOTE}
    for name in args.models.split(","):
        t = time.perf_counter()
        ranker, train_s = train_rechub(rows, name, epochs=args.epochs, verbose=args.verbose)
        print(f"{name}: trained in {train_s:.0f}s, report {ranker.report}", flush=True)
        swap_ranker(funnel, split, ranker, train_s)
        row = measure(funnel, split, train_s, t)
        row["note"] = NOTE
        results["rankers"][name] = row
        results["rechub_run"] = run
        print(_line(name, row), flush=True)
        write(results, out)


def _version() -> str:
    from importlib.metadata import version

    return version("torch-rechub")


if __name__ == "__main__":
    main()
