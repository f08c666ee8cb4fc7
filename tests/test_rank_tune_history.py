"""bench/rank_tune.py's breakdown by history length: each bucket is the AUC and GAUC of
exactly the queries whose history length falls in it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from rank_tune import HISTORY_BUCKETS, by_history  # noqa: E402

from recfunnel.rank.metrics import auc, gauc  # noqa: E402


def test_by_history_measures_each_bucket_on_its_own_queries():
    rng = np.random.default_rng(0)
    n_q, per = 40, 12
    lengths = rng.integers(1, 40, n_q)
    q = np.repeat(np.arange(n_q), per)
    y = (np.arange(len(q)) % per == 0).astype(np.float32)
    y[q == 5] = 0.0  # a query whose target recall missed: its rows count in AUC, not GAUC
    s = rng.normal(size=len(q)) + y * lengths[q] / 20.0  # longer histories rank better
    keep = np.isin(q, np.unique(q[y > 0]))
    out = by_history(y, s, q, keep, lengths)
    assert [b["history"] for b in out] == ["1-3", "4-7", "8-19", "20+"]
    assert sum(b["queries"] for b in out) == n_q
    assert sum(b["positives"] for b in out) == int(y.sum())
    for (lo, hi), b in zip(HISTORY_BUCKETS, out):
        in_q = (lengths >= lo) & (lengths <= (hi or 10**9))
        rows = in_q[q]
        assert b["AUC"] == auc(y[rows], s[rows])
        both = rows & keep
        assert b["GAUC"] == gauc(y[both], s[both], q[both])
    assert out[-1]["GAUC"] > out[1]["GAUC"]  # the planted signal grows with history length
