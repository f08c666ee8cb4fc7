"""Pre-rank: a light model that cuts the merged pool to the ranker's input.

The merged pool can hold many hundreds of candidates; hydrating and scoring all of them
with the full ranker is the funnel's costliest step. The pre-ranker reads only columns
that are already there or cost one array lookup (each channel's score and rank, how many
channels found the item, the merge's own score, overall popularity), scores the pool
with a few small trees (`model = "trees"`) or a small MLP (`model = "mlp"`), and keeps the
best `keep` per query. It learns from the ranker's own training rows (the next interaction
positive, pool candidates negatives), so it is trained to keep what the ranker would want
to see. The trees fit binary log loss; the MLP is the neural rankers' Wide&Deep over these
columns alone and trains with the ranker's own objective (`loss`, listwise by default).
Stored as LightGBM text or safetensors, with JSON settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

import lightgbm as lgb
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from recfunnel.candidates import Candidates
from recfunnel.features.specs import FeatureSpecs
from recfunnel.nn.training import TrainConfig
from recfunnel.persist import read_json, write_json
from recfunnel.rank.base import feature_matrix
from recfunnel.rank.neural import WideDeepConfig, WideDeepRanker

# columns the funnel adds before pre-ranking (besides the merge's channel columns)
EXTRA_FEATURES = ["n_channels", "merge_score", "pop_all"]


def _mlp_train_default() -> TrainConfig:
    return TrainConfig(epochs=10, batch_size=2048, learning_rate=3e-3, eval_every=1, patience=2, refit=False, ema_decay=0.999)


class PreRankMLPConfig(WideDeepConfig):
    """The MLP pre-ranker: a small Wide&Deep net over the cheap columns only (values and their buckets)."""

    embed_dim: int = Field(4, ge=1, description="embedding size of each dense feature's bucket")
    hidden: list[int] = Field([32], description="MLP layer sizes")
    dense_buckets: int = Field(8, ge=0, description="quantile buckets per column, each embedded as one more field")
    train: TrainConfig = Field(default_factory=_mlp_train_default)


class PreRankConfig(BaseModel):
    """Pre-rank: a light model over cheap columns that cuts the merged pool to the ranker's input."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(False, description="cut the merged pool before ranking (trained with the ranker)")
    keep: int = Field(200, ge=1, description="candidates per query passed on to the ranker")
    model: Literal["trees", "mlp"] = Field(
        "trees", description="'trees': a few small LightGBM trees; 'mlp': a small Wide&Deep net ([rank.prerank.mlp])"
    )
    n_estimators: int = Field(20, ge=1, description="boosting rounds (binary log-loss on the ranker's rows)")
    learning_rate: float = Field(0.1, gt=0, description="shrinkage per round")
    num_leaves: int = Field(15, ge=2, description="leaves per tree")
    min_child_samples: int = Field(50, ge=1, description="rows a leaf needs at least")
    threads: int = Field(1, ge=1, description="CPU threads for training and scoring")
    seed: int = Field(0, description="LightGBM seed")
    mlp: PreRankMLPConfig = Field(default_factory=PreRankMLPConfig, description="the MLP pre-ranker (model = 'mlp')")


class PreRanker:
    """Scores pool rows from cheap columns; `cut` keeps the best `keep` per query."""

    def __init__(self, config: PreRankConfig | None = None) -> None:
        self.config = config or PreRankConfig()
        self.features: list[str] = []
        self.booster: lgb.Booster | None = None
        self.net: WideDeepRanker | None = None

    def fit(self, train: Candidates, labels: np.ndarray, features: list[str], progress: bool = False) -> Self:
        c = self.config
        self.features = list(features)
        if c.model == "mlp":
            self.net = WideDeepRanker(c.mlp).fit(
                train, labels, self.features, progress=progress, specs=FeatureSpecs(dense=self.features)
            )
            return self
        x = feature_matrix(train, self.features)
        params = {
            "objective": "binary",
            "learning_rate": c.learning_rate,
            "num_leaves": c.num_leaves,
            "min_child_samples": c.min_child_samples,
            "num_threads": c.threads,
            "seed": c.seed,
            "deterministic": True,
            "verbose": -1,
        }
        data = lgb.Dataset(x, labels.astype(np.float32), feature_name=self.features)
        self.booster = lgb.train(params, data, num_boost_round=c.n_estimators)
        return self

    def score(self, cands: Candidates) -> np.ndarray:
        if len(cands) == 0:
            return np.empty(0, dtype=np.float32)
        if self.net is not None:
            return self.net.score(cands)
        assert self.booster is not None
        x = feature_matrix(cands, self.features).astype(np.float64)
        return self.booster.predict(x, raw_score=True, num_threads=self.config.threads).astype(np.float32)

    def cut(self, cands: Candidates, keep: int | None = None) -> Candidates:
        """The best `keep` rows per query (default: the config's), best first by pre-rank score."""
        return cands.reorder(self.score(cands)).head(keep or self.config.keep)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.net is not None:
            self.net.save(directory / "mlp")
        else:
            assert self.booster is not None
            self.booster.save_model(str(directory / "model.txt"))
        write_json(directory / "config.json", {"features": self.features, **self.config.model_dump(mode="json")})

    @classmethod
    def load(cls, directory: Path) -> Self:
        cfg = read_json(directory / "config.json")
        features = cfg.pop("features")
        p = cls(PreRankConfig.model_validate(cfg))
        p.features = features
        if p.config.model == "mlp":
            p.net = WideDeepRanker.load(directory / "mlp")
        else:
            p.booster = lgb.Booster(model_file=str(directory / "model.txt"))
        return p
