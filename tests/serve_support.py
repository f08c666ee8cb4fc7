"""Helpers for the serving tests: a small published artifact set and a real server process.

The artifact is built once per test process (synthetic data, small config, LightGBM on one
thread: on a busy 2-core machine OpenMP with two threads is several times slower) and
copied, not rebuilt, when a test needs another version.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from recfunnel.artifacts import publish, read_manifest, resolve
from recfunnel.build import build
from recfunnel.data.synthetic import SyntheticConfig, generate_with_truth

from test_funnel import small_config

API_KEY = "test-key-0123456789abcdef"
_lock = threading.Lock()
_built: dict[str, Path] = {}


def small_artifacts(root: Path) -> Path:
    """A published artifact root (built once per process, then copied to `root`)."""
    with _lock:
        src = _built.get("small")
        if src is None:
            base = Path(tempfile.mkdtemp(prefix="recfunnel-serve-art-"))
            atexit.register(shutil.rmtree, base, ignore_errors=True)
            ds, _ = generate_with_truth(SyntheticConfig(n_users=250, n_items=400, seed=3))
            cfg = small_config()
            cfg.rank.lightgbm.threads = 1
            build(ds, cfg, base, progress=False)
            _built["small"] = src = base
    if not root.exists():
        shutil.copytree(src, root, symlinks=True)
    return root


def publish_copy(root: Path, suffix: str, break_it: bool = False, source: str | None = None) -> str:
    """Publish a copy of `source` (default: the current version) under a new name,
    optionally broken; returns the new name."""
    cur = root / source if source else resolve(root)
    name = f"{cur.name.split('.')[0]}.{suffix}"
    new = root / name
    shutil.copytree(cur, new)
    manifest = read_manifest(new)
    (new / "manifest.json").unlink()
    if break_it:
        (new / "funnel" / "funnel.json").write_text("{ not json")
    manifest.pop("format", None)
    manifest.pop("version", None)
    publish(new, manifest)
    return name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`uvicorn recfunnel.serve.app:app_from_env` in a subprocess on a free loopback port
    (`workers` funnel processes behind it; 0 = the funnel runs in the HTTP process)."""

    def __init__(self, settings: dict, workers: int = 0, log: Path | None = None) -> None:
        self.settings = {"api_key": API_KEY, "watch_s": 0, "compile_ranker": False, "workers": workers, **settings}
        self.settings = {k: str(v) if isinstance(v, Path) else v for k, v in self.settings.items()}
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        env = {**os.environ, "RECFUNNEL_SERVE_SETTINGS": json.dumps(self.settings), "OPENBLAS_NUM_THREADS": "1"}
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "recfunnel.serve.app:app_from_env", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} (log: {self.log})")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not become ready in {timeout}s (log: {self.log})")

    def kill(self) -> None:
        """kill -9 the whole process group: no shutdown handler runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
