"""Cold start: how well do channels find items that have no interactions at all?

PROTOCOL.md's split (each user's last interaction is the test target), then every
interaction of a random 5% of the catalog is hidden from the fit data. The test targets
that are those items are the cold-start cases: HR@50 over them, for the content channel
(item text), EGES (side information) and, for contrast, channels that only know
interactions (ItemCF, popularity), which cannot score them at all. Histories are the fit
data's (so they never contain a hidden item); the ranking covers the whole catalog minus
the user's own items, since the targets are by construction outside the fit data.

A second part measures eges and content as stand-alone channels on the plain protocol
(full ranking over fit-data items, no items hidden), next to popularity, DeepWalk and
item2vec, with their fit times.

Writes bench/results/cold_start.json and cold_start.md.
Usage: python bench/cold_start.py [--data-root ../shared/data] [--only ml-100k] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from recfunnel.data.loaders import load_dataset  # noqa: E402
from recfunnel.data.split import leave_last_out  # noqa: E402
from recfunnel.evaluate.metrics import hit_rate, ndcg, target_ranks  # noqa: E402
from recfunnel.evaluate.ranking import full_ranking_topk  # noqa: E402
from recfunnel.query import QueryBatch, history_queries  # noqa: E402
from recfunnel.recall.content import ContentConfig, ContentSource  # noqa: E402
from recfunnel.recall.eges import EGESConfig, EGESSource  # noqa: E402
from recfunnel.recall.graph_embedding import DeepWalkConfig, DeepWalkSource  # noqa: E402
from recfunnel.recall.item2vec import Item2VecConfig, Item2VecSource  # noqa: E402
from recfunnel.recall.itemcf import ItemCFSource  # noqa: E402
from recfunnel.recall.popular import PopularSource  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"ml-100k": "ml-100k", "beauty": "amazon-beauty-s3rec"}
COLD_SHARE = 0.05
K = 50


def eges_config(name: str, progress: bool) -> EGESConfig:
    c = EGESConfig()
    train = c.train.model_copy(update={"progress": progress})
    if name == "beauty":  # 12k items: fewer walks per item and larger batches keep it to minutes
        return EGESConfig(walks_per_node=3, train=train.model_copy(update={"batch_size": 8192}))
    return EGESConfig(train=train)


def fit_timed(src, ds):  # noqa: ANN001, ANN201
    t, c = time.perf_counter(), time.process_time()
    src.fit(ds)
    return src, time.perf_counter() - t, time.process_time() - c


def cold_start(name: str, ds, seeds: list[int], progress: bool) -> dict:  # noqa: ANN001
    split = leave_last_out(ds)
    runs = []
    content = None
    for seed in seeds:
        rng = np.random.default_rng(seed)
        n_cold = int(round(COLD_SHARE * ds.n_items))
        cold = np.sort(rng.choice(ds.n_items, n_cold, replace=False))
        fit = split.fit.with_events(split.fit.events.filter(~pl.col("item").is_in(cold.tolist())))
        is_cold = np.isin(split.items, cold)
        batch = QueryBatch(history_queries(fit, split.users, split.ts), fit.n_items)
        print(f"  seed {seed}: {n_cold} items hidden ({split.fit.n_events - fit.n_events} fit events), "
              f"{int(is_cold.sum())} of {len(split)} test targets are cold", flush=True)
        sources = {"popular": fit_timed(PopularSource(), fit), "itemcf": fit_timed(ItemCFSource(), fit)}
        if content is None:  # text vectors depend on the catalog only: embed once per data set
            content = fit_timed(ContentSource(ContentConfig(progress=progress)), fit)
        sources["content"] = content
        sources["eges"] = fit_timed(EGESSource(eges_config(name, progress)), fit)
        row = {"seed": seed, "hidden_items": n_cold, "cold_targets": int(is_cold.sum()), "warm_targets": int((~is_cold).sum()),
               "chance_HR@50": K / ds.n_items, "channels": {}}
        for ch, (src, wall, cpu) in sources.items():
            top = src.retrieve(batch, K).padded(K)
            ranks = target_ranks(top, split.items)
            row["channels"][ch] = {
                "cold_HR@50": hit_rate(ranks[is_cold], K),
                "warm_HR@50": hit_rate(ranks[~is_cold], K),
                # how much of a list the hidden items take: pushing every new item to everyone
                # would also raise cold HR, so this says whether the hits are earned
                "hidden_share_of_top50": float(np.isin(top, cold).sum() / max((top >= 0).sum(), 1)),
                "fit_seconds": round(wall, 2),
                "fit_cpu_seconds": round(cpu, 2),
            }
            print(f"    {ch:8s} cold HR@50 {row['channels'][ch]['cold_HR@50']:.4f}  warm HR@50 "
                  f"{row['channels'][ch]['warm_HR@50']:.4f}  hidden share of top 50 "
                  f"{row['channels'][ch]['hidden_share_of_top50']:.3f}  fit {wall:.1f}s (cpu {cpu:.1f}s)", flush=True)
        runs.append(row)
    names = list(runs[0]["channels"])
    total_cold = sum(r["cold_targets"] for r in runs)
    pooled = {  # HR over all cold targets of all seeds (weights seeds by their cold targets)
        ch: sum(r["channels"][ch]["cold_HR@50"] * r["cold_targets"] for r in runs) / max(total_cold, 1) for ch in names
    }
    return {"dataset": name, "seeds": seeds, "cold_share": COLD_SHARE, "runs": runs, "pooled_cold_HR@50": pooled,
            "cold_targets": total_cold, "chance_HR@50": K / ds.n_items}


def protocol(name: str, ds, progress: bool) -> dict:  # noqa: ANN001
    """Stand-alone channels on the plain protocol: NDCG@10, HR@50, HR@200 and fit time."""
    split = leave_last_out(ds)
    fit = split.fit
    batch = QueryBatch(history_queries(fit, split.users, split.ts), fit.n_items)
    cand = fit.item_user_count > 0
    models = {
        "popular": PopularSource(),
        "deepwalk": DeepWalkSource(DeepWalkConfig(threads=1)),
        "item2vec": Item2VecSource(Item2VecConfig(threads=1)),
        "eges": EGESSource(eges_config(name, progress)),
        "content": ContentSource(ContentConfig(progress=progress)),
    }
    rows = {}
    for label, src in models.items():
        src, wall, cpu = fit_timed(src, fit)
        scores = src.score(batch, slice(0, len(batch)))
        top = full_ranking_topk(lambda chunk: scores[np.searchsorted(split.users, chunk)], split.users, fit.user_item, 200,
                                candidate_items=cand)
        r = target_ranks(top, split.items)
        rows[label] = {"NDCG@10": ndcg(r, 10), "HR@10": hit_rate(r, 10), "HR@50": hit_rate(r, 50),
                       "HR@200": hit_rate(r, 200), "fit_seconds": round(wall, 2), "fit_cpu_seconds": round(cpu, 2)}
        if label == "eges":
            rows[label]["best_epoch"] = src.train_report["best_epoch"]
        m = rows[label]
        print(f"  {label:9s} NDCG@10 {m['NDCG@10']:.4f} HR@10 {m['HR@10']:.4f} HR@50 {m['HR@50']:.4f} "
              f"HR@200 {m['HR@200']:.4f} fit {wall:.1f}s (cpu {cpu:.1f}s)", flush=True)
    return {"dataset": name, "test_users": len(split), "models": rows}


def markdown(results: dict) -> str:
    lines = [
        "# Cold start: content and EGES recall",
        "",
        f"Generated by `bench/cold_start.py` on {platform.node() or 'this machine'} ({os.cpu_count()} cores, "
        f"torch threads 1), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Fit seconds are wall "
        "clock on a shared machine (CPU seconds beside them are the steadier figure).",
        "",
        "## Items with no interactions",
        "",
        "PROTOCOL.md's leave-last-one-out split; then every fit interaction of a random 5% of the catalog is "
        "hidden. HR@50 over the test targets that are hidden items (ranking over the whole catalog minus the "
        "user's own items); warm HR@50 is over the other test targets, for reference. Interaction-only "
        "channels (popularity, ItemCF) cannot score an item nobody touched: they get 0 by construction.",
        "",
    ]
    for r in results.get("cold_start", []):
        lines += [f"### {r['dataset']} (seeds {', '.join(map(str, r['seeds']))}; {r['cold_targets']} cold test targets in all; "
                  f"chance HR@50 = {r['chance_HR@50']:.4f})", "",
                  f"Hidden items are {100 * r['cold_share']:.0f}% of the catalog; the last column is the share of "
                  "an average top 50 they take (first seed): a channel that pushed every new item to everyone "
                  "would score cold hits without earning them.", "",
                  "| channel | cold HR@50 (pooled) | " + " | ".join(f"cold / warm HR@50, seed {x['seed']} ({x['cold_targets']} cold)" for x in r["runs"]) + " | hidden share of top 50 |",
                  "| --- | ---: | " + " | ".join("---:" for _ in r["runs"]) + " | ---: |"]
        for ch, v in r["pooled_cold_HR@50"].items():
            cells = " | ".join(f"{x['channels'][ch]['cold_HR@50']:.4f} / {x['channels'][ch]['warm_HR@50']:.4f}" for x in r["runs"])
            lines.append(f"| {ch} | {v:.4f} | {cells} | {r['runs'][0]['channels'][ch]['hidden_share_of_top50']:.3f} |")
        lines.append("")
    for r in results.get("protocol", []):
        lines += [f"## Stand-alone channels on the protocol: {r['dataset']} ({r['test_users']} test users)", "",
                  "Full ranking over fit-data items minus the user's own, no items hidden.", "",
                  "| channel | NDCG@10 | HR@10 | HR@50 | HR@200 | fit s (cpu s) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for label, m in r["models"].items():
            lines.append(f"| {label} | {m['NDCG@10']:.4f} | {m['HR@10']:.4f} | {m['HR@50']:.4f} | {m['HR@200']:.4f} | "
                         f"{m['fit_seconds']:.1f} ({m['fit_cpu_seconds']:.1f}) |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path(os.environ.get("RECFUNNEL_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--only", choices=sorted(DATASETS), action="append")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="hidden-item draws on ML-100K")
    ap.add_argument("--beauty-seeds", type=int, nargs="+", default=[0], help="hidden-item draws on Beauty (~1000 cold targets each)")
    ap.add_argument("--protocol", choices=sorted(DATASETS), action="append", help="stand-alone channel table (default: ml-100k)")
    ap.add_argument("--no-protocol", action="store_true")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"cold_start": [], "protocol": []}
    for name in args.only or list(DATASETS):
        path = args.data_root / DATASETS[name]
        if not path.exists():
            print(f"skip {name}: {path} not found", file=sys.stderr)
            continue
        ds = load_dataset(path)
        print(f"\n== cold start: {ds.describe()}", flush=True)
        seeds = args.beauty_seeds if name == "beauty" else args.seeds
        results["cold_start"].append(cold_start(name, ds, seeds, args.progress))
        if not args.no_protocol and name in (args.protocol or ["ml-100k"]):
            print(f"\n== stand-alone channels on the protocol: {name}", flush=True)
            results["protocol"].append(protocol(name, ds, args.progress))
    if not results["cold_start"]:
        print("no data set found; pass --data-root", file=sys.stderr)
        return 2
    (args.out / "cold_start.json").write_text(json.dumps(results, indent=2))
    (args.out / "cold_start.md").write_text(markdown(results))
    print(f"\nwrote {args.out / 'cold_start.json'} and cold_start.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
