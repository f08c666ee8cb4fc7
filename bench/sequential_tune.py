"""Tune a sequential channel (SASRec, GRU4Rec) on the validation step only.

PROTOCOL.md: the test step (each user's last interaction) is never looked at. The channel
is fitted on the fit data with `refit = false`, so it trains on the fit data minus each
user's last fit interaction and early stopping reads NDCG@10 of that validation step
(full ranking, on the channel's fixed sample of `train.eval_users` users); that best
validation NDCG@10, its epoch and the seconds per epoch are what this prints. Each run
appends one row to bench/results/sequential_tuning_<dataset>.json and rewrites
bench/results/sequential_tuning.md from all such files.

Usage: python bench/sequential_tune.py [--data ../shared/data/amazon-beauty-s3rec]
       [--channel sasrec] [--config configs/beauty.toml] [--set dropout=0.5 --set train.learning_rate=0.002 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

from config_override import override  # noqa: E402
from recfunnel.config import load_config  # noqa: E402
from recfunnel.data.loaders import load_dataset  # noqa: E402
from recfunnel.data.split import leave_last_out  # noqa: E402
from recfunnel.funnel import SOURCES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# What "SASRec with a cross-entropy loss, tuned" reaches on the same data and protocol.
REFERENCE = """\
Published reference for Beauty (the S3Rec version: 22,363 users, 12,101 items, 198,502
interactions, our `amazon-beauty-s3rec`), leave-one-out (last item test, second-to-last
validation), full ranking over all items: the eSASRec paper (arXiv 2508.06450, RecSys 2025;
table "Common academic benchmarks" in github.com/blondered/transformer_benchmark) reports

| model | R@10 | N@10 |
| --- | ---: | ---: |
| SASRec as reported by earlier papers (e.g. TIGER; the original binary loss) | 0.0605 | 0.0318 |
| SASRec+SS (sampled softmax, 256 negatives; their run) | 0.0921 | 0.0531 |
| eSASRec (their best) | 0.0928 | 0.0523 |

with, for Beauty, 64 dims, 1 block, 1 head, dropout 0.2, max_len 50, lr 0.001, early
stopping on validation. (Klenitskiy & Vasilev 2023, arXiv 2309.07602, measure SASRec+ on
the BERT4Rec version of Beauty, a different, larger item set, so their numbers do not
compare directly.)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "amazon-beauty-s3rec")
    ap.add_argument("--channel", default="sasrec", choices=["sasrec", "gru4rec"])
    ap.add_argument("--config", type=Path, help="TOML overriding the packaged defaults (e.g. configs/beauty.toml)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", help="config override, e.g. train.epochs=40")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    split = leave_last_out(ds)  # the test step is held out here and never used below
    cfg = getattr(load_config(args.config).recall, args.channel).model_copy(deep=True)
    for item in args.set:
        field, _, raw = item.partition("=")
        cfg = override(cfg, field, raw)
    cfg = override(cfg, "train.refit", "false")
    cfg.enabled = True
    t = time.perf_counter()
    src = SOURCES[args.channel](cfg).fit(split.fit)
    secs = time.perf_counter() - t
    rep = src.train_report
    epochs_run = rep["history"][-1][0] if rep["history"] else 0
    row = {
        "channel": args.channel,
        "config": args.config.name if args.config else None,
        "settings": args.set,
        "val_ndcg10": rep["val_ndcg10"],
        "best_epoch": rep["best_epoch"],
        "epochs_run": epochs_run,
        "seconds": secs,
        "seconds_per_epoch": secs / max(epochs_run, 1),
        "history": rep["history"],
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
    print("history:", " ".join(f"{e}:{s:.4f}" for e, s in rep["history"]), flush=True)
    path = args.out / f"sequential_tuning_{args.data.name}.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(rows + [row], indent=2))
    (args.out / "sequential_tuning.md").write_text(markdown(args.out))
    return 0


def markdown(out: Path) -> str:
    lines = [
        "# Sequential channels: tuning on the validation step",
        "",
        "Rows from `bench/sequential_tune.py` (no refit; val NDCG@10 = the validation step, i.e. each "
        "user's last fit interaction, full ranking, on the channel's early-stopping sample of users; "
        "the test step is never read). Seconds are wall time on a 2-core machine shared with other jobs.",
        "",
    ]
    for path in sorted(out.glob("sequential_tuning_*.json")):
        lines += [f"## {path.stem.removeprefix('sequential_tuning_')}", "",
                  "| channel | config | settings | val NDCG@10 | best epoch | epochs run | s/epoch |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
        for r in json.loads(path.read_text()):
            lines.append(f"| {r['channel']} | {r.get('config') or 'defaults'} | {', '.join(r['settings'])} | "
                         f"{r['val_ndcg10']:.4f} | {r['best_epoch']} | {r['epochs_run']} | {r['seconds_per_epoch']:.1f} |")
        lines.append("")
    return "\n".join(lines + [REFERENCE])


if __name__ == "__main__":
    raise SystemExit(main())
