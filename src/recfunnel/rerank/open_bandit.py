"""The Open Bandit Dataset (ZOZOTOWN, Saito et al. 2020) for validating off-policy evaluation.

Each campaign was served, in parallel during one week, by a uniformly random policy and by
Bernoulli Thompson sampling (BTS), three slots per impression. So the random logs can
estimate the BTS click rate off-policy, and the BTS logs give its actual click rate.

The BTS action distribution is not logged in full: each row only carries the probability
of the item it showed at that position (`propensity_score`). It is reconstructed per
(time bin, position) from those values: rows of an item are sampled in proportion to its
probability, so the harmonic mean of the logged propensities of (item, position) is an
estimate of its mean probability over the bin (a size-biased sample), and a missing
(item, position) falls back to its whole-week value. The result is normalised per row.
This is obp's action_dist (rounds x actions x positions) matched on each row's time and
position, for a policy whose only context is time.

The explorers of `explore.py` are replayed on the random logs: in time order, each block
of rows gets the explorer's current distribution (per position: Thompson's ranking of
posterior draws, LinUCB's ranking of upper bounds with epsilon), then the explorer learns
from the block's logged outcomes (uniform logs are unbiased training data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recfunnel.rerank.explore import LinUCBExplorer, ThompsonExplorer
from recfunnel.rerank.ope import LoggedBandit

N_POSITIONS = 3


@dataclass
class OBDLogs:
    t: np.ndarray  # int64 seconds
    action: np.ndarray  # int64 item id
    position: np.ndarray  # int64, 0-based
    reward: np.ndarray  # float64 click
    pscore: np.ndarray  # float64 logged propensity
    user: np.ndarray  # int64 (n, 4) codes of the hashed user features
    affinity: np.ndarray  # float64 (n, n_actions) user-item affinity
    n_actions: int

    def __len__(self) -> int:
        return len(self.action)

    def bandit(self) -> LoggedBandit:
        return LoggedBandit(self.action, self.reward, self.pscore, self.position)


def load_obd(root: str | Path, policy: str, campaign: str) -> OBDLogs:
    """`<root>/<policy>/<campaign>/<campaign>.csv[.gz]`, sorted by time."""
    d = Path(root) / policy / campaign
    path = d / f"{campaign}.csv.gz"
    if not path.exists():
        path = d / f"{campaign}.csv"
    df = pl.read_csv(path)
    df = df.with_columns(
        pl.col("timestamp").str.to_datetime(time_zone="UTC").dt.epoch("s").alias("_t")
    ).sort("_t", maintain_order=True)
    items = pl.read_csv(d / "item_context.csv")
    n_actions = int(max(items["item_id"].max(), df["item_id"].max())) + 1
    ucols = sorted(c for c in df.columns if c.startswith("user_feature_"))
    acols = [f"user-item_affinity_{k}" for k in range(n_actions)]
    user = np.stack(
        [df[c].cast(pl.Categorical).to_physical().cast(pl.Int64).to_numpy() for c in ucols], axis=1
    ) if ucols else np.zeros((df.height, 0), dtype=np.int64)
    aff = df.select([c for c in acols if c in df.columns]).to_numpy().astype(np.float64)
    return OBDLogs(
        t=df["_t"].to_numpy().astype(np.int64),
        action=df["item_id"].to_numpy().astype(np.int64),
        position=df["position"].to_numpy().astype(np.int64) - 1,
        reward=df["click"].to_numpy().astype(np.float64),
        pscore=df["propensity_score"].to_numpy().astype(np.float64),
        user=user,
        affinity=aff,
        n_actions=n_actions,
    )


def logged_policy(
    source: OBDLogs, rows_t: np.ndarray, rows_pos: np.ndarray, bin_s: int | None = None
) -> tuple[np.ndarray, float]:
    """The source policy's action distribution (n, n_actions) for target rows (time, position).

    Returns it and the mean sum of the unnormalised estimates (close to 1 when the
    reconstruction is consistent; reported as a check).
    """
    k = source.n_actions
    t0 = int(min(source.t.min(), rows_t.min()))
    span = int(max(source.t.max(), rows_t.max())) - t0 + 1
    width = span if bin_s is None else bin_s
    n_bins = (span + width - 1) // width
    sb = (source.t - t0) // width
    inv = np.zeros((n_bins, N_POSITIONS, k))
    cnt = np.zeros((n_bins, N_POSITIONS, k))
    np.add.at(inv, (sb, source.position, source.action), 1.0 / source.pscore)
    np.add.at(cnt, (sb, source.position, source.action), 1.0)
    week = np.where(cnt.sum(0) > 0, cnt.sum(0) / np.maximum(inv.sum(0), 1e-300), 0.0)
    floor = week[week > 0].min() if (week > 0).any() else 1.0 / k
    week = np.where(week > 0, week, floor)  # never shown at that position: the smallest seen
    per_bin = np.where(cnt > 0, cnt / np.maximum(inv, 1e-300), week[None])
    raw = per_bin[(rows_t - t0) // width, rows_pos]
    total = raw.sum(axis=1, keepdims=True)
    return raw / total, float(total.mean())


def user_context(logs: OBDLogs) -> np.ndarray:
    """One-hot user features (n, d_user), shared by every arm."""
    cols = []
    for j in range(logs.user.shape[1]):
        codes = logs.user[:, j]
        m = int(codes.max()) + 1 if len(codes) else 0
        cols.append(np.eye(m)[codes][:, 1:])  # drop one level: the bias covers it
    return np.concatenate(cols, axis=1) if cols else np.zeros((len(logs), 0))


def arm_contexts(logs: OBDLogs, rows: np.ndarray, users: np.ndarray) -> np.ndarray:
    """(len(rows), n_actions, d): [1, user one-hots, user-item affinity of that arm]."""
    n, k = len(rows), logs.n_actions
    u = users[rows]
    x = np.empty((n, k, 1 + u.shape[1] + 1))
    x[:, :, 0] = 1.0
    x[:, :, 1:-1] = u[:, None, :]
    x[:, :, -1] = logs.affinity[rows]
    return x


def replay_thompson(logs: OBDLogs, explorer: ThompsonExplorer, block: int = 500, draws: int = 4000, seed: int = 0) -> np.ndarray:
    """(n, n_actions) per-row distribution of Thompson sampling at each row's position."""
    rng = np.random.default_rng(seed)
    k = logs.n_actions
    explorer.ensure(k)
    out = np.zeros((len(logs), k))
    for start in range(0, len(logs), block):
        rows = np.arange(start, min(start + block, len(logs)))
        theta = rng.beta(explorer.alpha[:k], explorer.beta[:k], size=(draws, k))
        ranking = np.argsort(-theta, axis=1)[:, :N_POSITIONS]  # slot p gets the p-th largest draw
        dist = np.zeros((N_POSITIONS, k))
        for p in range(N_POSITIONS):
            dist[p] = np.bincount(ranking[:, p], minlength=k) / draws
        out[rows] = dist[logs.position[rows]]
        explorer.update(logs.action[rows], logs.reward[rows])
    return out


def replay_linucb(logs: OBDLogs, explorer: LinUCBExplorer, block: int = 100) -> np.ndarray:
    """(n, n_actions) per-row distribution of LinUCB (epsilon-greedy over its ranking)."""
    k = logs.n_actions
    users = user_context(logs)
    explorer.ensure(k)
    eps = explorer.epsilon
    out = np.zeros((len(logs), k))
    for start in range(0, len(logs), block):
        rows = np.arange(start, min(start + block, len(logs)))
        x = arm_contexts(logs, rows, users)  # (b, k, d)
        theta = np.einsum("kij,kj->ki", explorer.a_inv, explorer.b)
        mean = np.einsum("bkd,kd->bk", x, theta)
        width = np.sqrt(np.maximum(np.einsum("bki,kij,bkj->bk", x, explorer.a_inv, x), 0.0))
        ucb = mean + explorer.alpha * width
        ranking = np.argsort(-ucb, axis=1, kind="stable")
        chosen = ranking[np.arange(len(rows)), logs.position[rows]]
        dist = np.full((len(rows), k), eps / k)
        dist[np.arange(len(rows)), chosen] += 1.0 - eps
        out[rows] = dist
        explorer.update(logs.action[rows], logs.reward[rows], x[np.arange(len(rows)), logs.action[rows]])
    return out
