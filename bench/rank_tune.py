"""Ranker settings compared on one set of training rows: recall and rows are built once.

The funnel (default config, or `--config`) is fitted once, its ranker training rows are
kept, and every variant — a ranker name plus dotted overrides of its `[rank.<model>]`
section — is trained on those same rows, swapped into the fitted funnel and evaluated end
to end (final NDCG@10, HR@10). `bench/rank_compare.py` reports the configured rankers the
same way, with example metrics and latency.

PROTOCOL.md: settings are chosen with `--on validation` (each user's second-to-last
interaction is the target, the fit data minus it is fitted); `--on test` reports.

`--examples` adds each variant's AUC and GAUC on the evaluated step's merged pools (one more
pass over the users), as bench/rank_compare.py measures them.

Writes bench/results/rank_tune_<dataset>_<on>.json and .md, adding to an earlier run's rows.
Usage:
  python bench/rank_tune.py --on validation lightgbm "lr loss=listwise" \\
      "deepfm loss=listwise train.learning_rate=1e-3 dropout=0.2"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from recfunnel.candidates import Candidates  # noqa: E402
from recfunnel.config import FunnelConfig, load_config  # noqa: E402
from recfunnel.data.loaders import load_dataset  # noqa: E402
from recfunnel.data.split import Split, leave_last_out  # noqa: E402
from recfunnel.evaluate.protocol import evaluate_fitted  # noqa: E402
from recfunnel.features.specs import FeatureSpecs  # noqa: E402
from recfunnel.funnel import BATCH, RANKERS, Funnel  # noqa: E402
from recfunnel.query import QueryBatch, history_queries  # noqa: E402
from recfunnel.rank.base import Ranker  # noqa: E402
from recfunnel.rank.metrics import auc, gauc, logloss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from config_override import override  # noqa: E402
CAPTURE_MODEL = "lr"  # any ranker that reads the point-in-time specs makes the full rows


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """'deepfm loss=listwise train.learning_rate=1e-3' -> ('deepfm', {key: raw value})."""
    name, *pairs = text.split()
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"variant '{text}': '{pair}' is not key=value")
        overrides[key] = raw
    return name, overrides


def with_overrides(cfg: FunnelConfig, name: str, overrides: dict[str, str]) -> FunnelConfig:
    """A copy of `cfg` ranking with `name`, its `[rank.<name>]` section changed by dotted
    `overrides` (values JSON where they parse)."""
    section = getattr(cfg.rank, name)
    for key, raw in overrides.items():
        section = override(section, key, raw)
    rank = cfg.rank.model_copy(update={"model": name, name: section})
    return cfg.model_copy(update={"rank": rank})


@dataclass
class Rows:
    """The ranker training rows of one funnel fit, as its ranker's fit received them."""

    train: Candidates
    labels: np.ndarray
    features: list[str]
    specs: FeatureSpecs | None
    like: np.ndarray | None


def fit_with_rows(cfg: FunnelConfig, split: Split) -> tuple[Funnel, Rows]:
    """The funnel fitted on `split.fit` and its ranker training rows, caught as a cheap
    ranker that reads the point-in-time specs (so every ranker's inputs are built) is fitted."""
    cls = RANKERS[CAPTURE_MODEL]
    original = cls.fit
    got: list[Rows] = []

    def grab(ranker, train_rows, labels, features, progress=False, specs=None, like=None):  # noqa: ANN001
        got.append(Rows(train_rows, labels, list(features), specs, like))
        return original(ranker, train_rows, labels, features, progress=progress, specs=specs, like=like)

    capture = with_overrides(cfg, CAPTURE_MODEL, {"train.epochs": "1"})
    cls.fit = grab  # type: ignore[method-assign]
    try:
        funnel = Funnel(capture).fit(split.fit, progress=False)
    finally:
        cls.fit = original  # type: ignore[method-assign]
    assert len(got) == 1, "the funnel fitted its ranker more than once"
    return funnel, got[0]


def reuse_recall(funnel: Funnel) -> None:
    """Serve every later request's recall from the first answer to the same batch: the
    rankers under comparison share recall, so a variant then costs its fit, its feature
    hydration and its scoring, not the channels again (they are most of a Beauty pass).
    Each call gets a copy of the pool, since ranking adds columns and reorders it."""
    recall = funnel._recall
    memo: dict[tuple, tuple[Candidates, dict[str, Candidates]]] = {}

    def cached(batch: QueryBatch, trace, keep, budget=None) -> Candidates:  # noqa: ANN001
        key = tuple((q.user, q.time, len(q.history), q.n) for q in batch.queries)
        if key not in memo:
            channels: dict[str, Candidates] = {}
            memo[key] = (recall(batch, trace, channels, budget), channels)
        pool, channels = memo[key]
        if keep is not None:
            keep.update(channels)
        return pool.take(np.arange(len(pool)))

    funnel._recall = cached  # type: ignore[method-assign]


def train_ranker(rows: Rows, cfg: FunnelConfig) -> tuple[Ranker, float]:
    """`cfg.rank.model` trained on the kept rows, and its fit seconds."""
    name = cfg.rank.model
    cls = RANKERS[name]
    t = time.perf_counter()
    ranker = cls(getattr(cfg.rank, name))
    if cls.uses_specs:
        ranker.fit(rows.train, rows.labels, rows.features, specs=rows.specs, like=rows.like)
    else:
        ranker.fit(rows.train, rows.labels, rows.features)
    return ranker, time.perf_counter() - t


def install_ranker(funnel: Funnel, split: Split, cfg: FunnelConfig, ranker: Ranker | None) -> None:
    """Serve `ranker` (None: the merged recall order) in the fitted funnel under `cfg`, and
    redo what the fit derived from its ranker (the re-ranker's expected exposure)."""
    funnel.config = cfg
    funnel._reranker = None
    funnel.ranker = ranker
    funnel.ranker_report = {f"model:{k}": v for k, v in getattr(ranker, "report", {}).items()}
    if cfg.rerank.diversity.exposure_penalty > 0:
        funnel.catalog.set_exposure(funnel._expected_exposure(split.fit))


def swap_ranker(funnel: Funnel, rows: Rows, split: Split, cfg: FunnelConfig) -> float:
    """Train `cfg.rank.model` on the kept rows and serve it ('none': the merged recall
    order); returns the ranker's fit seconds."""
    ranker, fit_s = (None, 0.0) if cfg.rank.model == "none" else train_ranker(rows, cfg)
    install_ranker(funnel, split, cfg, ranker)
    return fit_s


def run_variant(
    funnel: Funnel, rows: Rows, split: Split, cfg: FunnelConfig, examples: bool = False, end_to_end: bool = True
) -> dict:
    """End-to-end NDCG@10 / HR@10 with `cfg`'s ranker (unless not `end_to_end`); with
    `examples`, also its AUC and GAUC on the evaluated step's merged pools (as
    bench/rank_compare.py reports them)."""
    fit_s = swap_ranker(funnel, rows, split, cfg)
    final = ranked = {}
    if end_to_end:
        ev = evaluate_fitted(funnel, split, progress=False)
        final, ranked = ev.result["final"], ev.result["ranked"]
    return {
        "NDCG@10": final.get("NDCG@10"),
        "HR@10": final.get("HR@10"),
        "ranked_HR@10": ranked.get("HR@10"),
        "fit_s": fit_s,
        "report": getattr(funnel.ranker, "report", {}),
        **({"examples": example_metrics(funnel, split)[0]} if examples else {}),
    }


def example_metrics(funnel, split) -> tuple[dict, Candidates | None]:
    """AUC/GAUC/logloss of the ranker's scores on the evaluated step's merged pools (and the
    first batch's ranked rows, for latency)."""
    if funnel.ranker is None:
        return {}, None
    fit = split.fit
    queries = history_queries(fit, split.users, split.ts, n=funnel.config.n)
    ys, ss, ps, qs, first = [], [], [], [], None
    lengths = np.fromiter((len(qr.history) for qr in queries), dtype=np.int64, count=len(queries))
    heads = getattr(funnel.ranker, "head_probabilities", None)
    for start in range(0, len(queries), BATCH):
        batch = QueryBatch(queries[start : start + BATCH], fit.n_items)
        ranked = funnel.run(batch, keep_stages=True).ranked
        target = split.items[start : start + BATCH]
        ys.append((ranked.item == target[ranked.query]).astype(np.float32))
        ss.append(ranked.score.astype(np.float64))
        if heads is not None:
            ps.append(heads(ranked)[:, 0].astype(np.float64))  # P(interact), also for fused scores
        qs.append(ranked.query.astype(np.int64) + start)
        if first is None:
            first = (batch, ranked)
    y, s, q = np.concatenate(ys), np.concatenate(ss), np.concatenate(qs)
    has_pos = np.zeros(len(queries), dtype=bool)
    has_pos[q[y > 0]] = True
    keep = has_pos[q]
    out = {
        "pool_rows": int(len(y)),
        "AUC": auc(y, s),
        "GAUC": float(gauc(y[keep], s[keep], q[keep])),
        "logloss": logloss(y, np.concatenate(ps)) if ps else None,
        "by_history": by_history(y, s, q, keep, lengths),
    }
    return out, first


HISTORY_BUCKETS = ((1, 3), (4, 7), (8, 19), (20, None))


def by_history(y: np.ndarray, s: np.ndarray, q: np.ndarray, keep: np.ndarray, lengths: np.ndarray) -> list[dict]:
    """AUC and GAUC of the queries whose history holds `lo`..`hi` events: attention has
    something to choose from only in long histories, so DIN's edge should grow there."""
    out = []
    for lo, hi in HISTORY_BUCKETS:
        in_q = (lengths >= lo) & (lengths <= (hi if hi is not None else np.iinfo(np.int64).max))
        rows = in_q[q]
        both = rows & keep
        out.append(
            {
                "history": f"{lo}-{hi}" if hi is not None else f"{lo}+",
                "queries": int(in_q.sum()),
                "positives": int(y[rows].sum()),
                "AUC": auc(y[rows], s[rows]),
                "GAUC": float(gauc(y[both], s[both], q[both])) if both.any() else float("nan"),
            }
        )
    return out


def write(results: dict, stem: Path) -> None:
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    lines = [
        f"# Ranker settings on {results['dataset']}, {results['on']} split ({results['users']} users)",
        "",
        "Same recall and the same ranker training rows for every row (`bench/rank_tune.py`). "
        "Best epoch and held-out score are the ranker's own early stopping on its held-out training queries.",
        "",
        "| variant | NDCG@10 | HR@10 | ranked HR@10 | AUC | GAUC | best epoch | fit s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant, r in sorted(results["variants"].items(), key=lambda kv: -(kv[1]["NDCG@10"] or 0.0)):
        be, ex = r["report"].get("best_epoch"), r.get("examples", {})
        lines.append(
            f"| `{variant}` | "
            + " | ".join(_cell(v) for v in (r["NDCG@10"], r["HR@10"], r["ranked_HR@10"], ex.get("AUC"), ex.get("GAUC")))
            + f" | {'–' if be is None else int(be)} | {r['fit_s']:.1f} |"
        )
    lines += history_table(results["variants"])
    lines += seed_summary(results["variants"])
    if seed_plot(results, stem.with_suffix(".png")):
        lines += ["", f"![AUC per seed]({stem.name}.png)"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def seed_groups(variants: dict[str, dict]) -> dict[str, list[dict]]:
    """Variants that differ only in `seed=` (no `seed=` counts as the config's seed)."""
    groups: dict[str, list[dict]] = {}
    for text, r in variants.items():
        key = " ".join(p for p in text.split() if not p.startswith("seed="))
        groups.setdefault(key, []).append(r)
    return groups


def seed_plot(results: dict, path: Path) -> bool:
    """One row of dots per setting run with several seeds: each seed's pool AUC, and the
    mean as a bar, so a gap between settings can be read against the spread of each.
    False (and no file) where no setting has several seeds with AUC."""
    rows = [
        (key, [r["examples"]["AUC"] for r in runs])
        for key, runs in seed_groups(results["variants"]).items()
        if len(runs) > 1 and all("AUC" in r.get("examples", {}) for r in runs)
    ]
    if not rows:
        return False
    rows.sort(key=lambda kv: np.mean(kv[1]))
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.2))
    for i, (_, aucs) in enumerate(rows):
        ax.scatter(aucs, [i] * len(aucs), s=18, alpha=0.7)
        ax.plot([np.mean(aucs)] * 2, [i - 0.3, i + 0.3], color="black", lw=1.5)
    ax.set_yticks(range(len(rows)), [key for key, _ in rows], fontsize=8)
    ax.set_xlabel("AUC on the merged pools (dots: seeds, bar: mean)")
    ax.set_title(f"{results['dataset']}, {results['on']} split", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def history_table(variants: dict[str, dict]) -> list[str]:
    """AUC / GAUC by the length of the query's history, for the variants that measured it."""
    rows = [(v, r["examples"]["by_history"]) for v, r in variants.items() if r.get("examples", {}).get("by_history")]
    if not rows:
        return []
    buckets = rows[0][1]
    lines = [
        "",
        "By the length of the user's history (events before the target; queries with the target in the pool / all):",
        "",
        "| variant | " + " | ".join(f"AUC {b['history']} | GAUC {b['history']}" for b in buckets) + " |",
        "| --- |" + " ---: | ---: |" * len(buckets),
        "| queries (with target) | "
        + " | ".join(f"{b['positives']} / {b['queries']} | " for b in buckets)
        + " |",
    ]
    for v, bs in sorted(rows):
        lines.append(f"| `{v}` | " + " | ".join(f"{_cell(b['AUC'])} | {_cell(b['GAUC'])}" for b in bs) + " |")
    return lines


def _cell(value: float | None) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.4f}"


def seed_summary(variants: dict[str, dict]) -> list[str]:
    """Markdown lines: mean, min and max NDCG@10 (and pool AUC where measured) of variants
    that differ only in `seed=` (no `seed=` counts as the config's seed), for settings run
    with more than one seed."""
    rows = [(k, v) for k, v in seed_groups(variants).items() if len(v) > 1]
    if not rows:
        return []
    lines = [
        "",
        "Over seeds (the model's `seed`: its held-out queries, and for neural rankers initialisation and batch order):",
        "",
        "| setting | seeds | mean NDCG@10 | min | max | mean AUC | min | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, runs in sorted(rows, key=lambda kv: -float(np.mean([r["NDCG@10"] or 0.0 for r in kv[1]]))):
        cells = []
        for values in ([r["NDCG@10"] for r in runs], [r.get("examples", {}).get("AUC") for r in runs]):
            if None in values:
                cells += ["–"] * 3
            else:
                cells += [f"{np.mean(values):.4f}", f"{min(values):.4f}", f"{max(values):.4f}"]
        lines.append(f"| `{key}` | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants", nargs="+", help="'MODEL key=value ...' per variant")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--on", choices=("validation", "test"), default="validation")
    ap.add_argument("--config", default=None, help="funnel config (default: the shipped default)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--examples", action="store_true", help="also AUC/GAUC on the evaluated step's merged pools")
    ap.add_argument(
        "--examples-only", action="store_true", help="AUC/GAUC only: skip the end-to-end pass (about half the time)"
    )
    args = ap.parse_args()
    ds = load_dataset(args.data)
    split = leave_last_out(ds)
    if args.on == "validation":
        split = leave_last_out(split.fit)
    base = load_config(args.config)
    stem = Path(args.out) / f"rank_tune_{ds.name}_{args.on}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    results = {"dataset": ds.name, "on": args.on, "users": int(len(split)), "variants": {}}
    if stem.with_suffix(".json").exists():
        results["variants"] = json.loads(stem.with_suffix(".json").read_text())["variants"]
    t = time.perf_counter()
    funnel, rows = fit_with_rows(base, split)
    reuse_recall(funnel)
    print(f"{ds.name} {args.on}: funnel and {len(rows.labels)} ranker rows in {time.perf_counter() - t:.0f}s", flush=True)
    for text in args.variants:
        name, overrides = parse_variant(text)
        cfg = with_overrides(base, name, overrides)
        np.random.seed(0)
        examples = args.examples or args.examples_only
        r = run_variant(funnel, rows, split, cfg, examples=examples, end_to_end=not args.examples_only)
        results["variants"][" ".join(text.split())] = r
        print(
            f"{text:60s} NDCG@10 {_cell(r['NDCG@10'])} HR@10 {_cell(r['HR@10'])} ranked HR@10 {_cell(r['ranked_HR@10'])} "
            f"best epoch {r['report'].get('best_epoch', '-')} fit {r['fit_s']:.0f}s "
            + (f"AUC {r['examples']['AUC']:.4f} GAUC {r['examples']['GAUC']:.4f}" if "examples" in r else ""),
            flush=True,
        )
        write(results, stem)


if __name__ == "__main__":
    main()
