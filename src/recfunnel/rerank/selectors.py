"""Selectors: re-order a padded (queries x window) matrix of candidate rows.

An `order` row lists candidate row ids best first, padded with -1 at the end. Every
selector returns a new order of the same shape and never drops a row (filters drop), so
the list is never shorter because of a business rule. Sinks are vectorised; the
rules that walk a list (caps, runs, slots, interleaving) loop over one query's top few
dozen items, which is cheap next to ranking.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from recfunnel.candidates import Candidates


def to_order(cands: Candidates, width: int | None = None) -> np.ndarray:
    """(n_queries, width) row ids of each query's list, best first, -1 padded."""
    rank = cands.rank_in_query()
    w = width if width is not None else (int(rank.max()) + 1 if len(rank) else 0)
    order = np.full((cands.n_queries, max(w, 0)), -1, dtype=np.int64)
    keep = rank < w
    order[cands.query[keep], rank[keep]] = np.flatnonzero(keep)
    return order


def sink(order: np.ndarray, flag: np.ndarray, positions: int) -> np.ndarray:
    """Move flagged entries (bool, same shape) down by `positions`, others keep their order."""
    if not flag.any():
        return order
    w = order.shape[1]
    key = np.arange(w, dtype=np.float64)[None, :] + np.where(flag, positions + 0.5, 0.0)
    key = np.where(order >= 0, key, np.inf)
    perm = np.argsort(key, axis=1, kind="stable")
    return np.take_along_axis(order, perm, axis=1)


class CategorySets:
    """Lazy per-item category tuples (only items a rule actually looks at are decoded)."""

    def __init__(self, categories: sp.csr_matrix) -> None:
        self.m = categories.tocsr()
        self._cache: dict[int, tuple[int, ...]] = {}

    def __call__(self, item: int) -> tuple[int, ...]:
        got = self._cache.get(item)
        if got is None:
            if 0 <= item < self.m.shape[0]:
                got = tuple(self.m.indices[self.m.indptr[item] : self.m.indptr[item + 1]].tolist())
            else:
                got = ()
            self._cache[item] = got
        return got


def _per_query(order: np.ndarray, fn: Callable[[list[int]], list[int]]) -> np.ndarray:
    out = order.copy()
    for q in range(order.shape[0]):
        row = order[q]
        m = int((row >= 0).sum())
        if m > 1:
            new = fn(row[:m].tolist())
            out[q, :m] = new
    return out


def scatter(
    order: np.ndarray, item_of_row: np.ndarray, cats: CategorySets, max_run: int, n: int, limit: int | None = None
) -> np.ndarray:
    """No more than `max_run` consecutive items sharing a category in the first `n`.

    Walk the list; take the best remaining item that does not extend any category's run
    past `max_run`; when every remaining one would, take the best anyway (never a shorter
    list). Only the first `limit` entries are candidates (the caps' top n when on).
    """
    if max_run <= 0:
        return order

    def one(rows: list[int]) -> list[int]:
        pool = rows[: limit or len(rows)]
        tail = rows[len(pool) :]
        remaining = list(pool)
        run: dict[int, int] = {}
        picked: list[int] = []
        while remaining and len(picked) < n:
            at = 0
            for j, r in enumerate(remaining):
                if all(run.get(c, 0) < max_run for c in cats(int(item_of_row[r]))):
                    at = j
                    break
            r = remaining.pop(at)
            run = {c: run.get(c, 0) + 1 for c in cats(int(item_of_row[r]))}
            picked.append(r)
        return picked + remaining + tail

    return _per_query(order, one)


def ratio_cap(order: np.ndarray, item_of_row: np.ndarray, cats: CategorySets, max_share: float, n: int) -> np.ndarray:
    """At most floor(max_share * n) (and at least 1) of the top n from any one category.

    Items that would break a cap are deferred below the top n; if too few items remain to
    fill n, deferred ones come back in order (a full list beats a strict cap).
    """
    if max_share <= 0 or max_share >= 1:
        return order
    cap = max(1, int(np.floor(max_share * n)))

    def one(rows: list[int]) -> list[int]:
        count: dict[int, int] = {}
        taken: list[int] = []
        deferred: list[int] = []
        i = 0
        while i < len(rows) and len(taken) < n:
            r = rows[i]
            i += 1
            cs = cats(int(item_of_row[r]))
            if all(count.get(c, 0) < cap for c in cs):
                taken.append(r)
                for c in cs:
                    count[c] = count.get(c, 0) + 1
            else:
                deferred.append(r)
        rest = rows[i:]
        if len(taken) < n:
            need = n - len(taken)
            taken += deferred[:need]
            deferred = deferred[need:]
        return taken + deferred + rest

    return _per_query(order, one)


def fixed_slot(order: np.ndarray, eligible: np.ndarray, slot: int) -> np.ndarray:
    """Put each query's best eligible entry (bool, same shape as order) at 0-based `slot`.

    Nothing changes when the best eligible entry is already at or above the slot, or the
    list is shorter than the slot.
    """
    out = order.copy()
    has = eligible & (order >= 0)
    for q in np.flatnonzero(has.any(axis=1)):
        j = int(np.argmax(has[q]))
        m = int((order[q] >= 0).sum())
        if j <= slot or slot >= m:
            continue
        row = order[q, :m].tolist()
        r = row.pop(j)
        row.insert(slot, r)
        out[q, :m] = row
    return out


def interleave(order: np.ndarray, channel: np.ndarray, turns: Sequence[int], n: int) -> np.ndarray:
    """Round-robin over channels (`turns`, channel ids) for the first n positions.

    `channel` (same shape as order) is each entry's primary channel. A channel with nothing
    left is skipped; entries of channels outside `turns` follow in their order.
    """
    if not turns:
        return order
    out = order.copy()
    for q in range(order.shape[0]):
        m = int((order[q] >= 0).sum())
        if m < 2:
            continue
        queues: dict[int, list[int]] = {c: [] for c in turns}
        others: list[int] = []
        for j in range(m):
            (queues.get(int(channel[q, j]), others)).append(j)
        picked: list[int] = []
        heads = {c: 0 for c in turns}
        while len(picked) < n and any(heads[c] < len(queues[c]) for c in turns):
            for c in turns:
                if heads[c] < len(queues[c]) and len(picked) < n:
                    picked.append(queues[c][heads[c]])
                    heads[c] += 1
        chosen = set(picked)
        rest = [j for j in range(m) if j not in chosen]
        out[q, :m] = order[q, picked + rest]
    return out


def primary_channel(mask: np.ndarray, turns: Sequence[int]) -> np.ndarray:
    """The first channel of `turns` whose bit is set in each channel bitmask (-1 if none)."""
    out = np.full(mask.shape, -1, dtype=np.int64)
    for c in reversed(list(turns)):
        out = np.where((mask >> c) & 1 == 1, c, out)
    return out
