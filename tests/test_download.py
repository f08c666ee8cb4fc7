"""download(): checksum refusal, offline message, unpacking; resolve_data_dir() order.
No test touches the network: the fetch is replaced by local bytes."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from recfunnel.data import DataError
from recfunnel.data import download as dl


def make_zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


GOOD_ZIP = make_zip({"ml-100k/u.data": "1\t1\t5\t881250949\n", "ml-100k/u.item": "1|Toy|||x\n"})


def serve(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[str]:
    """Replace the network fetch with `payload`; returns the list of fetched URLs."""
    calls: list[str] = []

    def fake_fetch(url: str, dest: Path, timeout: float = 60.0) -> None:
        calls.append(url)
        dest.write_bytes(payload)

    monkeypatch.setattr(dl, "_fetch", fake_fetch)
    return calls


def pin(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> None:
    remote = dl.REMOTES["ml-100k"]
    fake = dl.Remote(remote.url, hashlib.sha256(payload).hexdigest(), remote.folder, remote.marker)
    monkeypatch.setitem(dl.REMOTES, "ml-100k", fake)


def test_pinned_checksum_is_a_sha256() -> None:
    assert len(dl.ML100K_ZIP_SHA256) == 64 and int(dl.ML100K_ZIP_SHA256, 16) >= 0
    assert dl.REMOTES["ml-100k"].sha256 == dl.ML100K_ZIP_SHA256


def test_checksum_mismatch_is_refused_and_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(monkeypatch, GOOD_ZIP)  # not the official archive: its digest differs
    with pytest.raises(DataError, match="SHA-256") as err:
        dl.download("ml-100k", tmp_path)
    assert hashlib.sha256(GOOD_ZIP).hexdigest() in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing kept, nothing unpacked


def test_matching_archive_is_unpacked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = serve(monkeypatch, GOOD_ZIP)
    pin(monkeypatch, GOOD_ZIP)
    out = dl.download("ml-100k", tmp_path)
    assert out == tmp_path / "ml-100k"
    assert (out / "u.data").read_text().startswith("1\t1\t5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k"]  # no .part, no temp dir
    assert dl.download("ml-100k", tmp_path) == out
    assert calls == [dl.ML100K_URL]  # the second call found the unpacked copy


def test_unsafe_archive_paths_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evil = make_zip({"ml-100k/u.data": "x", "../escape.txt": "x"})
    serve(monkeypatch, evil)
    pin(monkeypatch, evil)
    with pytest.raises(DataError, match="unsafe path"):
        dl.download("ml-100k", tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()


def test_no_network_gives_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as err:
        dl.download("ml-100k", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith(".")
    assert msg.count(". ") == 0  # one sentence
    assert "failed" in msg and "--data DIR" in msg and "RECFUNNEL_DATA" in msg
    assert not any(tmp_path.iterdir())


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown data set"):
        dl.download("ml-1b", tmp_path)


def test_resolve_data_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A repository beside a shared/data folder, entered as the working directory.
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text("")
    shared = tmp_path / "shared" / "data" / "demo-set"
    shared.mkdir(parents=True)
    cache = tmp_path / "cache"
    (cache / "demo-set").mkdir(parents=True)
    (cache / "cached-only").mkdir(parents=True)
    monkeypatch.setattr(dl, "CACHE_DIR", cache)
    monkeypatch.chdir(repo)
    monkeypatch.delenv(dl.ENV_VAR, raising=False)

    assert dl.resolve_data_dir(None, "demo-set") == shared  # shared beats the cache
    assert dl.resolve_data_dir(None, "cached-only") == cache / "cached-only"
    assert dl.resolve_data_dir(None, "nowhere") is None
    monkeypatch.setenv(dl.ENV_VAR, str(tmp_path / "from-env"))
    assert dl.resolve_data_dir(None, "demo-set") == tmp_path / "from-env"  # env beats shared
    assert dl.resolve_data_dir(str(tmp_path / "explicit"), "demo-set") == tmp_path / "explicit"  # explicit first
    monkeypatch.setenv(dl.ENV_VAR, str(tmp_path / "shared" / "data"))  # a folder of data sets
    assert dl.resolve_data_dir(None, "demo-set") == shared
