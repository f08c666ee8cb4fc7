"""Users' histories as padded tensors for next-item models.

Item index i is token i + 1; token 0 is padding. Sequences are left-padded so the most
recent item is always the last position (what the user vector reads at serve time).
"""

from __future__ import annotations

import numpy as np

from recfunnel.data.dataset import Dataset
from recfunnel.query import QueryBatch, history_queries

PAD = 0


def training_windows(ds: Dataset, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), each (n_users_with_2+, max_len) int64 tokens, left-padded.

    Each user contributes the last `max_len + 1` items of their history: inputs are all
    but the last, targets are shifted by one (position t predicts item t + 1).
    """
    ptr = ds.user_indptr
    tokens = ds.item.astype(np.int64) + 1
    users = np.flatnonzero(np.diff(ptr) >= 2)
    inputs = np.zeros((len(users), max_len), dtype=np.int64)
    targets = np.zeros((len(users), max_len), dtype=np.int64)
    for row, u in enumerate(users):
        seq = tokens[ptr[u] : ptr[u + 1]][-(max_len + 1) :]
        n = len(seq) - 1
        inputs[row, max_len - n :] = seq[:-1]
        targets[row, max_len - n :] = seq[1:]
    return inputs, targets


def query_windows(batch: QueryBatch, rows: slice, max_len: int, n_items: int) -> np.ndarray:
    """(len(rows), max_len) left-padded tokens of each query's most recent known items."""
    out = np.zeros((rows.stop - rows.start, max_len), dtype=np.int64)
    for r, q in enumerate(batch.queries[rows]):
        hist = q.history[q.history < n_items][-max_len:].astype(np.int64) + 1
        if len(hist):
            out[r, max_len - len(hist) :] = hist
    return out


def prefix_examples(ds: Dataset, max_per_user: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(users, positions) of every next-item example: the event at row `positions[j]` of
    ds.events is the target, the user's earlier events the history. A user's first event
    has no history and is skipped; `max_per_user` > 0 keeps only each user's latest ones."""
    ptr = ds.user_indptr
    rows = np.arange(ds.n_events, dtype=np.int64)
    users = ds.user.astype(np.int64)
    keep = rows > ptr[users]
    if max_per_user > 0:
        keep &= rows >= ptr[users + 1] - max_per_user
    return users[keep], rows[keep]


def history_windows(ds: Dataset, positions: np.ndarray, max_len: int) -> np.ndarray:
    """(len(positions), max_len) left-padded tokens of the events just before each position."""
    tokens = ds.item.astype(np.int64) + 1
    starts = ds.user_indptr[ds.user[positions]]
    idx = positions[:, None] - max_len + np.arange(max_len)[None, :]
    valid = idx >= starts[:, None]
    return np.where(valid, tokens[np.maximum(idx, 0)], PAD)


def validation_sample(val, eval_users: int, seed: int) -> tuple[np.ndarray, np.ndarray, QueryBatch]:  # noqa: ANN001 - a Split
    """(users, their validation targets, their queries): the fixed early-stopping sample."""
    rng = np.random.default_rng(seed)
    k = min(eval_users, len(val.users))
    pick = np.sort(rng.choice(len(val.users), k, replace=False))
    users = val.users[pick]
    return users, val.items[pick], QueryBatch(history_queries(val.fit, users), val.fit.n_items)
