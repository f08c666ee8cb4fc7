"""Classification metrics of ranker scores: AUC, GAUC (per query), logloss, calibration."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN with one class only."""
    y = np.asarray(y) > 0.5
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(y: np.ndarray, s: np.ndarray, group: np.ndarray) -> float:
    """AUC per group (query) averaged with the group's row count as weight; groups with
    one class only are skipped."""
    order = np.argsort(group, kind="stable")
    g, y, s = group[order], np.asarray(y)[order], np.asarray(s)[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ends = np.r_[starts[1:], len(g)]
    total, weight = 0.0, 0
    for a, b in zip(starts, ends):
        v = auc(y[a:b], s[a:b])
        if not np.isnan(v):
            total += v * (b - a)
            weight += b - a
    return total / weight if weight else float("nan")


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |mean label - mean prediction| per equal-count bin,
    weighted by the bin's size (equal-count bins: positives are rare here)."""
    if len(p) == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    parts = np.array_split(order, bins)
    y = np.asarray(y, dtype=np.float64)
    return float(sum(abs(y[i].mean() - p[i].mean()) * len(i) for i in parts if len(i)) / len(p))
