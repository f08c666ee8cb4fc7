"""Reference libraries on the identical split (PROTOCOL.md, "other libraries").

Each baseline is fitted on the binary users x items matrix of the fit data (CPU) and then
scores the whole catalog for every test user through the same `full_ranking_topk` and
`summarize` our own models use, so the numbers differ only by the model, never by the
candidate set, the seen-item filter or the metric code.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from recfunnel.data.split import Split
from recfunnel.evaluate.metrics import summarize
from recfunnel.evaluate.ranking import full_ranking_topk

MODELS: tuple[str, ...] = ("popularity", "itemknn_bm25", "als", "bpr")
TOP_K = 500

# PROTOCOL.md settings; `params` in run_implicit overrides them (tests use fewer iterations).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "popularity": {},
    "itemknn_bm25": {"K": 100},
    "als": {"factors": 128, "iterations": 20},
    "bpr": {"factors": 128, "iterations": 100},
}


def _fit(
    name: str, user_items: sp.csr_matrix, seed: int, params: dict[str, Any]
) -> Callable[[np.ndarray], np.ndarray]:
    """Fit one model and return its catalog scorer `users -> (len(users), n_items)`."""
    if name == "popularity":
        pop = np.asarray(user_items.sum(axis=0), dtype=np.float64).ravel()
        return lambda users: np.broadcast_to(pop, (len(users), pop.size))

    import implicit  # the bench extra (threadpoolctl comes with it): only needed here
    from threadpoolctl import threadpool_limits

    # implicit warns (and runs much slower) when BLAS uses its own threadpool while fitting.
    with threadpool_limits(1, "blas"):
        if name == "itemknn_bm25":
            model = implicit.nearest_neighbours.BM25Recommender(**params)
            with warnings.catch_warnings():  # its own bm25_weight hands it a COO matrix
                warnings.filterwarnings("ignore", message="Method expects CSR input")
                model.fit(user_items, show_progress=False)
            sim = model.similarity.tocsr().astype(np.float32)  # halves the dense score blocks
            return lambda users: (user_items[users] @ sim).toarray()
        if name == "als":
            model = implicit.als.AlternatingLeastSquares(
                random_state=seed, use_gpu=False, **params
            )
        elif name == "bpr":
            model = implicit.bpr.BayesianPersonalizedRanking(
                random_state=seed, use_gpu=False, **params
            )
        else:
            raise ValueError(f"unknown baseline '{name}', expected one of {MODELS}")
        model.fit(user_items, show_progress=False)
    uf = np.asarray(model.user_factors)
    itf = np.asarray(model.item_factors)
    return lambda users: uf[users] @ itf.T


def run_implicit(
    split: Split,
    model: str,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    k: int = TOP_K,
) -> dict[str, Any]:
    """Fit `model` on the fit data, rank the full catalog for every test user, score it.

    Returns {"model", "metrics", "fit_seconds", "predict_seconds"}; `metrics` is
    `summarize(...)` of the top `k` lists (HR@10..HR@500, NDCG@10, MRR@10, coverage@10,
    ILD@10, novelty@10).
    """
    if model not in MODELS:
        raise ValueError(f"unknown baseline '{model}', expected one of {MODELS}")
    fit = split.fit
    user_items = sp.csr_matrix(fit.user_item, dtype=np.float32)
    counts = fit.item_user_count
    settings = {**DEFAULT_PARAMS[model], **(params or {})}

    t0 = time.perf_counter()
    score_fn = _fit(model, user_items, seed, settings)
    fit_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    topk = full_ranking_topk(
        score_fn, split.users, user_items, k, candidate_items=counts > 0
    )
    predict_seconds = time.perf_counter() - t0

    metrics = summarize(
        topk,
        split.items,
        fit.item_categories,
        counts,
        fit.n_users,
        fit.n_items,
    )
    return {
        "model": model,
        "metrics": metrics,
        "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds,
    }
