"""Random walks on the weighted item graph, vectorised over all walkers at once.

DeepWalk steps pick a neighbour with probability proportional to the edge weight: one
global `searchsorted` into the cumulative weights of the CSR graph moves every walker in
a single NumPy call. Node2Vec's second-order bias (return `p`, in-out `q`) uses rejection
sampling (as KnightKing and PecanPy do): propose a weighted neighbour, accept it with
probability alpha(prev, next) / max(alpha), and retry only the rejected walkers.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class WalkGraph:
    def __init__(self, graph: sp.csr_matrix) -> None:
        g = sp.csr_matrix(graph, dtype=np.float64)
        g.sum_duplicates()
        g.sort_indices()
        self.indptr = g.indptr.astype(np.int64)
        self.indices = g.indices.astype(np.int64)
        self.n = g.shape[0]
        self.degree = np.diff(self.indptr)
        self.cum = np.cumsum(g.data)  # global, increasing across rows (weights > 0)
        row_start = np.concatenate([[0.0], self.cum])[self.indptr[:-1]]
        self.row_start = row_start
        self.row_weight = np.concatenate([[0.0], self.cum])[self.indptr[1:]] - row_start
        # membership test of (a, b) for the Node2Vec "is x a neighbour of prev" check
        rows = np.repeat(np.arange(self.n, dtype=np.int64), self.degree)
        self.edge_keys = rows * self.n + self.indices  # sorted: rows ascend, indices sorted

    def weighted_step(self, nodes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One weighted step for each walker (callers only pass nodes with out-edges)."""
        target = self.row_start[nodes] + rng.random(len(nodes)) * self.row_weight[nodes]
        pos = np.searchsorted(self.cum, target, side="right")
        pos = np.minimum(pos, self.indptr[nodes + 1] - 1)  # guard float round-off at the row end
        return self.indices[pos]

    def is_edge(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        keys = a * self.n + b
        pos = np.searchsorted(self.edge_keys, keys)
        pos = np.minimum(pos, len(self.edge_keys) - 1)
        return (len(self.edge_keys) > 0) & (self.edge_keys[pos] == keys)


def random_walks(
    graph: sp.csr_matrix,
    walks_per_node: int,
    walk_length: int,
    p: float = 1.0,
    q: float = 1.0,
    seed: int = 0,
) -> list[np.ndarray]:
    """Walks from every node with out-edges; p = q = 1 is DeepWalk, otherwise Node2Vec.

    A walk that reaches a node without out-edges ends there (it is kept if it has at
    least two nodes).
    """
    g = WalkGraph(graph)
    rng = np.random.default_rng(seed)
    starts = np.flatnonzero(g.degree > 0)
    starts = np.tile(starts, walks_per_node)
    rng.shuffle(starts)
    n_walkers = len(starts)
    walks = np.full((n_walkers, walk_length), -1, dtype=np.int64)
    walks[:, 0] = starts
    alive = np.ones(n_walkers, dtype=bool)
    biased = not (p == 1.0 and q == 1.0)
    a_return, a_out = 1.0 / p, 1.0 / q
    a_max = max(a_return, 1.0, a_out)
    for step in range(1, walk_length):
        cur = walks[:, step - 1]
        alive &= cur >= 0
        alive[alive] = g.degree[cur[alive]] > 0
        idx = np.flatnonzero(alive)
        if len(idx) == 0:
            break
        if not biased or step == 1:
            walks[idx, step] = g.weighted_step(cur[idx], rng)
            continue
        prev = walks[:, step - 2]
        pending = idx
        while len(pending):
            prop = g.weighted_step(cur[pending], rng)
            back = prop == prev[pending]
            near = g.is_edge(prev[pending], prop)
            alpha = np.where(back, a_return, np.where(near, 1.0, a_out))
            accept = rng.random(len(pending)) * a_max < alpha
            walks[pending[accept], step] = prop[accept]
            pending = pending[~accept]
    lengths = (walks >= 0).sum(axis=1)
    return [w[:n] for w, n in zip(walks, lengths) if n >= 2]
