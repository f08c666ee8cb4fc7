"""Sequential next-item channels: SASRec (causal Transformer) and GRU4Rec.

Both read the user's most recent `max_len` items and predict the next one; the user
vector is the output at the last position, scored against the shared item embedding
table. They are trained with softmax cross-entropy over all items or, for speed on CPU,
over the positive plus `n_negatives` items sampled uniformly per batch (a sampled softmax;
with a few hundred negatives it lands close to the full softmax, far above the original
SASRec's one-negative binary loss). Early stopping reads NDCG@10 on the validation step;
the served model is refitted on all fit data for the best epoch count.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn

from recfunnel.data.dataset import Dataset
from recfunnel.data.split import leave_last_out
from recfunnel.evaluate.metrics import ndcg, target_ranks
from recfunnel.evaluate.ranking import full_ranking_topk
from recfunnel.nn.sequences import PAD, query_windows, training_windows, validation_sample
from recfunnel.nn.training import TrainConfig, train
from recfunnel.query import QueryBatch
from recfunnel.recall.embedding import EmbeddingConfig, EmbeddingSource


class SequentialConfig(EmbeddingConfig):
    normalize: bool = Field(False, description="L2-normalise item vectors (the model is trained for inner product)")
    max_len: int = Field(50, ge=2, description="most recent items the model reads")
    dropout: float = Field(0.3, ge=0, lt=1, description="dropout on embeddings and layers")
    n_negatives: int = Field(
        512, ge=0, description="sampled-softmax negatives per batch (0 = full softmax over all items)"
    )
    train: TrainConfig = TrainConfig()


class SASRecConfig(SequentialConfig):
    """sasrec: causal self-attention over the recent history (Kang & McAuley 2018), CE loss."""

    layers: int = Field(2, ge=1, description="Transformer blocks")
    heads: int = Field(1, ge=1, description="attention heads (must divide dim)")
    trim_padding: bool = Field(
        False,
        description="attention ignores padded positions (the original SASRec's key masking) and training batches "
        "group similar history lengths, cut to their longest: the same model, several times faster where "
        "most histories are far shorter than max_len (Beauty)",
    )


class GRU4RecConfig(SequentialConfig):
    """gru4rec: a GRU over the recent history (Hidasi et al. 2016), CE loss."""

    layers: int = Field(1, ge=1, description="stacked GRU layers")
    trim_padding: bool = Field(
        False,
        description="the GRU starts at the user's first item (packed sequences) instead of running over the "
        "padding, and training batches group similar history lengths, cut to their longest: several times "
        "faster where most histories are far shorter than max_len (Beauty)",
    )


class SASRecNet(nn.Module):
    def __init__(self, n_items: int, c: SASRecConfig) -> None:
        super().__init__()
        d = c.dim
        self.item = nn.Embedding(n_items + 1, d, padding_idx=PAD)
        self.pos = nn.Embedding(c.max_len, d)
        layer = nn.TransformerEncoderLayer(
            d, c.heads, dim_feedforward=d * 2, dropout=c.dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.blocks = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(c.dropout)
        self.scale = math.sqrt(d)
        self.max_len, self.heads, self.trim_padding = c.max_len, c.heads, c.trim_padding
        nn.init.normal_(self.item.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """(batch, n) left-padded tokens, n <= max_len -> (batch, n, dim); the last column
        always has position max_len - 1, so a window cut of its leading padding reads the same."""
        n = seq.shape[1]
        x = self.item(seq) * self.scale + self.pos(torch.arange(self.max_len - n, self.max_len, device=seq.device))
        x = self.drop(x) * (seq != PAD).unsqueeze(-1)
        if not self.trim_padding:
            causal = nn.Transformer.generate_square_subsequent_mask(n, device=seq.device)
            return self.norm(self.blocks(x, mask=causal, is_causal=True))
        # blocked: later positions and padded keys; a padded query keeps itself (no empty row, no NaN)
        later = torch.ones(n, n, dtype=torch.bool, device=seq.device).triu(1)
        pad = (seq == PAD).unsqueeze(1) & ~torch.eye(n, dtype=torch.bool, device=seq.device)
        blocked = (later | pad).repeat_interleave(self.heads, dim=0)
        return self.norm(self.blocks(x, mask=blocked))


class GRU4RecNet(nn.Module):
    def __init__(self, n_items: int, c: GRU4RecConfig) -> None:
        super().__init__()
        d = c.dim
        self.item = nn.Embedding(n_items + 1, d, padding_idx=PAD)
        self.gru = nn.GRU(d, d, num_layers=c.layers, batch_first=True, dropout=c.dropout if c.layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        self.trim_padding = c.trim_padding
        nn.init.normal_(self.item.weight, std=0.02)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.item(seq))
        if not self.trim_padding:
            out, _ = self.gru(x)
            return out
        # left padding -> right padding, packed: the GRU reads only real items, from h0 = 0
        n, d = seq.shape[1], x.shape[2]
        lengths = (seq != PAD).sum(1).clamp(min=1)
        shift = (n - lengths).unsqueeze(1)
        cols = torch.arange(n, device=seq.device).unsqueeze(0)
        right = x.gather(1, ((cols + shift) % n).unsqueeze(-1).expand(-1, -1, d))
        packed = nn.utils.rnn.pack_padded_sequence(right, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=n)
        return out.gather(1, ((cols - shift) % n).unsqueeze(-1).expand(-1, -1, d))


def next_item_loss(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], n_negatives: int) -> torch.Tensor:
    inputs, targets = batch
    h = net.encode(inputs)
    mask = targets != PAD
    h, pos = h[mask], targets[mask]
    table = net.item.weight
    n_tokens = table.shape[0]
    if n_negatives == 0:
        logits = h @ table[1:].T
        return nn.functional.cross_entropy(logits, pos - 1)
    neg = torch.randint(1, n_tokens, (n_negatives,), device=h.device)
    pos_logit = (h * table[pos]).sum(-1, keepdim=True)
    neg_logit = h @ table[neg].T
    neg_logit = neg_logit.masked_fill(neg.unsqueeze(0) == pos.unsqueeze(1), float("-inf"))  # accidental hits
    logits = torch.cat([pos_logit, neg_logit], dim=1)
    return nn.functional.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=h.device))


def length_batches(
    x: torch.Tensor, y: torch.Tensor, lengths: np.ndarray, order: np.ndarray, bs: int, rng: np.random.Generator
) -> list:
    """Batches of similar-length windows, each cut to its longest history.

    The shuffled order is sorted by length inside chunks of 64 batches (so batches still mix
    differently every epoch), and the batches are served in random order.
    """
    chunk = 64 * bs
    order = np.concatenate([o[np.argsort(lengths[o], kind="stable")] for o in np.split(order, range(chunk, len(order), chunk))])
    batches = [order[i : i + bs] for i in range(0, len(order), bs)]
    out = []
    for b in rng.permutation(len(batches)):
        idx = torch.from_numpy(batches[b])
        n = max(int(lengths[batches[b]].max()), 1)
        out.append((x[idx, -n:], y[idx, -n:]))
    return out


class SequentialSource(EmbeddingSource):
    """Base: trains `net` on next-item prediction; user vector = last position's output."""

    Net: type[nn.Module]

    def _new_net(self, n_items: int) -> nn.Module:
        torch.manual_seed(self.config.seed)  # the initial weights are part of the seeded run
        return self.Net(n_items, self.config)

    def learn_item_vectors(self, ds: Dataset) -> np.ndarray:
        c = self.config
        val = leave_last_out(ds)
        net = self._new_net(ds.n_items)
        result = self._train(net, val.fit, validate=self._validator(val), desc=f"{self.name} (validation)")
        self.train_report = {"best_epoch": result.best_epoch, "val_ndcg10": result.best_score, "history": result.history}
        if c.train.refit:
            net = self._new_net(ds.n_items)
            self._train(net, ds, fixed_epochs=result.best_epoch, desc=f"{self.name} (refit, {result.best_epoch} epochs)")
        self.net = net.eval()
        return self.net.item.weight.detach().numpy()[1:].copy()

    def _train(self, net: nn.Module, ds: Dataset, desc: str, validate=None, fixed_epochs=None):  # noqa: ANN001, ANN202
        c = self.config
        inputs, targets = training_windows(ds, c.max_len)
        x, y = torch.from_numpy(inputs), torch.from_numpy(targets)
        bs = c.train.batch_size
        lengths = (inputs != PAD).sum(axis=1)

        def epoch_steps(rng: np.random.Generator) -> list:
            order = rng.permutation(len(x))
            if not getattr(c, "trim_padding", False):
                order = torch.from_numpy(order)
                return [(x[order[i : i + bs]], y[order[i : i + bs]]) for i in range(0, len(x), bs)]
            return length_batches(x, y, lengths, order, bs, rng)

        return train(
            net,
            epoch_steps,
            lambda m, b: next_item_loss(m, b, c.n_negatives),
            c.train,
            seed=c.seed,
            validate=validate,
            fixed_epochs=fixed_epochs,
            desc=desc,
        )

    def _validator(self, val):  # noqa: ANN001, ANN202
        """NDCG@10 of the validation targets by full ranking, on a fixed user sample."""
        users, targets, batch = validation_sample(val, self.config.train.eval_users, self.config.seed)

        def validate(net: nn.Module) -> float:
            self.net = net
            vecs = net.item.weight.detach().numpy()[1:]
            u = self._encode(batch, slice(0, len(batch)))
            top = full_ranking_topk(lambda chunk: u[np.searchsorted(users, chunk)] @ vecs.T, users, val.fit.user_item, 10)
            return ndcg(target_ranks(top, targets), 10)

        return validate

    def _encode(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        tokens = torch.from_numpy(query_windows(batch, rows, self.config.max_len, self.n_items))
        with torch.no_grad():
            h = self.net.encode(tokens)[:, -1].numpy()
        h[(tokens == PAD).all(dim=1).numpy()] = 0.0
        return h

    def user_vectors(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        return self._encode(batch, rows)

    # ---- persistence: network weights in safetensors --------------------------------
    def save(self, directory: str | Path) -> None:
        super().save(directory)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(Path(directory) / "model.safetensors"))

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        src = super().load(directory)
        net = src._new_net(src.n_items)
        net.load_state_dict(load_file(str(Path(directory) / "model.safetensors")))
        src.net = net.eval()
        return src


class SASRecSource(SequentialSource):
    name = "sasrec"
    Config = SASRecConfig
    Net = SASRecNet


class GRU4RecSource(SequentialSource):
    name = "gru4rec"
    Config = GRU4RecConfig
    Net = GRU4RecNet
