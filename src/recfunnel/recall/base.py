"""The recall channel interface.

A Source is fitted on a `Dataset` and answers a `QueryBatch` with up to `k` candidates per
query (`Candidates`, best first, the user's history excluded). Its settings are one pydantic
config (a section of the funnel TOML); its learned state is a dict of arrays, saved without
pickle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from recfunnel.candidates import Candidates, top_k
from recfunnel.data.dataset import Dataset
from recfunnel.persist import load_state, read_json, save_state, write_json
from recfunnel.query import QueryBatch
from recfunnel.recall.sparse_ops import weighted_row_sum

CHUNK = 1024  # queries scored together: bounds the dense queries x items score matrix


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="run this channel")
    quota: int = Field(200, ge=1, le=5000, description="candidates this channel sends to merge")


class Source(ABC):
    """A recall channel: Query -> Candidates."""

    name: ClassVar[str]
    Config: ClassVar[type[SourceConfig]]

    def __init__(self, config: SourceConfig | None = None) -> None:
        self.config = config or self.Config()
        self.n_items = 0

    @abstractmethod
    def fit(self, ds: Dataset) -> Self: ...

    @abstractmethod
    def score(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        """Dense (rows x n_items) scores for queries `rows` of the batch; 0 = not found."""

    def retrieve(self, batch: QueryBatch, k: int | None = None) -> Candidates:
        k = k or self.config.quota
        parts = []
        for start in range(0, len(batch), CHUNK):
            rows = slice(start, min(start + CHUNK, len(batch)))
            whole = rows.start == 0 and rows.stop == len(batch)
            parts.append(
                top_k(
                    self.score(batch, rows),
                    k,
                    exclude=batch.seen if whole else batch.seen[rows],
                    row_offset=start,
                    n_queries=len(batch),
                )
            )
        return concat_sorted(parts, len(batch))

    # ---- persistence --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"n_items": np.array(self.n_items)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.n_items = int(state["n_items"])

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        save_state(d, self.state())
        write_json(d / "config.json", {"name": self.name, **self.config.model_dump()})

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        d = Path(directory)
        cfg = read_json(d / "config.json")
        cfg.pop("name", None)
        src = cls(cls.Config.model_validate(cfg))
        src.set_state(load_state(d))
        return src


def concat_sorted(parts: list[Candidates], n_queries: int) -> Candidates:
    """Chunks are already in (query, -score) order: plain concatenation keeps it."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Candidates.empty(n_queries)
    return Candidates(
        query=np.concatenate([p.query for p in parts]),
        item=np.concatenate([p.item for p in parts]),
        score=np.concatenate([p.score for p in parts]),
        n_queries=n_queries,
    )


def recency_weights(batch: QueryBatch, decay: float, last_n: int) -> np.ndarray:
    """Weight of each packed history event: decay**(position from the end), 0 beyond last_n."""
    pos = batch.position_from_end
    w = np.power(decay, pos.astype(np.float64)).astype(np.float32)
    w[pos >= last_n] = 0.0
    return w


class ItemItemConfig(SourceConfig):
    history_decay: float = Field(0.95, gt=0, le=1, description="weight of the n-th last item: decay**n")
    history_last_n: int = Field(200, ge=1, description="history items that vote")


class ItemItemSource(Source):
    """A channel that scores items by an items x items matrix times the recent history.

    score(q, j) = sum over the query's recent items i of decay**age(i) * matrix[i, j].
    Subclasses only say how the matrix is learned.
    """

    Config: ClassVar[type[ItemItemConfig]]

    @abstractmethod
    def build_matrix(self, ds: Dataset) -> sp.csr_matrix: ...

    def fit(self, ds: Dataset) -> Self:
        self.n_items = ds.n_items
        self.matrix = self.build_matrix(ds)
        return self

    def score(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        c = self.config
        w = recency_weights(batch, c.history_decay, c.history_last_n)
        if len(batch) == 1:  # serving: no sparse matrices per request
            items, w = batch.known_history(w)
            return weighted_row_sum(self.matrix, items, w)[None, :]
        hist = batch.history_matrix(w)[rows]
        return (hist @ self.matrix).toarray()

    def state(self) -> dict[str, Any]:
        return {**super().state(), "matrix": self.matrix}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.matrix = state["matrix"]
