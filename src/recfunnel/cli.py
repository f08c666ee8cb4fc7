"""The `recfunnel` command: data, evaluate, build, recommend, demo."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from recfunnel.config import FunnelConfig, default_config_path, load_config
from recfunnel.data.download import download, resolve_data_dir
from recfunnel.data.loaders import load_dataset
from recfunnel.data.validation import DataError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Fetch and inspect data sets.")
app.add_typer(data_app, name="data")
console = Console()

RANKERS = ("lightgbm", "lr", "fm", "ffm", "gbdt_lr", "widedeep", "deepfm", "din", "dien", "shared_bottom", "mmoe", "none")
RERANK_PRESETS = ("default", "none", "mmr", "dpp")  # = recfunnel.rerank.config.PRESETS


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=2)


def _load(data: Optional[Path], fmt: Optional[str] = None):
    where = resolve_data_dir(str(data) if data else None)
    if where is None:
        _fail(
            "no data set given: pass --data DIR, set RECFUNNEL_DATA, or run "
            "`recfunnel data download ml-100k`"
        )
    try:
        ds = load_dataset(where, fmt=fmt)
    except DataError as e:
        _fail(str(e))
    if ds.report.n_dropped:
        console.print(f"[yellow]{ds.report.n_dropped} bad rows dropped[/yellow]")
        console.print(ds.report.summary())
    return ds


def _config(config: Optional[Path], rank: Optional[str], rerank: Optional[str]) -> FunnelConfig:
    try:
        cfg = load_config(config)
    except (OSError, ValueError) as e:
        _fail(str(e))
    if rank is not None:
        if rank not in RANKERS:
            _fail(f"unknown ranker '{rank}'; choose one of {', '.join(RANKERS)}")
        cfg.rank.model = rank  # type: ignore[assignment]
    if rerank is not None:
        if rerank not in RERANK_PRESETS:
            _fail(f"unknown re-rank preset '{rerank}'; choose one of {', '.join(RERANK_PRESETS)}")
        cfg.rerank.preset = rerank
    return cfg


@data_app.command("download")
def data_download(
    name: str = typer.Argument("ml-100k", help="data set to fetch (ml-100k)"),
    dest: Optional[Path] = typer.Option(None, help="where to unpack (default ~/.cache/recfunnel)"),
) -> None:
    """Download a public data set, check its sha256 and unpack it."""
    try:
        path = download(name, dest)
    except DataError as e:
        _fail(str(e))
    console.print(f"unpacked to {path}")


@data_app.command("info")
def data_info(
    data: Optional[Path] = typer.Option(None, "--data", help="data directory (else RECFUNNEL_DATA)"),
    fmt: Optional[str] = typer.Option(None, "--format", help="override format detection"),
) -> None:
    """Load a data set, validate it and describe it."""
    ds = _load(data, fmt)
    console.print(ds.describe())
    console.print(ds.report.summary())


@app.command()
def evaluate(
    data: Optional[Path] = typer.Option(None, "--data", help="data directory (else RECFUNNEL_DATA)"),
    config: Optional[Path] = typer.Option(None, "--config", help="funnel TOML (default: packaged)"),
    rank: Optional[str] = typer.Option(None, "--rank", help=f"ranker: {', '.join(RANKERS)}"),
    rerank: Optional[str] = typer.Option(None, "--rerank", help=f"re-rank preset: {', '.join(RERANK_PRESETS)}"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the numbers as JSON"),
    report: Optional[Path] = typer.Option(None, "--report", help="folder for report.md and report.png"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Fit the funnel on the protocol's fit data and measure every stage."""
    from recfunnel.evaluate.protocol import evaluate as run_evaluation
    from recfunnel.evaluate.report import format_table, write_report

    ds = _load(data)
    cfg = _config(config, rank, rerank)
    console.print(ds.describe())
    ev = run_evaluation(ds, cfg, progress=not quiet)
    console.print(format_table(ev.result))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(ev.result, indent=2))
        console.print(f"wrote {json_path}")
    out = report or (json_path.parent if json_path else None)
    if out:
        md = write_report(ev.result, out, ev.curves, ev.funnel_shares)
        console.print(f"wrote {md} and its plot")


@app.command("build")
def build_cmd(
    data: Optional[Path] = typer.Option(None, "--data", help="data directory (else RECFUNNEL_DATA)"),
    out: Path = typer.Option(Path("artifacts"), "--out", help="artifact root; a new version goes inside"),
    config: Optional[Path] = typer.Option(None, "--config", help="funnel TOML (default: packaged)"),
    evaluate_first: bool = typer.Option(True, "--evaluate/--no-evaluate", help="record protocol metrics in the manifest"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Train every stage on all the data and publish a versioned artifact set."""
    from recfunnel.build import build
    from recfunnel.evaluate.protocol import evaluate as run_evaluation

    ds = _load(data)
    cfg = _config(config, None, None)
    metrics = None
    if evaluate_first:
        metrics = run_evaluation(ds, cfg, progress=not quiet).result
    d = build(ds, cfg, out, metrics=metrics, progress=not quiet)
    console.print(f"published {d.name} -> {out / 'current'}")


@app.command()
def recommend(
    user: str = typer.Option(..., "--user", help="raw user id (unknown ids get the cold-start path)"),
    artifacts: Path = typer.Option(Path("artifacts"), "--artifacts", help="artifact root or version"),
    n: int = typer.Option(10, "--n", min=1, max=500),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Recommend for one user from a published artifact set."""
    from recfunnel.artifacts import ArtifactError
    from recfunnel.runtime import Recommender

    try:
        rec = Recommender(artifacts)
    except ArtifactError as e:
        _fail(str(e))
    recs = rec.recommend(user, n=n)
    if as_json:
        print(json.dumps([r.as_dict() for r in recs], indent=2))
        return
    _print_recs(rec, user, recs)


def _print_recs(rec, user: str, recs) -> None:  # noqa: ANN001
    _, hist, _ = rec.history(user)
    last = ", ".join(rec.titles[i] for i in hist[-3:]) if len(hist) else "(new user)"
    t = Table(title=f"user {user} - last seen: {last}")
    t.add_column("#", justify="right")
    t.add_column("item")
    t.add_column("score", justify="right")
    t.add_column("found by")
    t.add_column("re-rank")
    for k, r in enumerate(recs, 1):
        moved = "" if r.rank_before_rerank == k - 1 else f"moved from #{r.rank_before_rerank + 1} (re-rank rules)"
        t.add_row(str(k), f"{r.title or r.item}", f"{r.score:.3f}", ", ".join(r.channels), moved)
    console.print(t)


@app.command()
def config(
    path: Optional[Path] = typer.Argument(None, help="a TOML file to validate (default: print the packaged one)"),
) -> None:
    """Print the default funnel config, or validate one."""
    if path is None:
        print(default_config_path().read_text())
        return
    try:
        FunnelConfig.from_toml(path)
    except (OSError, ValueError) as e:
        _fail(str(e))
    console.print(f"{path}: valid")


@app.command()
def demo(
    data: Optional[Path] = typer.Option(None, "--data", help="data directory (default: shared ML-100K, else a downloaded copy, else synthetic)"),
    out: Path = typer.Option(Path("artifacts"), "--out"),
    users: int = typer.Option(3, "--users", help="how many users to show recommendations for"),
    serve_after: Optional[bool] = typer.Option(
        None, "--serve/--no-serve", help="start the server at the end (default: only in an interactive terminal, never when CI=true)"
    ),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
) -> None:
    """Evaluate and build a funnel on real data, show recommendations, then serve them."""
    from recfunnel.build import build
    from recfunnel.evaluate.protocol import evaluate as run_evaluation
    from recfunnel.evaluate.report import format_table, write_report
    from recfunnel.runtime import Recommender

    where = resolve_data_dir(str(data) if data else None)
    if where is None:  # a fresh machine: fetch ML-100K (checksummed) into the cache
        from recfunnel.data.download import download

        console.print("No local MovieLens copy: downloading ML-100K from GroupLens")
        try:
            where = download("ml-100k")
        except DataError as e:
            from recfunnel.data.synthetic import SyntheticConfig, write_synthetic_files

            where = write_synthetic_files(SyntheticConfig(), Path("data") / "synthetic")
            console.print(f"[yellow]{e}\nUsing synthetic data in {where} instead.[/yellow]")
    ds = _load(where)
    console.print(f"[bold]{ds.describe()}[/bold]")
    cfg = load_config(None)
    ev = run_evaluation(ds, cfg)
    console.print(format_table(ev.result))
    md = write_report(ev.result, out / "report", ev.curves, ev.funnel_shares)
    console.print(f"report: {md}")
    d = build(ds, cfg, out, metrics=ev.result)
    console.print(f"published {d.name} -> {out / 'current'}")
    rec = Recommender(out)
    shown = rec.user_ids.raw_ids[:users] + ["a-user-nobody-has-seen"]
    for u in shown:
        _print_recs(rec, u, rec.recommend(u, n=10))
    if serve_after is None:
        serve_after = sys.stdin.isatty() and os.environ.get("CI", "").lower() != "true"
    if not serve_after:
        console.print(f"to browse it: recfunnel serve --artifacts {out}   (then open http://127.0.0.1:{port}/)")
        return
    _serve(out, "127.0.0.1", port, "sqlite", "redis://127.0.0.1:6379/0", Path("state"), 0, None, 5.0)


STORES = ("sqlite", "redis")


@app.command()
def serve(
    artifacts: Path = typer.Option(Path("artifacts"), "--artifacts", help="artifact root (its current version is served)"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    store: str = typer.Option("sqlite", "--store", help=f"online feature store: {', '.join(STORES)}"),
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0", "--redis-url", help="with --store redis"),
    state_dir: Path = typer.Option(Path("state"), "--state-dir", help="with --store sqlite"),
    workers: int = typer.Option(
        0, "--workers", min=0, max=16,
        help="funnel worker processes behind the HTTP process, fed least-loaded first (0: the funnel runs in it)",
    ),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="RECFUNNEL_API_KEY", help="key for writes and /admin (default: a random one, printed)"),
    watch: float = typer.Option(5.0, "--watch", min=0, help="seconds between checks for a new published version (0 = off)"),
) -> None:
    """Serve the HTTP API and the web page (OpenAPI docs at /docs)."""
    _serve(artifacts, host, port, store, redis_url, state_dir, workers, api_key, watch)


def _serve(artifacts, host, port, store, redis_url, state_dir, workers, api_key, watch) -> None:  # noqa: ANN001
    import uvicorn

    from recfunnel.artifacts import ArtifactError, resolve
    from recfunnel.serve.settings import ServeSettings, ensure_key

    if store not in STORES:
        _fail(f"unknown store '{store}'; choose one of {', '.join(STORES)}")
    try:
        version = resolve(artifacts).name
    except ArtifactError as e:
        _fail(str(e))
    settings = ensure_key(
        ServeSettings(
            artifacts=artifacts, store=store, redis_url=redis_url, state_dir=state_dir, api_key=api_key or "",
            watch_s=watch, workers=workers,
        )
    )
    os.environ.update(settings.to_env())
    url = f"http://{host}:{port}"
    console.print(f"serving {version} from {artifacts} with the {store} store")
    console.print(f"[bold]open {url}/[/bold]   API docs: {url}/docs")
    if not api_key:
        console.print(f"API key for POST /events and /admin (X-API-Key): {settings.api_key}")
    # one HTTP process; the CPU-bound funnel scales out in its worker processes (serve/pool.py)
    uvicorn.run("recfunnel.serve.app:app_from_env", factory=True, host=host, port=port, log_level="info")


def main() -> None:  # pragma: no cover - console entry
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
