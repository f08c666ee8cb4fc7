"""Tune a sequential channel (SASRec, GRU4Rec) on the validation step only.

PROTOCOL.md: the test step (each user's last interaction) is never looked at. The channel
is fitted on the fit data with `refit = false`, so it trains on the fit data minus each
user's last fit interaction and early stopping reads NDCG@10 of that validation step
(full ranking, on the channel's fixed sample of `train.eval_users` users); that best
validation NDCG@10, its epoch and the seconds per epoch are what this prints. Each run
appends one row to bench/results/sequential_tuning_<dataset>.json.

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

from recfunnel.config import load_config  # noqa: E402
from recfunnel.data.loaders import load_dataset  # noqa: E402
from recfunnel.data.split import leave_last_out  # noqa: E402
from recfunnel.funnel import SOURCES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _override(cfg, dotted: str, raw: str):  # noqa: ANN001, ANN202
    """cfg with the field at `dotted` (a.b.c) set to the JSON value `raw` (or the string)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    head, _, rest = dotted.partition(".")
    if rest:
        return cfg.model_copy(update={head: _override(getattr(cfg, head), rest, raw)})
    return type(cfg).model_validate({**cfg.model_dump(), head: value})


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
        cfg = _override(cfg, field, raw)
    cfg = _override(cfg, "train.refit", "false")
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
