"""Per-row rule notes: which selectors moved a served item, and why.

A note is one bit per selector in the `rerank_notes` column of the final candidates
(vectorised, a few bytes per row), next to `rank_before_rerank` (the ranker's position)
and `propensity` (the probability this item was put in this slot). `explain` turns them
into the sentences an explanation shows.
"""

from __future__ import annotations

import numpy as np

# selector name -> why it moves items (the bit is the position in this dict)
RULES: dict[str, str] = {
    "sink_price": "priced far above the user's usual range",
    "sink_similar": "too similar to something just consumed",
    "mmr": "diversity (MMR): relevance traded against similarity to items above",
    "dpp": "diversity (DPP): relevance traded against similarity to items above",
    "ratio_cap": "category ratio cap on the top of the list",
    "scatter": "category scattering: no long runs of one category",
    "fixed_slot": "fixed slot for a fresh item",
    "interleave": "interleaving of recall channels",
    "explore": "exploration slot for a fresh or rarely shown item",
}
BIT = {name: 1 << k for k, name in enumerate(RULES)}


def rules_of(note: int) -> list[str]:
    """Names of the selectors recorded in one row's note."""
    return [name for name, bit in BIT.items() if int(note) & bit]


def explain(note: int, rank_before: int, rank_after: int) -> list[str]:
    """Readable lines for one served item: where the ranker had it and what moved it."""
    names = rules_of(note)
    if not names:
        return []
    head = (
        f"moved from #{rank_before + 1} to #{rank_after + 1}"
        if rank_before != rank_after
        else f"kept at #{rank_after + 1}"
    )
    return [head] + [f"{name}: {RULES[name]}" for name in names]


def positions(order: np.ndarray, n_rows: int) -> np.ndarray:
    """Row -> its column in a padded (queries x width) order matrix; -1 when absent."""
    pos = np.full(n_rows, -1, dtype=np.int64)
    valid = order >= 0
    cols = np.broadcast_to(np.arange(order.shape[1]), order.shape)
    pos[order[valid]] = cols[valid]
    return pos
