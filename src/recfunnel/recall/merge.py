"""Merge: union of every channel's quota, deduplicated, with provenance kept as features.

For each candidate we keep which channels found it (a bitmask, the explanation "found by
ItemCF and co-occurrence"), and each channel's score and rank (NaN where a channel did not
find it, which the ranker reads as "missing"). When the union exceeds `pool_size`, items
are kept by their best relative rank (rank / quota) in any channel, so every channel's
head survives.
"""

from __future__ import annotations

import numpy as np

from recfunnel.candidates import Candidates


def channel_feature_names(channels: list[str]) -> list[str]:
    return [f"{p}_{c}" for c in channels for p in ("score", "rank")]


def merge(
    results: dict[str, Candidates], quotas: dict[str, int], pool_size: int, n_queries: int
) -> Candidates:
    names = list(results)
    parts = [results[n] for n in names]
    if not any(len(p) for p in parts):
        out = Candidates.empty(n_queries)
        out.features = {f: np.empty(0, dtype=np.float32) for f in channel_feature_names(names)}
        out.features["channels"] = np.empty(0, dtype=np.int64)
        out.features["n_channels"] = np.empty(0, dtype=np.float32)
        return out
    lengths = [len(p) for p in parts]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    channel = np.repeat(np.arange(len(parts), dtype=np.int64), lengths)
    query = np.concatenate([p.query for p in parts]).astype(np.int64)
    item = np.concatenate([p.item for p in parts]).astype(np.int64)
    score = np.concatenate([p.score for p in parts])
    rank = np.concatenate(
        [np.arange(len(p), dtype=np.float32) if n_queries == 1 else p.rank_in_query() for p in parts]
    ).astype(np.float32)
    quota = np.array([quotas[n] for n in names], dtype=np.float32)
    key = query * (int(item.max()) + 1) + item
    uniq, inv = np.unique(key, return_inverse=True)
    n = len(uniq)
    best = np.full(n, np.inf, dtype=np.float32)
    np.minimum.at(best, inv, rank / quota[channel])
    mask = np.zeros(n, dtype=np.int64)
    np.bitwise_or.at(mask, inv, np.left_shift(1, channel))
    n_ch = _popcount(mask, len(names))
    feats: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        rows = inv[offsets[i] : offsets[i + 1]]
        s = np.full(n, np.nan, dtype=np.float32)
        r = np.full(n, np.nan, dtype=np.float32)
        s[rows] = score[offsets[i] : offsets[i + 1]]
        r[rows] = rank[offsets[i] : offsets[i + 1]]
        feats[f"score_{name}"] = s
        feats[f"rank_{name}"] = r
    feats["channels"] = mask
    feats["n_channels"] = n_ch
    u_query = np.zeros(n, dtype=np.int64)
    u_item = np.zeros(n, dtype=np.int64)
    u_query[inv] = query
    u_item[inv] = item
    pool = Candidates(
        query=u_query.astype(np.int32),
        item=u_item.astype(np.int32),
        score=(-best).astype(np.float32),  # higher is better: the negated relative rank
        n_queries=n_queries,
        features=feats,
    )
    order = np.lexsort((-n_ch, best, u_query))
    pool = pool.take(order)
    return pool.head(pool_size)


def _popcount(mask: np.ndarray, bits: int) -> np.ndarray:
    """Set bits per entry (channels that found the item), as float32."""
    if hasattr(np, "bitwise_count"):  # NumPy >= 2
        return np.bitwise_count(mask).astype(np.float32)
    out = np.zeros(len(mask), dtype=np.float32)
    for i in range(bits):
        out += (mask >> i) & 1
    return out
