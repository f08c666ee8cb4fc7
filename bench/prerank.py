"""Pre-rank on a real data set: final quality with the cut on vs off, and what it keeps.

One funnel is fitted with `rank.prerank` on; the same fitted stages are then evaluated
with the cut on and off (so only the cut differs), and we count the test targets the
ranker puts in its top 10 on the whole pool that survive the cut.

    PYTHONPATH=src python bench/prerank.py --data /work/shared/data/ml-100k --keep 200 [--model mlp]

Writes bench/results/prerank_<dataset>[_<model>].json and .md (no suffix for the trees).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from recfunnel.config import load_config
from recfunnel.data.loaders import load_dataset
from recfunnel.data.split import leave_last_out
from recfunnel.evaluate.protocol import evaluate_fitted
from recfunnel.funnel import BATCH, Funnel
from recfunnel.query import QueryBatch, history_queries


def _hits(cands, targets: np.ndarray, k: int) -> np.ndarray:
    return (cands.padded(k) == targets[:, None]).any(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--keep", type=int, default=200)
    ap.add_argument("--model", choices=["trees", "mlp"], default="trees", help="the pre-ranker (rank.prerank.model)")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    ds = load_dataset(a.data)
    split = leave_last_out(ds)
    cfg = load_config(None)
    cfg.rank.prerank.enabled = True
    cfg.rank.prerank.keep = a.keep
    cfg.rank.prerank.model = a.model
    t = time.perf_counter()
    f = Funnel(cfg).fit(split.fit, progress=not a.quiet)
    fit_s = time.perf_counter() - t
    runs = {}
    for on in (True, False):
        f.config.rank.prerank.enabled = on
        ev = evaluate_fitted(f, split, progress=not a.quiet)
        runs["on" if on else "off"] = {
            "final": ev.result["final"],
            "ranked": ev.result["ranked"],
            "ms_per_query": {
                k.split(":", 1)[1].removesuffix("_ms_per_query"): v
                for k, v in ev.result["timings"].items()
                if k.startswith("serve:")
            },
        }
    # targets the ranker finds (top 10 of the whole pool) that survive the cut
    queries = history_queries(split.fit, split.users, split.ts, n=cfg.n)
    found, survived, kept, merge_kept, in_pool = 0, 0, 0, 0, 0
    for start in range(0, len(queries), BATCH):
        batch = QueryBatch(queries[start : start + BATCH], split.fit.n_items)
        target = split.items[start : start + BATCH]
        f.config.rank.prerank.enabled = True
        on = f.run(batch, keep_stages=True)
        f.config.rank.prerank.enabled = False
        full = f.run(batch, keep_stages=True)
        fd = _hits(full.ranked, target, 10)
        kp = _hits(on.ranked, target, a.keep)
        found += int(fd.sum())
        survived += int((fd & kp).sum())
        kept += int(kp.sum())
        merge_kept += int(_hits(on.pool, target, a.keep).sum())
        in_pool += int(_hits(on.pool, target, cfg.merge.pool_size).sum())
    n = len(queries)
    out = {
        "dataset": ds.name,
        "test_users": n,
        "pool_size": cfg.merge.pool_size,
        "keep": a.keep,
        "prerank_model": a.model,
        "ranker": cfg.rank.model,
        "fit_seconds": fit_s,
        "fit:prerank": f.fit_seconds.get("fit:prerank"),
        "ranker_top10_targets": found,
        "survive_cut": survived,
        "survive_share": survived / max(found, 1),
        "HR_pool": in_pool / n,
        f"HR_after_prerank@{a.keep}": kept / n,
        f"HR_merge_order@{a.keep}": merge_kept / n,
        "runs": runs,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    name = f"prerank_{ds.name}" + ("" if a.model == "trees" else f"_{a.model}")
    (a.out / f"{name}.json").write_text(json.dumps(out, indent=2))
    rows = [
        f"# Pre-rank on {ds.name} ({a.model} pre-ranker, pool {cfg.merge.pool_size} -> keep {a.keep}, "
        f"ranker {cfg.rank.model})",
        "",
        "| prerank | NDCG@10 | HR@10 | prerank ms/query | prerank+hydrate+rank ms/query (batched) |",
        "|---|---|---|---|---|",
    ]
    for k, r in runs.items():
        ms = sum(v for s, v in r["ms_per_query"].items() if s in ("prerank", "hydrate", "hydrate:pit", "rank"))
        pre = r["ms_per_query"].get("prerank", 0.0)
        rows.append(f"| {k} | {r['final']['NDCG@10']:.4f} | {r['final']['HR@10']:.4f} | {pre:.3f} | {ms:.3f} |")
    rows += [
        "",
        f"- pre-ranker fit: {out['fit:prerank']:.1f} s",
        f"- targets in the merged pool: HR {out['HR_pool']:.4f}",
        f"- after the pre-rank cut: HR@{a.keep} {kept / n:.4f} (merge order cut: {merge_kept / n:.4f})",
        f"- ranker's top-10 targets on the whole pool: {found}; surviving the cut: {survived}"
        f" ({out['survive_share']:.1%})",
    ]
    (a.out / f"{name}.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
