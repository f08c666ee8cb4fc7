"""Raw ids <-> dense integer indices.

Every table keeps raw ids as strings (so "1" from a CSV and 1 from Parquet are the same
id); models only ever see the dense indices. An unknown raw id maps to -1, which callers
treat as the cold-start path, never as an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

UNKNOWN = -1


class IdMap:
    """Bidirectional map between raw string ids and indices 0..n-1 (insertion order)."""

    def __init__(self, raw_ids: Iterable[object] = ()) -> None:
        self._raw: list[str] = []
        self._index: dict[str, int] = {}
        for raw in raw_ids:
            self.add(raw)

    @classmethod
    def from_unique(cls, raw_ids: list[str]) -> "IdMap":
        """Fast path for ids already distinct strings (loaders of large files)."""
        m = cls()
        m._raw = list(raw_ids)
        m._index = dict(zip(m._raw, range(len(m._raw))))
        if len(m._index) != len(m._raw):
            raise ValueError("IdMap.from_unique got repeated ids")
        return m

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, raw: object) -> bool:
        return str(raw) in self._index

    def add(self, raw: object) -> int:
        """Index of `raw`, appending it if new (online catalogs grow)."""
        key = str(raw)
        idx = self._index.get(key)
        if idx is None:
            idx = len(self._raw)
            self._index[key] = idx
            self._raw.append(key)
        return idx

    def get(self, raw: object) -> int:
        return self._index.get(str(raw), UNKNOWN)

    def lookup(self, raw_ids: Iterable[object]) -> np.ndarray:
        """Vector of indices, -1 where unknown."""
        get = self._index.get
        return np.fromiter((get(str(r), UNKNOWN) for r in raw_ids), dtype=np.int64).astype(np.int32)

    def raw(self, idx: int) -> str:
        return self._raw[int(idx)]

    def raws(self, idx: Sequence[int] | np.ndarray) -> list[str]:
        return [self._raw[int(i)] for i in idx]

    @property
    def raw_ids(self) -> list[str]:
        return list(self._raw)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self._raw))

    @classmethod
    def load(cls, path: str | Path) -> "IdMap":
        raw = json.loads(Path(path).read_text())
        if not isinstance(raw, list):
            raise ValueError(f"{path}: an IdMap file holds a JSON list of ids")
        return cls.from_unique([str(r) for r in raw])
