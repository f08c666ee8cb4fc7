"""Off-policy evaluation: what click rate would another policy get, from logs we have.

Logs are rows (context, logged action a_i, reward r_i, behaviour propensity p_i). The
evaluation policy gives, per row, a distribution over actions `action_dist[i, a]`; the
importance weight is w_i = action_dist[i, a_i] / p_i.

- IPS:   mean(w_i r_i)                                   unbiased when p_i > 0 wherever the
                                                          evaluation policy acts
- SNIPS: sum(w_i r_i) / sum(w_i)                         slightly biased, much less variance
- DR:    mean(sum_a pi(a|x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i)))
                                                          unbiased if either the propensities
                                                          or the reward model q are right

Confidence intervals are percentile bootstraps over rows (vectorised, chunked).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ESTIMATORS = ("IPS", "SNIPS", "DR")


@dataclass
class LoggedBandit:
    action: np.ndarray  # int (n,) logged action
    reward: np.ndarray  # float (n,) observed reward
    pscore: np.ndarray  # float (n,) behaviour policy's probability of the logged action
    position: np.ndarray | None = None  # int (n,) slot, when the reward model uses it

    def __len__(self) -> int:
        return len(self.action)


def _parts(logs: LoggedBandit, action_dist: np.ndarray, q_hat: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per-row numerators (and SNIPS weights) the estimators average."""
    rows = np.arange(len(logs))
    w = action_dist[rows, logs.action] / logs.pscore
    parts = {"IPS": w * logs.reward, "w": w}
    if q_hat is not None:
        dm = np.einsum("na,na->n", action_dist, q_hat)
        parts["DR"] = dm + w * (logs.reward - q_hat[rows, logs.action])
        parts["DM"] = dm
    return parts


def estimate(logs: LoggedBandit, action_dist: np.ndarray, q_hat: np.ndarray | None = None) -> dict[str, float]:
    """IPS, SNIPS (and DR, DM when a reward model `q_hat` (n, n_actions) is given)."""
    p = _parts(logs, action_dist, q_hat)
    out = {"IPS": float(p["IPS"].mean()), "SNIPS": float(p["IPS"].sum() / max(p["w"].sum(), 1e-300))}
    if q_hat is not None:
        out["DR"] = float(p["DR"].mean())
        out["DM"] = float(p["DM"].mean())
    return out


def bootstrap(
    logs: LoggedBandit,
    action_dist: np.ndarray,
    q_hat: np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    chunk: int = 100,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of every estimator (rows resampled with replacement)."""
    p = _parts(logs, action_dist, q_hat)
    n = len(logs)
    rng = np.random.default_rng(seed)
    names = ["IPS", "SNIPS"] + [k for k in ("DR", "DM") if k in p]
    draws: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        ips = p["IPS"][idx]
        draws["IPS"].append(ips.mean(axis=1))
        draws["SNIPS"].append(ips.sum(axis=1) / np.maximum(p["w"][idx].sum(axis=1), 1e-300))
        for k in ("DR", "DM"):
            if k in p:
                draws[k].append(p[k][idx].mean(axis=1))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: (float(np.percentile(np.concatenate(v), lo)), float(np.percentile(np.concatenate(v), hi)))
            for k, v in draws.items() if v}


def mean_ci(reward: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """On-policy value (the mean reward) and its percentile bootstrap interval."""
    r = np.asarray(reward, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.concatenate([r[rng.integers(0, len(r), size=(min(100, n_boot - s), len(r)))].mean(axis=1)
                            for s in range(0, n_boot, 100)])
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return float(r.mean()), float(np.percentile(means, lo)), float(np.percentile(means, hi))


def ctr_table(
    action: np.ndarray, position: np.ndarray, reward: np.ndarray, n_actions: int, n_positions: int, prior: float = 100.0
) -> np.ndarray:
    """Smoothed click rate per (position, action): (clicks + prior * rate) / (shows + prior).

    The prior pulls thin cells to their position's rate, so a cell with one lucky click
    does not predict a 100% click rate.
    """
    shows = np.zeros((n_positions, n_actions))
    clicks = np.zeros((n_positions, n_actions))
    np.add.at(shows, (position, action), 1.0)
    np.add.at(clicks, (position, action), reward)
    pos_rate = clicks.sum(axis=1, keepdims=True) / np.maximum(shows.sum(axis=1, keepdims=True), 1.0)
    return (clicks + prior * pos_rate) / (shows + prior)


def cross_fitted_q(logs: LoggedBandit, n_actions: int, n_positions: int, folds: int = 5, prior: float = 100.0, seed: int = 0) -> np.ndarray:
    """(n, n_actions) reward predictions, each row from a table fitted on the other folds.

    Cross-fitting keeps DR honest: a row's own reward never enters its own prediction.
    """
    n = len(logs)
    pos = logs.position if logs.position is not None else np.zeros(n, dtype=np.int64)
    fold = np.random.default_rng(seed).integers(0, folds, size=n)
    q = np.zeros((n, n_actions))
    for f in range(folds):
        train = fold != f
        table = ctr_table(logs.action[train], pos[train], logs.reward[train], n_actions, n_positions, prior)
        q[fold == f] = table[pos[fold == f]]
    return q
