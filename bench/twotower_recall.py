"""The neural two-tower channels (DSSM, YouTubeDNN, MIND) as stand-alone recommenders.

PROTOCOL.md split (leave-last-one-out by time); each channel is fitted on the fit data
(validation step for early stopping, then refit), asked for its top 200 per test user at
the time of the held-out event through `Source.retrieve` (the path the funnel serves),
items outside the fit data dropped (full ranking over fit-data items minus the user's own).
Popularity and the co-occurrence channel run in the same invocation for reference.
Writes bench/results/twotower_<dataset>.json and bench/results/twotower_recall.md.

Usage: python bench/twotower_recall.py [--data ../shared/data/ml-100k] [--only dssm,mind]
       [--set dssm.temperature=0.1 ...] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from config_override import override  # noqa: E402
from recfunnel.config import RecallConfig  # noqa: E402
from recfunnel.data.loaders import load_dataset  # noqa: E402
from recfunnel.data.split import leave_last_out  # noqa: E402
from recfunnel.evaluate.metrics import hit_rate, ndcg, target_ranks  # noqa: E402
from recfunnel.funnel import SOURCES  # noqa: E402
from recfunnel.query import QueryBatch, history_queries  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("popular", "cooccur", "dssm", "youtubednn", "mind")
K = 200


def run_channel(name: str, cfg, split) -> dict:  # noqa: ANN001
    fit = split.fit
    t = time.perf_counter()
    src = SOURCES[name](cfg).fit(fit)
    fit_s = time.perf_counter() - t
    batch = QueryBatch(history_queries(fit, split.users, split.ts), fit.n_items)
    t = time.perf_counter()
    top = src.retrieve(batch, K + 50).padded(K + 50)
    serve_ms = 1000 * (time.perf_counter() - t) / len(split)
    in_fit = np.concatenate([fit.item_user_count > 0, [False]])  # -1 padding -> last entry
    top = np.array([row[in_fit[row]][:K] for row in top])
    top = np.pad(top, ((0, 0), (0, K - top.shape[1])), constant_values=-1) if top.shape[1] < K else top
    ranks = target_ranks(top, split.items)
    row = {
        "NDCG@10": ndcg(ranks, 10),
        "HR@10": hit_rate(ranks, 10),
        "HR@50": hit_rate(ranks, 50),
        "HR@200": hit_rate(ranks, 200),
        "fit_seconds": fit_s,
        "retrieve_ms_per_query": serve_ms,
    }
    if name == "mind":  # diagnostic: the exact best-interest ranking instead of per-interest quotas
        from recfunnel.evaluate.ranking import full_ranking_topk

        exact = full_ranking_topk(lambda u: src.score(batch, slice(int(np.searchsorted(split.users, u[0])), int(np.searchsorted(split.users, u[0])) + len(u))),
                                  split.users, fit.user_item, 10, candidate_items=fit.item_user_count > 0)
        row["NDCG@10_max_over_interests"] = ndcg(target_ranks(exact, split.items), 10)
    report = getattr(src, "train_report", None)
    if report:
        row["best_epoch"] = report["best_epoch"]
        row["val_ndcg10"] = report["val_ndcg10"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--only", default=",".join(CHANNELS))
    ap.add_argument("--set", nargs="*", default=[], help="channel.field=value overrides (JSON values)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()

    ds = load_dataset(args.data)
    split = leave_last_out(ds)
    print(f"== {ds.describe()}; {len(split)} test users", flush=True)
    recall = RecallConfig()
    rows, configs = {}, {}
    for name in args.only.split(","):
        cfg = getattr(recall, name)
        for item in args.set:
            key, _, raw = item.partition("=")
            ch, _, field = key.partition(".")
            if ch == name:
                cfg = override(cfg, field, raw)
        if args.quiet and hasattr(cfg, "train"):
            cfg = override(cfg, "train.progress", "false")
        rows[name] = run_channel(name, cfg, split)
        configs[name] = cfg.model_dump(mode="json")
        r = rows[name]
        print(f"{name:11s} NDCG@10 {r['NDCG@10']:.4f} HR@10 {r['HR@10']:.4f} HR@50 {r['HR@50']:.4f} "
              f"HR@200 {r['HR@200']:.4f} fit {r['fit_seconds']:.1f}s "
              f"epochs {r.get('best_epoch', '-')} val {r.get('val_ndcg10', float('nan')):.4f} "
              f"serve {r['retrieve_ms_per_query']:.2f} ms/query"
              + (f" (max-over-interests NDCG@10 {r['NDCG@10_max_over_interests']:.4f})" if "NDCG@10_max_over_interests" in r else ""), flush=True)
    if args.no_write:
        return
    out = ROOT / "bench" / "results"
    name = Path(args.data).name
    result = {"dataset": name, "test_users": len(split), "k": K, "channels": rows, "configs": configs,
              "overrides": args.set, "machine": f"{platform.node()} ({os.cpu_count()} cores)",
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    path = out / f"twotower_{name}.json"
    if path.exists():  # channels run separately (in parallel) merge into one result
        old = json.loads(path.read_text())
        rows = {**old["channels"], **rows}
        configs = {**old["configs"], **configs}
        result.update(channels=rows, configs=configs, overrides=sorted(set(old.get("overrides", [])) | set(args.set)))
    path.write_text(json.dumps(result, indent=2))
    lines = [
        "# Two-tower recall channels as stand-alone recommenders",
        "",
        f"`bench/twotower_recall.py` on {name} ({len(split)} test users), PROTOCOL.md split, full ranking over "
        f"fit-data items minus the user's own, each channel's own top {K} through `Source.retrieve`. "
        f"{result['machine']}, {result['when']}. Fit time includes the validation run and the refit.",
        "",
        "| channel | NDCG@10 | HR@10 | HR@50 | HR@200 | fit s | best epoch | serve ms/query |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for ch in [c for c in CHANNELS if c in rows]:
        r = rows[ch]
        lines.append(f"| {ch} | {r['NDCG@10']:.4f} | {r['HR@10']:.4f} | {r['HR@50']:.4f} | {r['HR@200']:.4f} | "
                     f"{r['fit_seconds']:.1f} | {r.get('best_epoch', '-')} | {r['retrieve_ms_per_query']:.2f} |")
    (out / "twotower_recall.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
