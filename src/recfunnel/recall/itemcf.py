"""ItemCF: items liked by the same people, cosine with inverse-user-frequency weighting.

sim(i, j) = sum over users u who touched both of 1/log(1 + |N(u)|), divided by
sqrt(|N(i)| |N(j)|): a heavy user's co-occurrences say less about item relatedness than a
light user's. Only each item's top `neighbors` are kept, so the model stays sparse.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recfunnel.data.dataset import Dataset
from recfunnel.recall.base import ItemItemConfig, ItemItemSource
from recfunnel.recall.sparse_ops import row_chunks, top_k_per_row


class ItemCFConfig(ItemItemConfig):
    """itemcf: items consumed by the same people (IUF-weighted cosine), voted by the history."""

    neighbors: int = Field(200, ge=1, description="similar items kept per item")
    iuf: bool = Field(True, description="down-weight co-occurrences from heavy users")


class ItemCFSource(ItemItemSource):
    name = "itemcf"
    Config = ItemCFConfig

    def build_matrix(self, ds: Dataset) -> sp.csr_matrix:
        return item_similarity(ds.user_item, self.config.neighbors, self.config.iuf)


def item_similarity(user_item: sp.csr_matrix, neighbors: int, iuf: bool = True) -> sp.csr_matrix:
    """Top-`neighbors` IUF-cosine similarity per item (items x items CSR, no diagonal)."""
    x = sp.csr_matrix(user_item, dtype=np.float32)
    n_u = np.asarray(x.sum(axis=1)).ravel()
    w = 1.0 / np.log1p(np.maximum(n_u, 1.0)) if iuf else np.ones_like(n_u)
    xw = sp.diags(w.astype(np.float32)) @ x
    xt = x.T.tocsr()
    n_i = np.asarray(x.sum(axis=0)).ravel()
    inv = 1.0 / np.sqrt(np.maximum(n_i, 1.0))
    blocks = []
    for rows in row_chunks(x.shape[1], 2048):
        co = (xt[rows] @ xw).tocsr()  # chunk of items x items
        co = sp.diags(inv[rows]) @ co @ sp.diags(inv)
        co = co.tocsr()
        _zero_diag(co, rows.start)
        co.eliminate_zeros()
        blocks.append(top_k_per_row(co, neighbors))
    return sp.vstack(blocks).tocsr().astype(np.float32)


def _zero_diag(block: sp.csr_matrix, offset: int) -> None:
    """Zero entries (r, r + offset) of a row block in place."""
    rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
    block.data[block.indices == rows + offset] = 0.0
