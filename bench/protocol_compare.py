"""The funnel, each recall channel alone, implicit and torch-rechub, on PROTOCOL.md's split.

For each data set, in one invocation on the identical split:

- implicit 0.7.3: popularity, ItemKNN (BM25, K=100), ALS (128 factors, 20 iterations),
  BPR (128 factors, 100 iterations), full ranking;
- every recall channel in `recfunnel.funnel.SOURCES` as a stand-alone recommender (its
  top 200 for each test user; HR@50, HR@200, NDCG@10, fit time), so channels added later
  appear here without touching this script;
- torch-rechub 0.9.0's DSSM, YoutubeDNN, MIND and SASRec (`bench/rechub_baselines.py`);
- the funnel with its LightGBM ranker and, for reference, with no ranker (merged recall
  order), on the default config;
- the funnel with every channel enabled ("all channels": embedding channels included).

Floors checked (each pass/fail is in the JSON and the Markdown):

- the default funnel's final NDCG@10 beats the best implicit model's by at least 10%;
- its merged pool of 500 has a higher HR than the best implicit model's top 500;
- our best single channel beats the best torch-rechub model, on NDCG@10 and on HR@50;
- the all-channels funnel's final NDCG@10 is >= 0.09 on ML-100K and >= 0.05 on Beauty.

Each part can be run alone; results merge into bench/results/<dataset>.json (a part not
run keeps its previous numbers, with the time it was measured), and the Markdown and
plot are rebuilt from all data sets' JSON files.

Usage:
  python bench/protocol_compare.py [--data-root ../shared/data] [--datasets ml-100k beauty]
      [--channels itemcf,sasrec] [--skip-channels node2vec] [--rechub-models dssm,sasrec]
      [--skip-implicit] [--skip-channel-table] [--skip-rechub] [--skip-funnel]
      [--skip-all-channels] [--max-epochs N] [--config configs/beauty.toml]

`--config` reads the channels' (and the funnel's) settings from a TOML file that overrides
the packaged defaults (fields left out keep them); rows measured with one say so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # LightGBM's idle threads must not spin on a shared machine

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recfunnel.config import FunnelConfig, load_config  # noqa: E402
from recfunnel.data.loaders import load_dataset  # noqa: E402
from recfunnel.data.split import Split, leave_last_out  # noqa: E402
from recfunnel.evaluate.baselines import run_implicit  # noqa: E402
from recfunnel.evaluate.metrics import summarize  # noqa: E402
from recfunnel.evaluate.protocol import evaluate  # noqa: E402
from recfunnel.evaluate.report import write_report  # noqa: E402
from recfunnel.funnel import BATCH, SOURCES  # noqa: E402
from recfunnel.query import QueryBatch, history_queries  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"ml-100k": "ml-100k", "beauty": "amazon-beauty-s3rec"}
IMPLICIT = ("popularity", "itemknn_bm25", "als", "bpr")
CHANNEL_K = 200  # each channel alone: its top 200
ALL_CHANNELS_FLOOR = {"ml-100k": 0.09, "beauty": 0.05}


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def _cap_epochs(cfg: Any, max_epochs: int | None) -> bool:
    """Cap a channel config's training epochs (those with a `train` section); True if capped."""
    train = getattr(cfg, "train", None)
    if max_epochs is None or train is None or not hasattr(train, "epochs"):
        return False
    if train.epochs > max_epochs:
        train.epochs = max_epochs
        return True
    return False


def _channel_config(base: FunnelConfig, name: str) -> Any:
    cfg = getattr(base.recall, name, None)
    return SOURCES[name].Config() if cfg is None else cfg.model_copy(deep=True)


# ---- parts ---------------------------------------------------------------------------
def run_implicit_part(split: Split) -> dict[str, dict]:
    rows = {}
    for model in IMPLICIT:
        r = run_implicit(split, model)
        m = r["metrics"]
        rows[model] = {**m, "fit_seconds": r["fit_seconds"], "predict_seconds": r["predict_seconds"]}
        print(f"{model:14s} HR@10 {m['HR@10']:.4f} NDCG@10 {m['NDCG@10']:.4f} HR@50 {m['HR@50']:.4f} "
              f"HR@200 {m['HR@200']:.4f} HR@500 {m['HR@500']:.4f} fit {r['fit_seconds']:.1f}s", flush=True)
    return rows


def run_channel(split: Split, name: str, max_epochs: int | None, k: int = CHANNEL_K, config: Path | None = None) -> dict:
    """One recall channel as the whole recommender: its top k for every test user."""
    cfg = _channel_config(load_config(config), name)
    cfg.enabled = True
    cfg.quota = k
    capped = _cap_epochs(cfg, max_epochs)
    fit = split.fit
    torch.set_num_threads(1)
    t = time.perf_counter()
    src = SOURCES[name](cfg).fit(fit)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    queries = history_queries(fit, split.users, split.ts)
    tops = [src.retrieve(QueryBatch(queries[i : i + BATCH], fit.n_items), k).padded(k) for i in range(0, len(queries), BATCH)]
    predict_s = time.perf_counter() - t
    m = summarize(np.concatenate(tops), split.items, fit.item_categories, fit.item_user_count, fit.n_users, fit.n_items)
    out = {**m, "fit_seconds": fit_s, "predict_seconds": predict_s, "measured": _now()}
    if capped:
        out["epochs_cap"] = max_epochs
    if config is not None:
        out["config"] = config.name
    report = getattr(src, "train_report", None)
    if report:
        out["best_epoch"] = report.get("best_epoch")
        if report.get("val_ndcg10") is not None:
            out["val_ndcg10"] = report["val_ndcg10"]
    return out


def run_channels_part(split: Split, names: list[str], max_epochs: int | None, done: dict, config: Path | None = None) -> dict:
    for name in names:
        r = run_channel(split, name, max_epochs, config=config)
        done[name] = r
        print(f"channel {name:14s} HR@50 {r['HR@50']:.4f} HR@200 {r['HR@200']:.4f} NDCG@10 {r['NDCG@10']:.4f} "
              f"fit {r['fit_seconds']:.1f}s" + (f" (epochs capped at {max_epochs})" if "epochs_cap" in r else ""), flush=True)
    return done


def run_rechub_part(split: Split, models: list[str], max_epochs: int | None, done: dict) -> dict:
    from rechub_baselines import DEFAULTS, rechub_version, run_rechub

    for model in models:
        settings = {}
        if max_epochs is not None and DEFAULTS[model].epochs > max_epochs:
            settings["epochs"] = max_epochs
        r = run_rechub(split, model, settings=settings)
        m = r["metrics"]
        done[model] = {**m, "fit_seconds": r["fit_seconds"], "predict_seconds": r["predict_seconds"],
                       "best_epoch": r["best_epoch"], "val_history": r["val_history"], "settings": r["settings"],
                       "measured": _now(), **({"epochs_cap": max_epochs} if settings else {})}
        print(f"rechub {model:11s} HR@50 {m['HR@50']:.4f} HR@200 {m['HR@200']:.4f} NDCG@10 {m['NDCG@10']:.4f} "
              f"best epoch {r['best_epoch']} fit {r['fit_seconds']:.1f}s", flush=True)
    return {"version": rechub_version(), "models": done}


def _bench_config(threads: int, config: Path | None = None) -> FunnelConfig:
    """The packaged default config (or `config`), with the ranker's thread count set for this machine."""
    cfg = load_config(config)
    cfg.rank.lightgbm.threads = threads
    return cfg


def run_funnel_part(ds, split: Split, name: str, out: Path, threads: int, config: Path | None = None) -> tuple[dict, dict, dict]:
    cfg = _bench_config(threads, config)
    runs, rows = {}, {}
    for label, rank in (("funnel (lightgbm)", "lightgbm"), ("funnel (recall order)", "none")):
        c = cfg.model_copy(deep=True)
        c.rank.model = rank  # type: ignore[assignment]
        t = time.perf_counter()
        ev = evaluate(ds, c, progress=True, split=split)
        wall = time.perf_counter() - t
        r = ev.result
        runs[label] = r
        rows[label] = {**r["final"], "pool_HR@500": r["pool"]["HR"], "wall_seconds": wall}
        print(f"{label:22s} HR@10 {r['final']['HR@10']:.4f} NDCG@10 {r['final']['NDCG@10']:.4f} "
              f"pool HR@{r['pool']['size']} {r['pool']['HR']:.4f} wall {wall:.1f}s", flush=True)
        if rank == "lightgbm":
            write_report(r, out / f"{name}-funnel", ev.curves, ev.funnel_shares)
    return rows, runs["funnel (lightgbm)"], runs["funnel (recall order)"]


def run_all_channels_part(ds, split: Split, skip: set[str], max_epochs: int | None, threads: int, config: Path | None = None) -> dict:
    """The default funnel with every configured channel switched on (minus `skip`)."""
    cfg = _bench_config(threads, config)
    enabled, capped = [], []
    for name in SOURCES:
        sub = getattr(cfg.recall, name, None)
        if sub is None:
            continue
        sub.enabled = name not in skip
        if sub.enabled:
            enabled.append(name)
            if _cap_epochs(sub, max_epochs):
                capped.append(name)
    t = time.perf_counter()
    ev = evaluate(ds, cfg, progress=True, split=split)
    wall = time.perf_counter() - t
    r = ev.result
    print(f"funnel (all channels)  HR@10 {r['final']['HR@10']:.4f} NDCG@10 {r['final']['NDCG@10']:.4f} "
          f"pool HR@{r['pool']['size']} {r['pool']['HR']:.4f} wall {wall:.1f}s", flush=True)
    return {**r, "enabled": enabled, "skipped": sorted(skip & set(SOURCES)), "epochs_capped": capped,
            "epochs_cap": max_epochs if capped else None, "wall_seconds": wall, "measured": _now(),
            **({"config": config.name} if config is not None else {})}


# ---- floors --------------------------------------------------------------------------
def floors(name: str, res: dict) -> dict:
    out: dict[str, dict] = {}
    rows = res.get("models", {})
    ours = res.get("funnel")
    if ours and all(m in rows for m in IMPLICIT):
        best_ndcg = max(IMPLICIT, key=lambda m: rows[m]["NDCG@10"])
        best_hr = max(IMPLICIT, key=lambda m: rows[m]["HR@500"])
        out["ndcg_vs_best_implicit"] = {
            "ours": ours["final"]["NDCG@10"], "best": rows[best_ndcg]["NDCG@10"], "best_model": best_ndcg,
            "ratio": ours["final"]["NDCG@10"] / rows[best_ndcg]["NDCG@10"],
            "pass": ours["final"]["NDCG@10"] >= 1.10 * rows[best_ndcg]["NDCG@10"],
        }
        out["pool500_vs_best_implicit_top500"] = {
            "ours": ours["pool"]["HR"], "best": rows[best_hr]["HR@500"], "best_model": best_hr,
            "pass": ours["pool"]["HR"] > rows[best_hr]["HR@500"],
        }
    channels = res.get("channels_standalone", {})
    rechub = res.get("rechub", {}).get("models", {})
    if channels and rechub:
        for metric in ("NDCG@10", "HR@50"):
            ch = max(channels, key=lambda n: channels[n][metric])
            rb = max(rechub, key=lambda n: rechub[n][metric])
            out[f"best_channel_vs_best_rechub_{metric}"] = {
                "ours": channels[ch][metric], "best_channel": ch,
                "best": rechub[rb][metric], "best_model": rb,
                "pass": channels[ch][metric] > rechub[rb][metric],
            }
    allc = res.get("funnel_all_channels")
    if allc and name in ALL_CHANNELS_FLOOR:
        out["all_channels_final_ndcg10"] = {
            "ours": allc["final"]["NDCG@10"], "floor": ALL_CHANNELS_FLOOR[name],
            "pass": allc["final"]["NDCG@10"] >= ALL_CHANNELS_FLOOR[name],
        }
    return out


# ---- one data set --------------------------------------------------------------------
def run_dataset(name: str, path: Path, out: Path, args: argparse.Namespace) -> dict:
    ds = load_dataset(path)
    split = leave_last_out(ds)
    print(f"\n== {ds.describe()}; {len(split)} test users", flush=True)
    json_path = out / f"{name}.json"
    mine: dict[str, Any] = {"dataset": name, "path": str(path), "test_users": len(split)}

    def save() -> dict:
        """Merge what this run measured into the file as it is now, write it, return it.

        After each part, so a long run that dies keeps what it measured; merging into a
        fresh read lets runs of different parts of one data set go on side by side.
        """
        disk = json.loads(json_path.read_text()) if json_path.exists() else {}
        for key, val in mine.items():
            if key in ("models", "channels_standalone"):
                disk[key] = {**disk.get(key, {}), **val}
            elif key == "rechub":
                disk[key] = {**val, "models": {**disk.get(key, {}).get("models", {}), **val["models"]}}
            else:
                disk[key] = val
        disk["floors"] = floors(name, disk)
        json_path.write_text(json.dumps(disk, indent=2))
        return disk

    if not args.skip_implicit:
        mine.setdefault("models", {}).update(run_implicit_part(split))
        mine["implicit_measured"] = _now()
        save()
    skip = set(args.skip_channels)
    if not args.skip_channel_table:
        names = [n for n in (args.channels or list(SOURCES)) if n not in skip]
        mine["channels_standalone"] = {}
        for n in names:  # save after every channel: the slow ones come last
            run_channels_part(split, [n], args.max_epochs, mine["channels_standalone"], args.config)
            save()
    if not args.skip_rechub:
        models = args.rechub_models or ["dssm", "youtubednn", "mind", "sasrec"]
        mine["rechub"] = {"version": None, "models": {}}
        for m in models:
            mine["rechub"] = run_rechub_part(split, [m], args.max_epochs, mine["rechub"]["models"])
            save()
    if not args.skip_funnel:
        frows, lgbm, order = run_funnel_part(ds, split, name, out, args.threads, args.config)
        mine.setdefault("models", {}).update(frows)
        mine["funnel"], mine["funnel_recall_order"] = lgbm, order
        mine["funnel_measured"] = _now()
        save()
    if not args.skip_all_channels:
        mine["funnel_all_channels"] = run_all_channels_part(ds, split, skip, args.max_epochs, args.threads, args.config)
    return save()


# ---- report --------------------------------------------------------------------------
def _f(x: Any, nd: int = 4) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def markdown(results: list[dict]) -> str:
    lines = [
        "# Protocol comparison: recfunnel vs implicit 0.7.3 and torch-rechub 0.9.0",
        "",
        "Leave-last-one-out by time, full ranking over fit-data items minus the user's own, "
        "no sampled negatives (`../shared/PROTOCOL.md`). All rows of one data set are measured "
        "on the identical split by `bench/protocol_compare.py` (parts can be rerun alone; each "
        "part's time is in `<dataset>.json`). Written on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} cores, shared), {_now()}. "
        "Fit times are wall seconds on a busy 2-core machine (one torch thread, LightGBM ranker "
        "on one thread): compare them as ratios within a table.",
        "",
    ]
    for r in results:
        lines += [f"## {r['dataset']} ({r['test_users']} test users)", ""]
        rows = r.get("models", {})
        if rows:
            lines += [
                "| model | HR@10 | NDCG@10 | MRR@10 | HR@500 (funnel: merged pool of 500) | coverage@10 | ILD@10 | novelty@10 | seconds |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for model, m in rows.items():
                hr500 = m.get("HR@500", m.get("pool_HR@500"))
                secs = m.get("wall_seconds", m.get("fit_seconds", 0) + m.get("predict_seconds", 0))
                lines.append(
                    f"| {model} | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} | {m['MRR@10']:.4f} | {hr500:.4f} | "
                    f"{m['coverage@10']:.4f} | {m['ILD@10']:.4f} | {m['novelty@10']:.3f} | {secs:.1f} |"
                )
            lines.append("")
        lines += _standalone_table(r)
        f = r.get("funnel")
        if f:
            when = r.get("funnel_measured", "in an earlier run of this script")
            lines += [f"Default funnel (measured {when}), per channel (HR at its quota) and per stage:", "",
                      "| stage | HR |", "| --- | ---: |"]
            for ch, v in f["channels"].items():
                lines.append(f"| recall: {ch} (quota {v['quota']}) | {v['HR']:.4f} |")
            lines.append(f"| merged pool ({f['pool']['size']}) | {f['pool']['HR']:.4f} |")
            for k, v in f["ranked"].items():
                lines.append(f"| ranked {k} | {v:.4f} |")
            lines += [f"| final HR@10 | {f['final']['HR@10']:.4f} |", f"| final NDCG@10 | {f['final']['NDCG@10']:.4f} |", ""]
        a = r.get("funnel_all_channels")
        if a:
            cap = f"; neural channels' epochs capped at {a['epochs_cap']} ({', '.join(a['epochs_capped'])})" if a.get("epochs_capped") else ""
            skipped = f"; left out: {', '.join(a['skipped'])}" if a.get("skipped") else ""
            skipped += f"; settings from `configs/{a['config']}`" if a.get("config") else ""
            lines += [f"All channels enabled (LightGBM ranker; {len(a['enabled'])} channels{skipped}{cap}; "
                      f"wall {a['wall_seconds']:.0f} s, measured {a['measured']}):", "",
                      "| stage | HR |", "| --- | ---: |"]
            for ch, v in a["channels"].items():
                lines.append(f"| recall: {ch} (quota {v['quota']}) | {v['HR']:.4f} |")
            lines.append(f"| merged pool ({a['pool']['size']}) | {a['pool']['HR']:.4f} |")
            for k, v in a["ranked"].items():
                lines.append(f"| ranked {k} | {v:.4f} |")
            lines += [f"| final HR@10 | {a['final']['HR@10']:.4f} |", f"| final NDCG@10 | {a['final']['NDCG@10']:.4f} |", ""]
        if not a:
            lines += ["The all-channels funnel was not measured on this data set (too slow for the run that made "
                      "this file; a run without `--skip-all-channels` measures it).", ""]
        lines += _floor_lines(r.get("floors", {}))
        if f:
            lines += [f"![{r['dataset']} funnel report]({r['dataset']}-funnel/report.png)", ""]
    lines += ["![NDCG@10 by model](protocol_compare.png)", ""]
    return "\n".join(lines)


def _standalone_table(r: dict) -> list[str]:
    channels = r.get("channels_standalone", {})
    rechub = r.get("rechub", {}).get("models", {})
    rows = r.get("models", {})
    if not channels and not rechub:
        return []
    out = [
        "Each recall channel as a stand-alone recommender (its top 200), next to implicit and "
        f"torch-rechub {r.get('rechub', {}).get('version') or '0.9.0'} (`bench/rechub_baselines.py`) on the same split. "
        "Fit seconds include validation-based epoch selection and the refit for the neural models.",
        "",
        "| source | model | HR@50 | HR@200 | NDCG@10 | fit s | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, m in channels.items():
        note = []
        if m.get("epochs_cap"):
            note.append(f"epochs capped at {m['epochs_cap']}")
        if m.get("best_epoch"):
            note.append(f"best epoch {m['best_epoch']}")
        if m.get("config"):
            note.append(f"settings from `configs/{m['config']}`")
        out.append(f"| recfunnel channel | {name} | {_f(m.get('HR@50'))} | {_f(m.get('HR@200'))} | {_f(m['NDCG@10'])} | "
                   f"{m['fit_seconds']:.1f} | {'; '.join(note)} |")
    for name in IMPLICIT:
        if name in rows:
            m = rows[name]
            out.append(f"| implicit 0.7.3 | {name} | {_f(m.get('HR@50'))} | {_f(m.get('HR@200'))} | {_f(m['NDCG@10'])} | {m['fit_seconds']:.1f} | |")
    for name, m in rechub.items():
        note = [f"best epoch {m['best_epoch']}"]
        if m.get("epochs_cap"):
            note.append(f"epochs capped at {m['epochs_cap']}")
        out.append(f"| torch-rechub | {name} | {_f(m.get('HR@50'))} | {_f(m.get('HR@200'))} | {_f(m['NDCG@10'])} | "
                   f"{m['fit_seconds']:.1f} | {'; '.join(note)} |")
    missing = [n for n in SOURCES if n not in channels]
    if missing:
        out += ["", f"Channels not measured alone on this data set (too slow for the run that made this file; "
                f"`--channels {','.join(missing)}` measures them): {', '.join(missing)}."]
    missing = [n for n in ("dssm", "youtubednn", "mind", "sasrec") if n not in rechub]
    if missing:
        out += ["", f"torch-rechub models not measured on this data set in that run: {', '.join(missing)} "
                f"(`--rechub-models {','.join(missing)}`)."]
    return out + [""]


def _floor_lines(fl: dict) -> list[str]:
    if not fl:
        return []
    out = ["Floors:", ""]

    def mark(ok: bool) -> str:
        return "**pass**" if ok else "**FAIL**"

    if "ndcg_vs_best_implicit" in fl:
        a = fl["ndcg_vs_best_implicit"]
        out.append(f"- default funnel final NDCG@10 {a['ours']:.4f} vs best implicit ({a['best_model']}) {a['best']:.4f} "
                   f"= {a['ratio']:.2f}x, needs >= 1.10x: {mark(a['pass'])}")
    if "pool500_vs_best_implicit_top500" in fl:
        b = fl["pool500_vs_best_implicit_top500"]
        out.append(f"- merged pool HR@500 {b['ours']:.4f} vs best implicit top-500 ({b['best_model']}) {b['best']:.4f}: {mark(b['pass'])}")
    for metric in ("NDCG@10", "HR@50"):
        c = fl.get(f"best_channel_vs_best_rechub_{metric}")
        if c:
            out.append(f"- best single channel ({c['best_channel']}) {metric} {c['ours']:.4f} vs best torch-rechub model "
                       f"({c['best_model']}) {c['best']:.4f}: {mark(c['pass'])}")
    if "all_channels_final_ndcg10" in fl:
        d = fl["all_channels_final_ndcg10"]
        out.append(f"- all-channels funnel final NDCG@10 {d['ours']:.4f}, needs >= {d['floor']}: {mark(d['pass'])}")
    return out + [""]


def plot(results: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 7), squeeze=False)
    for ax, r in zip(axes[0], results):
        vals: dict[str, tuple[float, str]] = {}
        for n, m in r.get("models", {}).items():
            vals[n] = (m["NDCG@10"], "#4c72b0" if n.startswith("funnel") else "#999999")
        if r.get("funnel_all_channels"):
            vals["funnel (all channels)"] = (r["funnel_all_channels"]["final"]["NDCG@10"], "#4c72b0")
        for n, m in r.get("channels_standalone", {}).items():
            vals[f"channel: {n}"] = (m["NDCG@10"], "#55a868")
        for n, m in r.get("rechub", {}).get("models", {}).items():
            vals[f"rechub: {n}"] = (m["NDCG@10"], "#c44e52")
        names = list(vals)
        ax.barh(names, [vals[n][0] for n in names], color=[vals[n][1] for n in names])
        ax.set_title(f"{r['dataset']}: NDCG@10")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
        for y, n in enumerate(names):
            ax.text(vals[n][0], y, f" {vals[n][0]:.3f}", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _names(text: str | None) -> list[str]:
    return [t for t in (text or "").replace(" ", ",").split(",") if t]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path(os.environ.get("RECFUNNEL_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), help="data sets to run (default: all)")
    ap.add_argument("--only", choices=sorted(DATASETS), action="append", help="same as --datasets (kept for old commands)")
    ap.add_argument("--channels", type=_names, help="comma-separated channels for the stand-alone table (default: all of SOURCES)")
    ap.add_argument("--skip-channels", type=_names, default=[], help="channels left out of the stand-alone table and the all-channels funnel")
    ap.add_argument("--rechub-models", type=_names, help="torch-rechub models to run (default: dssm,youtubednn,mind,sasrec)")
    ap.add_argument("--max-epochs", type=int, help="cap training epochs of neural channels and torch-rechub models (slow data sets)")
    for part in ("implicit", "channel-table", "rechub", "funnel", "all-channels"):
        ap.add_argument(f"--skip-{part}", action="store_true", help=f"do not rerun the {part} part (its previous numbers stay)")
    ap.add_argument("--config", type=Path, help="TOML overriding the packaged default settings (e.g. configs/beauty.toml)")
    ap.add_argument("--threads", type=int, default=1, help="LightGBM ranker threads (default 1: the bench machine is shared)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    unknown = [c for c in (args.channels or []) + args.skip_channels if c not in SOURCES]
    if unknown:
        ap.error(f"unknown channels {unknown}; known: {sorted(SOURCES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = args.datasets or args.only or list(DATASETS)
    ran = []
    for name in wanted:
        path = args.data_root / DATASETS[name]
        if not path.exists():
            print(f"skip {name}: {path} not found", file=sys.stderr)
            continue
        ran.append(run_dataset(name, path, args.out, args))
    if not ran:
        print("no data set found; pass --data-root", file=sys.stderr)
        return 2
    results = [json.loads((args.out / f"{n}.json").read_text()) for n in DATASETS if (args.out / f"{n}.json").exists()]
    (args.out / "protocol_compare.md").write_text(markdown(results))
    plot(results, args.out / "protocol_compare.png")
    fl = {f"{r['dataset']}: {k}": v["pass"] for r in ran for k, v in r["floors"].items()}
    for k, ok in fl.items():
        print(f"floor {k}: {'pass' if ok else 'FAIL'}")
    ok = all(fl.values())
    print("\nfloors:", "all pass" if ok else "SOME FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
