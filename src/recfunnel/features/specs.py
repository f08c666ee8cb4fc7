"""Feature specs: what a ranking model's inputs are, declared once for every model.

A model never looks at raw tables; it reads candidate columns by the names declared here:

- sparse: one integer id per row (user id, item id, category, a demographic bucket);
  0 means unknown or padding, so every table reserves row 0;
- dense: one float per row (counts, rates, ages, channel scores); NaN means missing;
- sequence: K integer ids per row (the user's recent items, their categories), most
  recent first, 0-padded. A sequence names the sparse feature whose embedding table it
  shares (recent items use the item-id table), which is what DIN/DIEN attention needs.

The specs travel with a trained model (JSON), so a loaded model knows its inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from recfunnel.candidates import Candidates


@dataclass(frozen=True)
class SparseSpec:
    name: str
    vocab: int  # ids 0..vocab-1; 0 = unknown


@dataclass(frozen=True)
class SequenceSpec:
    name: str
    vocab: int
    length: int
    table: str  # sparse feature whose embedding table this sequence shares


@dataclass
class FeatureSpecs:
    sparse: list[SparseSpec] = field(default_factory=list)
    dense: list[str] = field(default_factory=list)
    sequence: list[SequenceSpec] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sparse] + list(self.dense) + [s.name for s in self.sequence]

    def with_dense(self, dense: list[str]) -> "FeatureSpecs":
        """The same sparse and sequence features with `dense` in front of the own dense ones."""
        extra = [d for d in self.dense if d not in dense]
        return FeatureSpecs(list(self.sparse), list(dense) + extra, list(self.sequence))

    def without(self, names: list[str]) -> "FeatureSpecs":
        """The same specs less the features in `names`; a table a kept sequence shares must stay."""
        drop = set(names)
        unknown = drop - set(self.names)
        if unknown:
            raise ValueError(f"no such features to leave out: {sorted(unknown)} (have {self.names})")
        shared = drop & {s.table for s in self.sequence if s.name not in drop}
        if shared:
            raise ValueError(f"cannot leave out {sorted(shared)}: a sequence feature shares its embedding table")
        return FeatureSpecs(
            [s for s in self.sparse if s.name not in drop],
            [d for d in self.dense if d not in drop],
            [s for s in self.sequence if s.name not in drop],
        )

    def to_json(self) -> dict:
        return {
            "sparse": [asdict(s) for s in self.sparse],
            "dense": list(self.dense),
            "sequence": [asdict(s) for s in self.sequence],
        }

    @classmethod
    def from_json(cls, d: dict) -> "FeatureSpecs":
        return cls(
            sparse=[SparseSpec(**s) for s in d["sparse"]],
            dense=list(d["dense"]),
            sequence=[SequenceSpec(**s) for s in d["sequence"]],
        )

    def encode(self, cands: Candidates) -> dict[str, np.ndarray]:
        """The model inputs of candidate rows: `sparse` (n x S int64), `dense` (n x D float32,
        NaN kept), and one (n x K int64) array per sequence feature."""
        n = len(cands)
        f = cands.features
        sparse = (
            np.column_stack([np.clip(f[s.name].astype(np.int64), 0, s.vocab - 1) for s in self.sparse])
            if self.sparse
            else np.zeros((n, 0), dtype=np.int64)
        )
        dense = (
            np.column_stack([f[d].astype(np.float32) for d in self.dense])
            if self.dense
            else np.zeros((n, 0), dtype=np.float32)
        )
        out = {"sparse": sparse, "dense": dense}
        for s in self.sequence:
            out[s.name] = np.clip(f[s.name].astype(np.int64), 0, s.vocab - 1).reshape(n, s.length)
        return out
