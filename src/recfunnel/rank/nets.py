"""The CTR and multi-task networks, all reading inputs laid out by `FeatureSpecs`.

Every network maps a batch dict (`sparse` n x S ids, `dense` n x D normalised floats, one
n x K id matrix per sequence feature) to logits of shape (n, heads). Sequence features share
the embedding table of the sparse feature they name (recent items use the item-id table),
so attention can compare the candidate with the history in one space.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from recfunnel.features.specs import FeatureSpecs

Batch = dict[str, torch.Tensor]


class Dice(nn.Module):
    """DIN's data-adaptive activation: a PReLU whose switch point follows the batch's
    statistics, out = p * s + (1 - p) * alpha * s with p = sigmoid(batch-normalised s),
    so each unit's rectification moves with where its inputs lie."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(width, affine=False, eps=1e-8)
        self.alpha = nn.Parameter(torch.zeros(width))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.norm(s.reshape(-1, s.shape[-1])).reshape(s.shape))
        return p * s + (1 - p) * self.alpha * s


Activation = Literal["relu", "dice"]


def mlp(
    sizes: list[int], dropout: float = 0.0, last_activation: bool = True, activation: Activation = "relu"
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_activation:
            layers.append(Dice(sizes[i + 1]) if activation == "dice" else nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class FieldEmbeddings(nn.Module):
    """One vector per field: sparse ids, mean-pooled sequences, and dense values (value x
    a learned vector, as in FM). Also the first-order (LR) term over the same fields.

    With `dense_buckets`, each dense value's quantile bucket (input `dense_bucket`, n x D,
    0 = missing) is one more sparse field: a network reads a score's shape (where a channel
    rank or a count starts to matter) from the bucket embedding, which a single linear
    value x vector term cannot express; tree rankers get that for free."""

    def __init__(self, specs: FeatureSpecs, dim: int, dense_buckets: int = 0) -> None:
        super().__init__()
        self.specs = specs
        self.dim = dim
        self.sparse_names = [s.name for s in specs.sparse]
        vocab = {s.name: s.vocab for s in specs.sparse}
        self.seq_table: dict[str, str] = {}
        for s in specs.sequence:
            if s.table in vocab:
                self.seq_table[s.name] = s.table
            else:
                self.seq_table[s.name] = s.name
                vocab[s.name] = s.vocab
        self.tables = nn.ModuleDict({n: nn.Embedding(v, dim) for n, v in vocab.items()})
        self.weights = nn.ModuleDict({n: nn.Embedding(v, 1) for n, v in vocab.items()})
        for t in list(self.tables.values()) + list(self.weights.values()):
            nn.init.normal_(t.weight, std=0.05 if t.embedding_dim > 1 else 0.01)
        n_dense = len(specs.dense)
        self.dense_vectors = nn.Parameter(torch.randn(n_dense, dim) * 0.05)
        self.dense_linear = nn.Linear(n_dense, 1) if n_dense else None
        self.bias = nn.Parameter(torch.zeros(1))
        self.n_bucketed = n_dense if dense_buckets > 0 else 0
        if self.n_bucketed:
            rows = n_dense * (dense_buckets + 1)
            self.bucket_table = nn.Embedding(rows, dim)
            self.bucket_weight = nn.Embedding(rows, 1)
            nn.init.normal_(self.bucket_table.weight, std=0.05)
            nn.init.normal_(self.bucket_weight.weight, std=0.01)
            self.register_buffer("bucket_offset", torch.arange(n_dense) * (dense_buckets + 1), persistent=False)

    def count_ids(self, x: Batch) -> None:
        """Remember how often each id occurs in the training inputs `x`, per table, for
        `frequency_penalty` (kept out of the state dict: serving does not need it)."""
        counts = {n: torch.zeros(t.num_embeddings) for n, t in self.tables.items()}
        for n, ids in self._ids_by_table(x).items():
            counts[n] += torch.bincount(ids, minlength=len(counts[n]))[: len(counts[n])].float()
        self.id_counts = counts

    def frequency_penalty(self, x: Batch) -> torch.Tensor:
        """DIN's mini-batch aware L2: sum over the ids in this batch of ||e_id||^2 divided by
        the id's training frequency, for the embedding and first-order weight of each id.
        Frequent ids are regularised lightly, rare ones (which overfit first) strongly, and
        ids absent from the batch cost nothing, unlike a plain L2 on whole tables."""
        total = x["dense"].new_zeros(())
        for n, ids in self._ids_by_table(x).items():
            u = torch.unique(ids)
            u = u[u > 0]
            norm = self.tables[n].weight[u].pow(2).sum(1) + self.weights[n].weight[u].pow(2).sum(1)
            total = total + (norm / self.id_counts[n][u].clamp(min=1.0)).sum()
        return total

    def _ids_by_table(self, x: Batch) -> dict[str, torch.Tensor]:
        by: dict[str, list[torch.Tensor]] = {}
        for j, n in enumerate(self.sparse_names):
            by.setdefault(n, []).append(x["sparse"][:, j])
        for s in self.specs.sequence:
            by.setdefault(self.seq_table[s.name], []).append(x[s.name].reshape(-1))
        return {n: torch.cat(v) for n, v in by.items()}

    @property
    def n_fields(self) -> int:
        return len(self.specs.sparse) + self.n_bucketed + len(self.specs.sequence) + len(self.specs.dense)

    @property
    def sparse_width(self) -> int:
        """Width of the flattened sparse fields (ids and dense buckets)."""
        return (len(self.specs.sparse) + self.n_bucketed) * self.dim

    @property
    def deep_width(self) -> int:
        return self.sparse_width + len(self.specs.sequence) * self.dim + len(self.specs.dense)

    def sparse(self, x: Batch) -> torch.Tensor:
        """(n, S, d) embeddings of the sparse fields (the dense buckets last)."""
        out = [self.tables[n](x["sparse"][:, j]).unsqueeze(1) for j, n in enumerate(self.sparse_names)]
        if self.n_bucketed:
            out.append(self.bucket_table(x["dense_bucket"] + self.bucket_offset))
        if not out:
            return x["dense"].new_zeros((len(x["dense"]), 0, self.dim))
        return torch.cat(out, dim=1)

    def sequence(self, x: Batch, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, K, d) embeddings of a sequence and its (n, K) mask of real (non-pad) steps."""
        ids = x[name]
        return self.tables[self.seq_table[name]](ids), (ids > 0).float()

    def candidate(self, x: Batch, name: str) -> torch.Tensor:
        """(n, d) embedding of the candidate's value of the sparse field a sequence shares."""
        table = self.seq_table[name]
        j = self.sparse_names.index(table)
        return self.tables[table](x["sparse"][:, j])

    def candidate_bias(self, x: Batch, name: str) -> torch.Tensor:
        """(n,) first-order weight of the candidate's value of the sparse field a sequence shares."""
        table = self.seq_table[name]
        return self.weights[table](x["sparse"][:, self.sparse_names.index(table)]).squeeze(-1)

    def pooled(self, x: Batch) -> torch.Tensor:
        """(n, nseq, d) masked mean of each sequence."""
        out = []
        for s in self.specs.sequence:
            e, m = self.sequence(x, s.name)
            out.append((e * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0))
        if not out:
            return x["dense"].new_zeros((len(x["dense"]), 0, self.dim))
        return torch.stack(out, dim=1)

    def fields(self, x: Batch) -> torch.Tensor:
        """(n, F, d): sparse, pooled sequence and dense fields."""
        dense = x["dense"].unsqueeze(-1) * self.dense_vectors.unsqueeze(0)
        return torch.cat([self.sparse(x), self.pooled(x), dense], dim=1)

    def deep_input(self, x: Batch, sequence: torch.Tensor | None = None) -> torch.Tensor:
        """Flat input of the MLPs: sparse embeddings, sequences (pooled unless given), dense."""
        seq = self.pooled(x).flatten(1) if sequence is None else sequence
        return torch.cat([self.sparse(x).flatten(1), seq, x["dense"]], dim=1)

    def first_order(self, x: Batch) -> torch.Tensor:
        """(n,) logistic-regression term: a weight per id, per pooled sequence id, per dense value."""
        out = self.bias.expand(len(x["dense"])).clone()
        for j, n in enumerate(self.sparse_names):
            out = out + self.weights[n](x["sparse"][:, j]).squeeze(-1)
        for s in self.specs.sequence:
            ids = x[s.name]
            w = self.weights[self.seq_table[s.name]](ids).squeeze(-1)
            m = (ids > 0).float()
            out = out + (w * m).sum(1) / m.sum(1).clamp(min=1.0)
        if self.dense_linear is not None:
            out = out + self.dense_linear(x["dense"]).squeeze(-1)
        if self.n_bucketed:
            out = out + self.bucket_weight(x["dense_bucket"] + self.bucket_offset).squeeze(-1).sum(1)
        return out


def fm_interaction(fields: torch.Tensor) -> torch.Tensor:
    """(n,) second-order FM term: sum over field pairs of <v_i, v_j>."""
    s = fields.sum(1)
    return 0.5 * (s * s - (fields * fields).sum(1)).sum(1)


class Net(nn.Module):
    heads = 1

    def __init__(self, specs: FeatureSpecs, config) -> None:  # noqa: ANN001 - a NeuralRankerConfig
        super().__init__()
        self.emb = FieldEmbeddings(specs, config.embed_dim, config.dense_buckets)
        self.aux_loss: torch.Tensor | None = None


class Ensemble(nn.Module):
    """Nets of one kind trained apart from different seeds; the logits are averaged."""

    def __init__(self, members: list[Net]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.heads = members[0].heads

    def forward(self, x: Batch) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


class LRNet(Net):
    def forward(self, x: Batch) -> torch.Tensor:
        return self.emb.first_order(x).unsqueeze(1)


class FMNet(Net):
    def forward(self, x: Batch) -> torch.Tensor:
        return (self.emb.first_order(x) + fm_interaction(self.emb.fields(x))).unsqueeze(1)


class FFMNet(Net):
    """Field-aware FM (Juan et al. 2016): each field keeps one vector per other field, and
    a pair (i, j) interacts through <v_i for field j, v_j for field i>, so a user's vector
    for items can differ from the one it shows categories. One `FieldEmbeddings` per
    field holds the vectors every field keeps for it; the first-order term is the base's."""

    def __init__(self, specs: FeatureSpecs, config) -> None:  # noqa: ANN001
        super().__init__(specs, config)
        n = self.emb.n_fields
        self.toward = nn.ModuleList(FieldEmbeddings(specs, config.embed_dim, config.dense_buckets) for _ in range(n))
        self.register_buffer("pairs", torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1), persistent=False)

    def forward(self, x: Batch) -> torch.Tensor:
        v = torch.stack([e.fields(x) for e in self.toward], 1)  # [:, j, i] = field i's vector for field j
        pair = (v * v.transpose(1, 2)).sum(-1)  # [:, j, i] = <v_i for j, v_j for i>
        return (self.emb.first_order(x) + pair[:, self.pairs].sum(1)).unsqueeze(1)


class WideDeepNet(Net):
    """Wide: the first-order term over ids (memorisation); deep: an MLP over embeddings."""

    def __init__(self, specs: FeatureSpecs, config) -> None:  # noqa: ANN001
        super().__init__(specs, config)
        self.deep = mlp([self.emb.deep_width, *config.hidden, 1], config.dropout, last_activation=False)

    def forward(self, x: Batch) -> torch.Tensor:
        return (self.emb.first_order(x) + self.deep(self.emb.deep_input(x)).squeeze(-1)).unsqueeze(1)


class DeepFMNet(WideDeepNet):
    """FM and a deep MLP over the same field embeddings."""

    def forward(self, x: Batch) -> torch.Tensor:
        fm = self.emb.first_order(x) + fm_interaction(self.emb.fields(x))
        return (fm + self.deep(self.emb.deep_input(x)).squeeze(-1)).unsqueeze(1)


class ActivationUnit(nn.Module):
    """DIN's local activation: a weight per history step from [h, c, h - c, h * c]."""

    def __init__(self, width: int, hidden: list[int], activation: Activation = "relu") -> None:
        super().__init__()
        self.net = mlp([4 * width, *hidden, 1], last_activation=False, activation=activation)

    def forward(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        c = cand.unsqueeze(1).expand_as(hist)
        return self.net(torch.cat([hist, c, hist - c, hist * c], dim=-1)).squeeze(-1)


def _history(emb: FieldEmbeddings, x: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """History steps and the candidate in one space: every sequence's embedding concatenated
    (n, K, nseq*d), its mask (n, K) and the candidate's matching vector (n, nseq*d)."""
    seqs, cands, mask = [], [], None
    for s in emb.specs.sequence:
        e, m = emb.sequence(x, s.name)
        seqs.append(e)
        cands.append(emb.candidate(x, s.name))
        mask = m if mask is None else torch.maximum(mask, m)
    return torch.cat(seqs, -1), mask, torch.cat(cands, -1)


class AttentionNet(Net):
    """Base of DIN and DIEN: the MLP reads the sparse fields, the attended history and the
    dense values; with `history_product` also the mean-pooled history and its element-wise
    product with the candidate, so the MLP need not learn a dot product from a concatenation
    (which MLPs do poorly) to see how close the candidate is to the user's average taste."""

    def __init__(self, specs: FeatureSpecs, config) -> None:  # noqa: ANN001
        super().__init__(specs, config)
        self.width = len(specs.sequence) * config.embed_dim
        self.attention = ActivationUnit(self.width, config.attention_hidden, config.activation)
        self.history_product = config.history_product
        deep_in = self.emb.sparse_width + self.width * (3 if self.history_product else 1) + len(specs.dense)
        self.deep = mlp([deep_in, *config.hidden, 1], config.dropout, last_activation=False, activation=config.activation)

    def deep_logit(
        self, x: Batch, interest: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor, cand: torch.Tensor
    ) -> torch.Tensor:
        """(n,) MLP output over the deep input around the attended `interest`."""
        if self.history_product:
            mean = (hist * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
            interest = torch.cat([interest, mean, mean * cand], dim=1)
        return self.deep(self.emb.deep_input(x, interest)).squeeze(-1)


class DINNet(AttentionNet):
    """Deep Interest Network: the candidate attends over the behaviour sequence (weights
    are not normalised, as in the paper, so the interest's size says how relevant it is;
    `attention_softmax` normalises them, as the authors' code does). With `item_bias`, the
    logit adds the candidate item's own bias, as the authors' code does (`item_b`); with
    `recency_keys`, the unit reads each step plus an embedding of how recent it is."""

    def __init__(self, specs: FeatureSpecs, config) -> None:  # noqa: ANN001
        super().__init__(specs, config)
        self.item_bias = config.item_bias
        self.softmax = config.attention_softmax
        self.recency = None
        if config.recency_keys and specs.sequence:
            self.recency = nn.Parameter(torch.zeros(max(s.length for s in specs.sequence), self.width))

    def interest(self, hist: torch.Tensor, mask: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """(n, width): the history steps weighted by the activation unit."""
        keys = hist if self.recency is None else hist + self.recency[: hist.shape[1]]
        w = self.attention(keys, cand)
        if self.softmax:
            w = torch.softmax(w.masked_fill(mask == 0, -1e9), dim=1)
        return ((w * mask).unsqueeze(-1) * hist).sum(1)

    def forward(self, x: Batch) -> torch.Tensor:
        hist, mask, cand = _history(self.emb, x)
        logit = self.deep_logit(x, self.interest(hist, mask, cand), hist, mask, cand) + self.emb.bias
        if self.item_bias:
            logit = logit + self.emb.candidate_bias(x, self.emb.specs.sequence[0].name)
        return logit.unsqueeze(1)


class AUGRUCell(nn.Module):
    """GRU cell whose update gate is scaled by an attention score (DIEN's AUGRU)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.x2h = nn.Linear(width, 3 * width)
        self.h2h = nn.Linear(width, 3 * width)

    def forward(self, x: torch.Tensor, h: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        xr, xu, xn = self.x2h(x).chunk(3, -1)
        hr, hu, hn = self.h2h(h).chunk(3, -1)
        r = torch.sigmoid(xr + hr)
        u = torch.sigmoid(xu + hu) * att.unsqueeze(-1)
        n = torch.tanh(xn + r * hn)
        return (1 - u) * h + u * n


class DIENNet(AttentionNet):
    """Deep Interest Evolution Network: a GRU extracts interest states from the history
    (trained with the auxiliary next-behaviour loss), an AUGRU evolves them under the
    candidate's attention, and the final state joins the MLP input."""

    def __init__(self, specs: FeatureSpecs, config) -> None:  # noqa: ANN001
        super().__init__(specs, config)
        self.extract = nn.GRUCell(self.width, self.width)
        self.evolve = AUGRUCell(self.width)

    def forward(self, x: Batch) -> torch.Tensor:
        hist, mask, cand = _history(self.emb, x)
        hist, mask = hist.flip(1), mask.flip(1)  # oldest first (pads lead and are skipped)
        n, k, w = hist.shape
        h = hist.new_zeros((n, w))
        states = []
        for t in range(k):
            m = mask[:, t : t + 1]
            h = m * self.extract(hist[:, t], h) + (1 - m) * h
            states.append(h)
        s = torch.stack(states, 1)
        if self.training and k > 1:
            pos = hist[:, 1:]
            neg = hist[torch.randperm(n, device=hist.device), 1:]
            both = mask[:, 1:] * mask[:, :-1]
            lp = (s[:, :-1] * pos).sum(-1)
            ln = (s[:, :-1] * neg).sum(-1)
            loss = nn.functional.softplus(-lp) + nn.functional.softplus(ln)
            self.aux_loss = (loss * both).sum() / both.sum().clamp(min=1.0)
        logits = self.attention(s, cand).masked_fill(mask == 0, -1e9)
        att = torch.softmax(logits, dim=1) * mask
        h = hist.new_zeros((n, w))
        for t in range(k):
            h = self.evolve(s[:, t], h, att[:, t])
        return (self.deep_logit(x, h, hist, mask, cand) + self.emb.bias).unsqueeze(1)


class SharedBottomNet(Net):
    """Multi-task: one shared MLP, a small tower per task (interact, like)."""

    heads = 2

    def __init__(self, specs: FeatureSpecs, config) -> None:  # noqa: ANN001
        super().__init__(specs, config)
        self.bottom = mlp([self.emb.deep_width, *config.hidden], config.dropout)
        self.towers = nn.ModuleList(
            [mlp([config.hidden[-1], config.tower_hidden, 1], last_activation=False) for _ in range(self.heads)]
        )

    def forward(self, x: Batch) -> torch.Tensor:
        z = self.bottom(self.emb.deep_input(x))
        return torch.cat([t(z) for t in self.towers], dim=1)


class MMoENet(Net):
    """Multi-gate mixture of experts: experts shared, one softmax gate and tower per task."""

    heads = 2

    def __init__(self, specs: FeatureSpecs, config) -> None:  # noqa: ANN001
        super().__init__(specs, config)
        d = self.emb.deep_width
        self.experts = nn.ModuleList([mlp([d, *config.hidden], config.dropout) for _ in range(config.n_experts)])
        self.gates = nn.ModuleList([nn.Linear(d, config.n_experts) for _ in range(self.heads)])
        self.towers = nn.ModuleList(
            [mlp([config.hidden[-1], config.tower_hidden, 1], last_activation=False) for _ in range(self.heads)]
        )

    def forward(self, x: Batch) -> torch.Tensor:
        z = self.emb.deep_input(x)
        experts = torch.stack([e(z) for e in self.experts], dim=1)  # n, E, h
        out = []
        for gate, tower in zip(self.gates, self.towers):
            g = torch.softmax(gate(z), dim=-1).unsqueeze(-1)
            out.append(tower((g * experts).sum(1)))
        return torch.cat(out, dim=1)
