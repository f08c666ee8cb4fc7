"""The ranking-stage interface: a Scorer writes one score per candidate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
from pydantic import BaseModel, ConfigDict

from recfunnel.candidates import Candidates


class RankerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ranker(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[RankerConfig]]
    # True: the funnel also hydrates the point-in-time sparse/sequence features and calls
    # fit(..., specs=FeatureSpecs, like=second label)
    uses_specs: ClassVar[bool] = False

    def __init__(self, config: RankerConfig | None = None) -> None:
        self.config = config or self.Config()

    @abstractmethod
    def fit(
        self, train: Candidates, labels: np.ndarray, features: list[str], progress: bool = False
    ) -> Self:
        """Learn from candidates of known outcome (label 1 = the item the user took)."""

    @abstractmethod
    def score(self, cands: Candidates) -> np.ndarray:
        """One value per candidate, larger is better, on a log-odds-like scale (LambdaRank
        scores, calibrated log-odds): the re-ranker min-max scales them per list as MMR/DPP
        relevance, so a squashed scale such as raw probabilities would hand it flat lists."""

    @abstractmethod
    def save(self, directory: Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> Self: ...


def feature_matrix(cands: Candidates, features: list[str]) -> np.ndarray:
    return np.column_stack([cands.features[f].astype(np.float32) for f in features])
