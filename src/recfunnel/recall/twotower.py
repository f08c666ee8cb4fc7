"""Two-tower recall: DSSM and YouTubeDNN (MIND, the multi-interest variant, is in mind.py).

A user tower turns the query's recent history (mean-pooled item embeddings of the last
`max_len` items) and the user's attributes into a vector; the item side is a table (or an
item tower over id + categories) that runs offline and fills the ANN index. Training
examples are next-item steps: every event of a user after the first is a target, the
`max_len` events before it the history, as the sequential channels do. The loss is a
softmax over the positive and sampled negatives with the log-Q correction (Yi et al. 2019):
each logit is reduced by `logq_weight * log(expected count of that item among the
negatives)`, which undoes the popularity bias the sampler adds. Early stopping reads
NDCG@10 on the validation step; the served model is refitted on all fit data.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn

from recfunnel.data.dataset import Dataset
from recfunnel.data.split import leave_last_out
from recfunnel.evaluate.metrics import ndcg, target_ranks
from recfunnel.evaluate.ranking import full_ranking_topk
from recfunnel.nn.features import FieldEmbeddings, UserFeatures, item_category_tokens, masked_mean, mlp
from recfunnel.nn.sequences import PAD, history_windows, prefix_examples, query_windows, validation_sample
from recfunnel.nn.training import TrainConfig, train
from recfunnel.persist import read_json, write_json
from recfunnel.query import QueryBatch
from recfunnel.recall.embedding import EmbeddingConfig, EmbeddingSource

Batch = dict[str, torch.Tensor]


class NeuralRecallConfig(EmbeddingConfig):
    normalize: bool = Field(False, description="L2-normalise item vectors (the model is trained for inner product)")
    max_len: int = Field(20, ge=1, description="most recent history items the user tower mean-pools")
    hidden: list[int] = Field([128], description="hidden layer sizes of the tower MLPs")
    feature_dim: int = Field(8, ge=1, description="embedding size of each user attribute field")
    user_features: bool = Field(True, description="feed the data set's user attributes (if any) to the user tower")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on pooled history and hidden layers")
    logq_weight: float = Field(1.0, ge=0, le=1, description="strength of the log-Q correction (0 = none)")
    temperature: float = Field(1.0, gt=0, description="logits are scores / temperature")
    max_examples_per_user: int = Field(0, ge=0, description="latest next-item examples per user (0 = all)")
    train: TrainConfig = TrainConfig(learning_rate=2e-3, batch_size=512, eval_every=1, patience=3)


class SampledSoftmaxConfig(NeuralRecallConfig):
    n_negatives: int = Field(512, ge=1, description="sampled-softmax negatives per batch")
    sampling_power: float = Field(0.75, ge=0, le=1, description="negatives drawn ~ count**power (0 = uniform)")


def sampled_softmax(
    user: torch.Tensor,
    pos: torch.Tensor,
    pos_id: torch.Tensor,
    neg: torch.Tensor,
    neg_id: torch.Tensor,
    pos_logq: torch.Tensor,
    neg_logq: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Cross-entropy of the positive against shared negatives; negatives equal to a row's
    positive (accidental hits) are masked out of that row."""
    pos_logit = (user * pos).sum(-1, keepdim=True) / temperature - pos_logq[:, None]
    neg_logit = user @ neg.T / temperature - neg_logq[None, :]
    neg_logit = neg_logit.masked_fill(neg_id[None, :] == pos_id[:, None], float("-inf"))
    logits = torch.cat([pos_logit, neg_logit], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(user), dtype=torch.long, device=user.device))


class NeuralRecallSource(EmbeddingSource):
    """Base of the neural two-tower channels: data, training, serving, persistence.

    A subclass gives the network (`_build_net`), the loss of one batch (`_loss`) and, if it
    feeds more than history and user attributes, extra per-example inputs.
    """

    Config: ClassVar[type[NeuralRecallConfig]]

    # ---- the model ------------------------------------------------------------------
    @abstractmethod
    def _build_net(self) -> nn.Module: ...

    def _new_net(self) -> nn.Module:
        torch.manual_seed(self.config.seed)  # the initial weights are part of the seeded run
        return self._build_net()

    @abstractmethod
    def _loss(self, net: nn.Module, b: Batch) -> torch.Tensor: ...

    def _extras(self, ds: Dataset, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Per-example training inputs beyond history, attributes and target."""
        return {}

    def _serve_extras(self, n: int) -> dict[str, torch.Tensor]:
        return {}

    def _describe(self, ds: Dataset) -> dict[str, Any]:
        """Shape facts the network needs, saved with it (so loading needs no Dataset)."""
        return {}

    # ---- training -------------------------------------------------------------------
    def learn_item_vectors(self, ds: Dataset) -> np.ndarray:
        c = self.config
        self.features = UserFeatures.fit(ds) if c.user_features else UserFeatures(codes=np.zeros((ds.n_users, 0), np.int64))
        self.meta = self._describe(ds)
        self._catalog = ds
        val = leave_last_out(ds)
        net = self._new_net()
        result = self._train(net, val.fit, validate=self._validator(val), desc=f"{self.name} (validation)")
        self.train_report = {"best_epoch": result.best_epoch, "val_ndcg10": result.best_score, "history": result.history}
        if c.train.refit:
            net = self._new_net()
            self._train(net, ds, fixed_epochs=result.best_epoch, desc=f"{self.name} (refit, {result.best_epoch} epochs)")
        self.net = net.eval()
        del self._catalog
        return self._item_vectors(self.net)

    def _train(self, net: nn.Module, ds: Dataset, desc: str, validate=None, fixed_epochs=None):  # noqa: ANN001, ANN202
        c = self.config
        users, positions = prefix_examples(ds, c.max_examples_per_user)
        targets = ds.item[positions].astype(np.int64) + 1
        data = {
            "hist": torch.from_numpy(history_windows(ds, positions, c.max_len)),
            "codes": torch.from_numpy(self.features.codes[users]),
            "target": torch.from_numpy(targets),
            **{k: torch.from_numpy(v) for k, v in self._extras(ds, positions).items()},
        }
        counts = np.bincount(targets, minlength=ds.n_items + 1).astype(np.float64)
        self._target_share = torch.from_numpy(counts / max(counts.sum(), 1.0)).float()
        power = getattr(c, "sampling_power", 0.0)
        weights = counts[1:] ** power if power > 0 else np.ones(ds.n_items)
        self._sampling = torch.from_numpy(np.concatenate([[0.0], weights / weights.sum()])).float()
        bs = c.train.batch_size

        def epoch_steps(rng: np.random.Generator) -> list:
            order = torch.from_numpy(rng.permutation(len(targets)))
            return [{k: v[order[i : i + bs]] for k, v in data.items()} for i in range(0, len(targets), bs)]

        return train(net, epoch_steps, self._loss, c.train, seed=c.seed, validate=validate, fixed_epochs=fixed_epochs, desc=desc)

    def _sample_negatives(self, pos_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(negative ids, their log-Q, the positives' log-Q) for the sampled softmax."""
        c = self.config
        neg = torch.multinomial(self._sampling, c.n_negatives, replacement=True)
        expected = self._sampling * c.n_negatives
        logq = c.logq_weight * torch.log(expected.clamp(min=1e-12))
        return neg, logq[neg], logq[pos_id]

    def _validator(self, val):  # noqa: ANN001, ANN202
        """NDCG@10 of the validation targets by full ranking, on a fixed user sample."""
        users, targets, batch = validation_sample(val, self.config.train.eval_users, self.config.seed)

        def validate(net: nn.Module) -> float:
            self.net = net
            self.item_vectors = self._item_vectors(net)

            def scores(chunk: np.ndarray) -> np.ndarray:
                lo = int(np.searchsorted(users, chunk[0]))
                return self.score(batch, slice(lo, lo + len(chunk)))

            top = full_ranking_topk(scores, users, val.fit.user_item, 10)
            return ndcg(target_ranks(top, targets), 10)

        return validate

    # ---- serving ----------------------------------------------------------------------
    def _item_vectors(self, net: nn.Module) -> np.ndarray:
        with torch.no_grad():
            return net.item_vector(torch.arange(1, self.n_items + 1)).numpy().astype(np.float32)

    def _user_inputs(self, batch: QueryBatch, rows: slice) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """History tokens, attribute codes, and which rows have anything to go on."""
        hist = query_windows(batch, rows, self.config.max_len, self.n_items)
        codes = self.features.lookup(batch, rows)
        has = (hist != PAD).any(axis=1) | (codes != 0).any(axis=1)
        return torch.from_numpy(hist), torch.from_numpy(codes), has

    def user_vectors(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        """The user tower on the query's current history and attributes (zeros: nothing known)."""
        hist, codes, has = self._user_inputs(batch, rows)
        with torch.no_grad():
            u = self.net.user_vector(hist, codes, **self._serve_extras(len(hist))).numpy().astype(np.float32)
        u[~has] = 0.0
        return u

    # ---- persistence: network in safetensors, attribute vocabularies in JSON ------------
    def state(self) -> dict[str, Any]:
        return {**super().state(), "user_codes": self.features.codes}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._user_codes = state["user_codes"]

    def save(self, directory: str | Path) -> None:
        super().save(directory)
        d = Path(directory)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(d / "model.safetensors"))
        write_json(d / "model.json", {"user_fields": self.features.to_json(), "meta": self.meta})

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        src = super().load(directory)
        d = Path(directory)
        info = read_json(d / "model.json")
        src.features = UserFeatures(info["user_fields"], src._user_codes)
        src.meta = info["meta"]
        net = src._new_net()
        net.load_state_dict(load_file(str(d / "model.safetensors")))
        src.net = net.eval()
        return src


# ---- DSSM ----------------------------------------------------------------------------------
class DSSMConfig(NeuralRecallConfig):
    """dssm: two towers (user: attributes + pooled history; item: id + categories), cosine, in-batch softmax."""

    normalize: bool = Field(True, description="L2-normalise item vectors (the towers output unit vectors)")
    temperature: float = Field(0.05, gt=0, description="cosine / temperature are the logits")
    n_random_negatives: int = Field(
        0, ge=0, description="uniform random negatives mixed into the in-batch ones (mixed negative sampling)"
    )
    max_len: int = Field(3, ge=1, description="most recent history items the user tower mean-pools")
    share_embeddings: bool = Field(True, description="the user tower pools the item tower's id embeddings")
    item_categories: bool = Field(True, description="the item tower pools the item's category embeddings")


class DSSMNet(nn.Module):
    def __init__(self, n_items: int, user_sizes: list[int], meta: dict[str, Any], c: DSSMConfig) -> None:
        super().__init__()
        d = c.dim
        self.item = nn.Embedding(n_items + 1, d, padding_idx=PAD)
        # shared: the user tower pools the item tower's own table (one tensor in the state dict)
        self.history = None if c.share_embeddings else nn.Embedding(n_items + 1, d, padding_idx=PAD)
        self.use_categories = c.item_categories
        self.category = nn.Embedding(meta["n_categories"] + 1, d, padding_idx=0)
        self.register_buffer("item_categories", torch.zeros((n_items + 1, meta["category_width"]), dtype=torch.long))
        self.fields = FieldEmbeddings(user_sizes, c.feature_dim)
        self.drop = nn.Dropout(c.dropout)
        self.user_mlp = mlp([d + self.fields.out_dim, *c.hidden, d], c.dropout)
        self.item_mlp = mlp([2 * d if c.item_categories else d, *c.hidden, d], c.dropout)
        for e in (self.item, self.history, self.category):
            if e is not None:
                nn.init.normal_(e.weight, std=0.05)

    def user_vector(self, hist: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        pooled = masked_mean((self.history or self.item)(hist), hist != PAD)
        return F.normalize(self.user_mlp(torch.cat([self.drop(pooled), self.fields(codes)], dim=1)), dim=-1)

    def item_vector(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.item(tokens)
        if self.use_categories:
            cats = self.item_categories[tokens]
            x = torch.cat([x, masked_mean(self.category(cats), cats != 0)], dim=1)
        return F.normalize(self.item_mlp(x), dim=-1)


class DSSMSource(NeuralRecallSource):
    name = "dssm"
    Config = DSSMConfig

    def _describe(self, ds: Dataset) -> dict[str, Any]:
        self._categories = item_category_tokens(ds)
        return {"n_categories": len(ds.category_ids), "category_width": int(self._categories.shape[1])}

    def _build_net(self) -> nn.Module:
        net = DSSMNet(self.n_items, self.features.sizes, self.meta, self.config)
        if hasattr(self, "_categories"):
            net.item_categories.copy_(torch.from_numpy(self._categories))
        return net

    def _loss(self, net: nn.Module, b: Batch) -> torch.Tensor:
        c = self.config
        user = net.user_vector(b["hist"], b["codes"])
        pos_id = b["target"]
        pos = net.item_vector(pos_id)
        # in-batch negatives: item j shows up as a negative B * share(j) times in expectation
        logq = c.logq_weight * torch.log((self._target_share[pos_id] * len(pos_id)).clamp(min=1e-12))
        neg, neg_id, neg_logq = pos, pos_id, logq
        if c.n_random_negatives:
            rand = torch.randint(1, self.n_items + 1, (c.n_random_negatives,))
            rand_logq = torch.full((len(rand),), c.logq_weight * float(np.log(c.n_random_negatives / self.n_items)))
            neg = torch.cat([pos, net.item_vector(rand)])
            neg_id = torch.cat([pos_id, rand])
            neg_logq = torch.cat([logq, rand_logq])
        return sampled_softmax(user, pos, pos_id, neg, neg_id, logq, neg_logq, c.temperature)


# ---- YouTubeDNN -----------------------------------------------------------------------------
class YouTubeDNNConfig(SampledSoftmaxConfig):
    """youtubednn: pooled watch history + attributes + example age -> MLP; sampled softmax (Covington et al. 2016)."""

    max_len: int = Field(5, ge=1, description="most recent history items the user tower mean-pools")
    example_age: bool = Field(True, description="feed the example's age before the end of the training data (0 at serving)")


class YouTubeDNNNet(nn.Module):
    def __init__(self, n_items: int, user_sizes: list[int], c: YouTubeDNNConfig) -> None:
        super().__init__()
        d = c.dim
        self.item = nn.Embedding(n_items + 1, d, padding_idx=PAD)  # watch-history embeddings
        self.out = nn.Embedding(n_items + 1, d)  # softmax weights: the served item vectors
        self.fields = FieldEmbeddings(user_sizes, c.feature_dim)
        self.use_age = c.example_age
        self.drop = nn.Dropout(c.dropout)
        self.mlp = mlp([d + self.fields.out_dim + (2 if c.example_age else 0), *c.hidden, d], c.dropout)
        nn.init.normal_(self.item.weight, std=0.05)
        nn.init.normal_(self.out.weight, std=0.05)

    def user_vector(self, hist: torch.Tensor, codes: torch.Tensor, age: torch.Tensor | None = None) -> torch.Tensor:
        parts = [self.drop(masked_mean(self.item(hist), hist != PAD)), self.fields(codes)]
        if self.use_age:
            a = age if age is not None else hist.new_zeros(len(hist), dtype=torch.float32)
            parts.append(torch.stack([a, a * a], dim=1))
        return self.mlp(torch.cat(parts, dim=1))

    def item_vector(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(tokens)


def example_age(ds: Dataset, positions: np.ndarray) -> np.ndarray:
    """Age of each example at the end of the data, in [0, 1]: 0 = the newest.

    With clock time it is (end - ts) / (end - start); with order only (S3-Rec files) the
    number of the user's later events over the longest history.
    """
    if ds.ordinal_time:
        ends = ds.user_indptr[ds.user[positions] + 1] - 1
        return ((ends - positions) / max(int(np.diff(ds.user_indptr).max(initial=1)), 1)).astype(np.float32)
    lo, hi = ds.time_range
    return ((hi - ds.ts[positions]) / max(hi - lo, 1)).astype(np.float32)


class YouTubeDNNSource(NeuralRecallSource):
    name = "youtubednn"
    Config = YouTubeDNNConfig

    def _build_net(self) -> nn.Module:
        return YouTubeDNNNet(self.n_items, self.features.sizes, self.config)

    def _extras(self, ds: Dataset, positions: np.ndarray) -> dict[str, np.ndarray]:
        return {"age": example_age(ds, positions)} if self.config.example_age else {}

    def _loss(self, net: nn.Module, b: Batch) -> torch.Tensor:
        user = net.user_vector(b["hist"], b["codes"], b.get("age"))
        pos_id = b["target"]
        neg_id, neg_logq, pos_logq = self._sample_negatives(pos_id)
        return sampled_softmax(
            user, net.item_vector(pos_id), pos_id, net.item_vector(neg_id), neg_id, pos_logq, neg_logq, self.config.temperature
        )
