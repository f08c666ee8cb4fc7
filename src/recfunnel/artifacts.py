"""Versioned artifact sets with an atomic `current` pointer.

`build` writes everything into a fresh `v<timestamp>-<hash>` directory next to the others,
writes `manifest.json` last, and only then flips `current` (a symlink replaced with an
atomic rename; a `CURRENT` text file is written the same way for file systems without
symlinks). A build that dies half-way leaves an unreferenced directory, never a broken
`current`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from recfunnel.persist import read_json, write_json

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ArtifactError(RuntimeError):
    """An artifact set is missing, incomplete or of an unknown format."""


def new_version_dir(root: str | Path, fingerprint: str) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    base = f"v{stamp}-{fingerprint[:8]}"
    path, k = root / base, 1
    while path.exists():
        k += 1
        path = root / f"{base}.{k}"
    path.mkdir()
    return path


def publish(version_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest, then atomically point `current` at `version_dir`."""
    manifest = {"format": FORMAT_VERSION, "version": version_dir.name, **manifest}
    write_json(version_dir / MANIFEST, manifest)
    root = version_dir.parent
    tmp_link = root / f".current.{os.getpid()}"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    tmp_link.symlink_to(version_dir.name, target_is_directory=True)
    os.replace(tmp_link, root / "current")
    tmp_txt = root / f".CURRENT.{os.getpid()}"
    tmp_txt.write_text(version_dir.name + "\n")
    os.replace(tmp_txt, root / "CURRENT")
    return root / "current"


def resolve(path: str | Path) -> Path:
    """The complete version directory that `path` names (a root or a version itself)."""
    p = Path(path)
    if (p / MANIFEST).exists():
        return p
    pointer = p / "CURRENT"
    if pointer.exists():
        target = p / pointer.read_text().strip()
        if (target / MANIFEST).exists():
            return target
    if (p / "current" / MANIFEST).exists():
        return (p / "current").resolve()
    raise ArtifactError(f"{p}: no published artifact set here (run `recfunnel build` first)")


def read_manifest(path: str | Path) -> dict[str, Any]:
    d = resolve(path)
    m = read_json(d / MANIFEST)
    if m.get("format") != FORMAT_VERSION:
        raise ArtifactError(f"{d}: artifact format {m.get('format')} is not {FORMAT_VERSION}")
    return m


def list_versions(root: str | Path) -> list[str]:
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / MANIFEST).exists() and not p.is_symlink())
