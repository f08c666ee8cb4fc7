"""LightGBM LambdaRank over candidate features.

Training rows come from the funnel's own recall on the validation step: each query's pool
holds its positive (the item the user took next) and hard negatives (everything else the
channels found), so the model learns to reorder exactly what it will see at serve time.
The model is stored in LightGBM's own text format: loading it runs no code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import lightgbm as lgb
import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from recfunnel.candidates import Candidates
from recfunnel.persist import read_json, write_json
from recfunnel.rank.base import Ranker, RankerConfig, feature_matrix


SMALL_INPUT = 20_000  # rows; below this, scoring runs single-threaded


class LightGBMConfig(RankerConfig):
    """LightGBM LambdaRank (used when rank.model = "lightgbm")."""

    n_estimators: int = Field(400, ge=1, description="most boosting rounds (early stopping may use fewer)")
    learning_rate: float = Field(0.05, gt=0, description="shrinkage per round")
    num_leaves: int = Field(31, ge=2, description="leaves per tree")
    min_child_samples: int = Field(50, ge=1, description="rows a leaf needs at least")
    feature_fraction: float = Field(0.8, gt=0, le=1, description="share of features each tree sees")
    eval_at: int = Field(10, ge=1, description="NDCG cut-off optimised and early-stopped on")
    early_stopping_rounds: int = Field(40, ge=1)
    holdout_share: float = Field(0.15, gt=0, lt=1, description="training queries held out for early stopping")
    threads: int = Field(2, ge=1, description="CPU threads for training and scoring")
    seed: int = Field(0, description="LightGBM seed")


class LightGBMRanker(Ranker):
    name = "lightgbm"
    Config = LightGBMConfig

    def fit(
        self, train: Candidates, labels: np.ndarray, features: list[str], progress: bool = False
    ) -> Self:
        c = self.config
        self.features = list(features)
        x = feature_matrix(train, self.features)
        rng = np.random.default_rng(c.seed)
        queries = np.unique(train.query)
        held = rng.random(queries.max() + 1 if len(queries) else 1) < c.holdout_share
        is_val = held[train.query]
        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [c.eval_at],
            "learning_rate": c.learning_rate,
            "num_leaves": c.num_leaves,
            "min_child_samples": c.min_child_samples,
            "feature_fraction": c.feature_fraction,
            "lambdarank_truncation_level": max(c.eval_at * 3, 30),
            "num_threads": c.threads,
            "seed": c.seed,
            "verbose": -1,
        }
        dtrain = lgb.Dataset(x[~is_val], labels[~is_val], group=_groups(train.query[~is_val]), feature_name=self.features)
        dval = lgb.Dataset(x[is_val], labels[is_val], group=_groups(train.query[is_val]), reference=dtrain)
        self.booster = lgb.train(
            params,
            dtrain,
            num_boost_round=c.n_estimators,
            valid_sets=[dval],
            callbacks=[
                lgb.early_stopping(c.early_stopping_rounds, verbose=False),
                _progress_bar(c.n_estimators, progress),
            ],
        )
        return self

    def score(self, cands: Candidates) -> np.ndarray:
        if len(cands) == 0:
            return np.empty(0, dtype=np.float32)
        x = feature_matrix(cands, self.features).astype(np.float64)  # float32 as in training
        native = getattr(self, "native", None)
        if native is not None and len(cands) < SMALL_INPUT:
            return native(x).astype(np.float32)
        # OpenMP start-up costs more than a serving-sized pool takes to score (8 ms vs
        # 0.7 ms for 500 rows on 2 cores): small inputs are scored on one thread.
        threads = self.config.threads if len(cands) >= SMALL_INPUT else 1
        return self.booster.predict(x, num_iteration=self.booster.best_iteration, num_threads=threads).astype(np.float32)

    def compile_native(self) -> bool:
        """Score serving-sized inputs with the trees compiled to native code (see
        `rank.compiled`); True when that is now in use. Offline batches are unaffected."""
        model_file = getattr(self, "model_file", None)
        if model_file is None:
            return False
        from recfunnel.rank.compiled import compile_model

        ref = lambda x: self.booster.predict(x, num_threads=1)  # noqa: E731
        self.native = compile_model(model_file, ref, len(self.features))
        return self.native is not None

    def importance(self) -> dict[str, float]:
        gain = self.booster.feature_importance("gain")
        return dict(sorted(zip(self.features, gain.tolist()), key=lambda kv: -kv[1]))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / "model.txt"), num_iteration=self.booster.best_iteration)
        write_json(directory / "config.json", {"name": self.name, "features": self.features, **self.config.model_dump()})

    @classmethod
    def load(cls, directory: Path) -> Self:
        cfg = read_json(directory / "config.json")
        features = cfg.pop("features")
        cfg.pop("name", None)
        r = cls(cls.Config.model_validate(cfg))
        r.features = features
        r.booster = lgb.Booster(model_file=str(directory / "model.txt"))
        r.model_file = directory / "model.txt"
        return r


def _progress_bar(total: int, enabled: bool):  # noqa: ANN202 - a LightGBM callback
    bar = tqdm(total=total, desc="ranker boosting rounds", disable=not enabled)

    def step(env: lgb.callback.CallbackEnv) -> None:
        bar.update(1)
        if env.iteration + 1 >= env.end_iteration:
            bar.close()

    return step


def _groups(query: np.ndarray) -> np.ndarray:
    """Sizes of consecutive runs of equal query ids (LightGBM's group format)."""
    if len(query) == 0:
        return np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, query[1:] != query[:-1]])
    return np.diff(np.r_[starts, len(query)])
