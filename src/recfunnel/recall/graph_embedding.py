"""Graph embeddings: DeepWalk and Node2Vec on the item transition graph.

The graph: an edge a -> b weighted by how many users went from a to b inside one session
(sessions split at `session_gap_hours`). Random walks over it (vectorised, see `walks`)
form the corpus for skip-gram. Node2Vec's `p` (return) and `q` (in-out) bias the walks
toward local (BFS-like, q > 1) or exploratory (DFS-like, q < 1) neighbourhoods.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recfunnel.data.dataset import Dataset
from recfunnel.recall.cooccurrence import session_ids
from recfunnel.recall.embedding import EmbeddingSource
from recfunnel.recall.item2vec import SkipGramConfig, skip_gram
from recfunnel.recall.walks import random_walks


class DeepWalkConfig(SkipGramConfig):
    """deepwalk: uniform weighted walks on the session-transition graph + skip-gram."""

    session_gap_hours: float = Field(24.0 * 30, gt=0, description="a longer gap starts a new session")
    directed: bool = Field(False, description="walk edges only forward in time (else both ways)")
    walks_per_node: int = Field(10, ge=1, description="walks started from every item")
    walk_length: int = Field(20, ge=2, description="items per walk")


class Node2VecConfig(DeepWalkConfig):
    """node2vec: p/q-biased second-order walks on the session-transition graph + skip-gram."""

    p: float = Field(1.0, gt=0, description="return parameter: high p rarely steps straight back")
    q: float = Field(2.0, gt=0, description="in-out parameter: q < 1 explores outward, q > 1 stays local (measured best)")


def transition_graph(ds: Dataset, gap_hours: float, directed: bool) -> sp.csr_matrix:
    """items x items; weight(a, b) = distinct users who went from a to b in a session."""
    sess = session_ids(ds, gap_hours * 3600)
    ok = (sess[1:] == sess[:-1]) & (ds.item[1:] != ds.item[:-1])
    u, a, b = ds.user[:-1][ok].astype(np.int64), ds.item[:-1][ok].astype(np.int64), ds.item[1:][ok].astype(np.int64)
    n = ds.n_items
    key = np.unique((u * n + a) * n + b)  # one vote per user and pair
    a, b = (key // n) % n, key % n
    g = sp.csr_matrix((np.ones(len(a), dtype=np.float32), (a, b)), shape=(n, n))
    g.sum_duplicates()
    return g if directed else (g + g.T).tocsr()


class DeepWalkSource(EmbeddingSource):
    name = "deepwalk"
    Config = DeepWalkConfig

    def walk_bias(self) -> tuple[float, float]:
        return 1.0, 1.0

    def learn_item_vectors(self, ds: Dataset) -> np.ndarray:
        c = self.config
        graph = transition_graph(ds, c.session_gap_hours, c.directed)
        p, q = self.walk_bias()
        walks = random_walks(graph, c.walks_per_node, c.walk_length, p=p, q=q, seed=c.seed)
        return skip_gram([w.astype(str).tolist() for w in walks], ds.n_items, c)


class Node2VecSource(DeepWalkSource):
    name = "node2vec"
    Config = Node2VecConfig

    def walk_bias(self) -> tuple[float, float]:
        return self.config.p, self.config.q
