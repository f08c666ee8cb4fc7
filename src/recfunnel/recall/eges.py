"""EGES: graph embeddings enhanced with side information (Wang et al., KDD 2018).

The corpus is the DeepWalk one (weighted walks over the session-transition graph, see
`graph_embedding` and `walks`); the model is skip-gram with negative sampling in PyTorch,
except that an item's vector is an attention-weighted sum of the embeddings of its side
information: its id, its categories (genres, attributes; the mean of their embeddings),
its release time and its price (quantile buckets), each where the catalog has it. The
attention logits are learned per item (softmax over the fields the item has; the id
starts ahead by `id_prior`). By default (`tied`) contexts and negatives use the same
attention vectors as centres: one vector space, which measured far better on ML-100K
than word2vec's separate output table (NDCG@10 0.08 against 0.05).

Cold start: an item with no interactions (or none that made an edge) gets the average of
its side embeddings, no id (the paper's recipe). A share `id_dropout` of the training
pairs hides the centre's id, so side-only vectors are trained too. Averages of shared
embeddings have a large common component, so they are mapped into the trained space by
a ridge regression fitted on the trained items (side average -> trained vector) and
scaled to the median trained length (under inner product, length acts as popularity: a
longer vector would put every new item into every list). `side_vector` does the same for
an item added after the build.

Training is vectorised: the walks become one array of (centre, context) pairs, shuffled
each epoch and fed in large batches; each distinct item vector of a batch is built once,
and one pool of `negative_pool` negatives (frequency**ns_exponent) is shared by the
batch, each weighted `negative / negative_pool` (SGNS's k). It runs through
`recfunnel.nn.training.train`: early stopping on the validation step's NDCG@10, then a
refit on all fit data for the best epoch count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn

from recfunnel.data.dataset import Dataset
from recfunnel.data.split import leave_last_out
from recfunnel.evaluate.metrics import ndcg, target_ranks
from recfunnel.evaluate.ranking import full_ranking_topk
from recfunnel.nn.sequences import validation_sample
from recfunnel.nn.training import TrainConfig, train
from recfunnel.persist import read_json, write_json
from recfunnel.recall.base import recency_weights
from recfunnel.recall.embedding import EmbeddingConfig, EmbeddingSource
from recfunnel.recall.graph_embedding import transition_graph
from recfunnel.recall.walks import random_walks

FIELDS = ("id", "category", "created", "price")


class EGESConfig(EmbeddingConfig):
    """eges: skip-gram on session-graph walks; item vector = attention over id, category,
    release-time and price embeddings, so items without interactions get vectors too."""

    normalize: bool = Field(False, description="L2-normalise item vectors (the model is trained for inner product)")
    history_decay: float = Field(0.6, gt=0, le=1, description="user vector: weight of the n-th last item is decay**n")
    session_gap_hours: float = Field(24.0 * 30, gt=0, description="a longer gap starts a new session")
    directed: bool = Field(False, description="walk edges only forward in time (else both ways)")
    walks_per_node: int = Field(10, ge=1, description="walks started from every item")
    walk_length: int = Field(20, ge=2, description="items per walk")
    window: int = Field(2, ge=1, description="skip-gram context window (positions)")
    negative: float = Field(5.0, gt=0, description="weight of the negatives per (centre, context) pair (SGNS's k)")
    negative_pool: int = Field(
        256, ge=1, description="negatives drawn per batch and shared by its pairs (each weighted negative/pool)"
    )
    ns_exponent: float = Field(
        -0.5, description="negative-sampling distribution: frequency**exponent (< 0 favours rare items; measured best)"
    )
    id_dropout: float = Field(
        0.2, ge=0, lt=1, description="share of training pairs whose centre hides its id (teaches side-only vectors)"
    )
    id_prior: float = Field(
        2.0, description="initial attention logit of the id over the side fields (learned from there on)"
    )
    tied: bool = Field(
        True, description="contexts and negatives use the same attention vectors as centres (one space; else word2vec's separate output table)"
    )
    side_stop_gradient: bool = Field(
        False,
        description="pairs whose centre hides its id do not move the contexts' vectors "
        "(cold vectors spread more, warm quality drops: off by default)",
    )
    cold_map: bool = Field(
        True, description="map side-only vectors into the trained space by a ridge regression fitted on trained items"
    )
    cold_map_ridge: float = Field(1.0, ge=0, description="ridge penalty of that map")
    cold_norm_quantile: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="scale side-only (cold) vectors to this quantile of the trained vectors' lengths "
        "(length acts as popularity under inner product; None keeps their own length, which puts new "
        "items in far more lists than their share)",
    )
    min_steps: int = Field(200, ge=1, description="updates per epoch at least (smaller batches on small corpora)")
    side_fields: list[Literal["category", "created", "price"]] = Field(
        ["category", "created", "price"], description="side information used where the catalog has it"
    )
    time_buckets: int = Field(10, ge=1, description="quantile buckets of the items' `created` time")
    price_buckets: int = Field(10, ge=1, description="quantile buckets of the items' price")
    train: TrainConfig = TrainConfig(
        epochs=20, batch_size=4096, learning_rate=1e-2, eval_every=1, patience=2, eval_users=2000
    )


# ---- side information ------------------------------------------------------------------
class SideInfo:
    """Per field, an (n_items, width) int64 matrix of value codes (0 = none) and how to
    code a new item's values (category vocabulary, bucket edges)."""

    def __init__(self, codes: dict[str, np.ndarray], vocab: list[str], edges: dict[str, list[float]]) -> None:
        self.codes = codes
        self.vocab = vocab
        self.edges = edges
        self._cat = {c: k + 1 for k, c in enumerate(vocab)}

    @property
    def names(self) -> list[str]:
        return list(self.codes)

    def sizes(self) -> list[int]:
        """Number of codes per field, padding included."""
        out = []
        for name, c in self.codes.items():
            if name == "id":
                out.append(c.shape[0] + 1)
            elif name == "category":
                out.append(len(self.vocab) + 1)
            else:
                out.append(len(self.edges[name]) + 2)
        return out

    @classmethod
    def from_dataset(cls, ds: Dataset, c: EGESConfig) -> "SideInfo":
        n = ds.n_items
        codes: dict[str, np.ndarray] = {"id": np.arange(1, n + 1, dtype=np.int64)[:, None]}
        vocab = list(ds.category_ids.raw_ids) if len(ds.category_ids) else []
        ic = ds.item_categories.tocsr()
        if ic.nnz and "category" in c.side_fields:
            width = int(np.diff(ic.indptr).max())
            cat = np.zeros((n, width), dtype=np.int64)
            rows = np.repeat(np.arange(n), np.diff(ic.indptr))
            slot = np.arange(ic.nnz) - ic.indptr[rows]
            cat[rows, slot] = ic.indices.astype(np.int64) + 1
            codes["category"] = cat
        edges: dict[str, list[float]] = {}
        for name, buckets in (("created", c.time_buckets), ("price", c.price_buckets)):
            if name not in ds.items.columns or name not in c.side_fields:
                continue
            values = ds.items[name].cast(float).to_numpy().astype(np.float64)
            known = values[np.isfinite(values)]
            if len(np.unique(known)) < 2:
                continue
            e = np.unique(np.quantile(known, np.linspace(0, 1, buckets + 1)[1:-1])).tolist()
            edges[name] = e
            codes[name] = _bucket(values, e)[:, None]
        return cls(codes, vocab, edges)

    def code_new(self, categories: list[str] | None, created: float | None, price: float | None) -> dict[str, np.ndarray]:
        """Codes of one item not in the catalog (no id)."""
        out: dict[str, np.ndarray] = {}
        if "category" in self.codes:
            known = [self._cat[x] for x in categories or () if x in self._cat]
            out["category"] = np.array(known or [0], dtype=np.int64)
        for name, value in (("created", created), ("price", price)):
            if name in self.codes:
                v = np.array([np.nan if value is None else float(value)])
                out[name] = _bucket(v, self.edges[name])
        return out

    def to_json(self) -> dict[str, Any]:
        return {"fields": self.names, "vocab": self.vocab, "edges": self.edges}


def _rescale(v: np.ndarray, norm: float) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v * norm, n, out=np.zeros_like(v), where=n > 0)


def _bucket(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bucket + 1 for known values, 0 for missing ones."""
    codes = np.searchsorted(np.asarray(edges), values, side="right").astype(np.int64) + 1
    codes[~np.isfinite(values)] = 0
    return codes


# ---- the network ---------------------------------------------------------------------
class EGESNet(nn.Module):
    def __init__(self, n_items: int, sizes: list[int], dim: int, id_prior: float = 0.0) -> None:
        super().__init__()
        self.fields = nn.ModuleList(nn.Embedding(s, dim, padding_idx=0) for s in sizes)
        logits = torch.zeros(n_items, len(sizes))
        logits[:, 0] = id_prior
        self.attention = nn.Parameter(logits)
        self.context = nn.Embedding(n_items, dim)
        for emb in self.fields:
            nn.init.normal_(emb.weight, std=0.1)
            with torch.no_grad():
                emb.weight[0].zero_()
        nn.init.normal_(self.context.weight, std=0.1)

    def field_vectors(self, codes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, dim) mean embedding per field and (B, F) whether the item has that field."""
        vecs, present = [], []
        for emb, c in zip(self.fields, codes):
            n = (c > 0).sum(dim=1)
            vecs.append(emb(c).sum(dim=1) / n.clamp(min=1).unsqueeze(1))
            present.append(n > 0)
        return torch.stack(vecs, dim=1), torch.stack(present, dim=1)

    def item_vectors(self, items: torch.Tensor, codes: list[torch.Tensor], hide_id: torch.Tensor | None = None) -> torch.Tensor:
        """Attention-weighted sum of the items' field embeddings (`hide_id`: drop the id)."""
        vecs, present = self.field_vectors(codes)
        if hide_id is not None:
            present = present.clone()
            present[:, 0] &= ~hide_id
        logits = self.attention[items].masked_fill(~present, float("-inf"))
        w = torch.softmax(logits, dim=1).nan_to_num(0.0)  # an item with no field: zeros
        return (w.unsqueeze(-1) * vecs).sum(dim=1)

    def side_mean(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """Cold start: plain average of the side embeddings the item has (no id)."""
        vecs, present = self.field_vectors(codes)
        present = present.clone()
        present[:, 0] = False
        w = present.float()
        return (w.unsqueeze(-1) * vecs).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp(min=1)


def walk_pairs(walks: list[np.ndarray], window: int) -> tuple[np.ndarray, np.ndarray]:
    """All (centre, context) pairs within `window` positions, both directions, vectorised."""
    if not walks:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    length = max(len(w) for w in walks)
    m = np.full((len(walks), length), -1, dtype=np.int64)
    for r, w in enumerate(walks):
        m[r, : len(w)] = w
    centres, contexts = [], []
    for d in range(1, window + 1):
        a, b = m[:, :-d].ravel(), m[:, d:].ravel()
        ok = (a >= 0) & (b >= 0)
        centres += [a[ok], b[ok]]
        contexts += [b[ok], a[ok]]
    return np.concatenate(centres), np.concatenate(contexts)


class EGESSource(EmbeddingSource):
    name = "eges"
    Config = EGESConfig

    def learn_item_vectors(self, ds: Dataset) -> np.ndarray:
        c = self.config
        self.side = SideInfo.from_dataset(ds, c)
        val = leave_last_out(ds)
        net = self._new_net(ds.n_items)
        result = self._train(net, val.fit, validate=self._validator(val), desc="eges (validation)")
        self.train_report = {"best_epoch": result.best_epoch, "val_ndcg10": result.best_score, "history": result.history}
        if c.train.refit:
            net = self._new_net(ds.n_items)
            self._train(net, ds, fixed_epochs=result.best_epoch, desc=f"eges (refit, {result.best_epoch} epochs)")
        self.net = net.eval()
        return self._vectors(net, self._trained)

    # ---- training ----------------------------------------------------------------------
    def _new_net(self, n_items: int) -> EGESNet:
        torch.manual_seed(self.config.seed)
        return EGESNet(n_items, self.side.sizes(), self.config.dim, self.config.id_prior)

    def _codes(self) -> list[torch.Tensor]:
        return [torch.from_numpy(self.side.codes[f]) for f in self.side.names]

    def _vectors(self, net: EGESNet, trained: np.ndarray) -> np.ndarray:
        """Trained items: attention over all fields; the rest: the mean of their side fields,
        rescaled to a quantile of the trained vectors' lengths (`cold_norm_quantile`)."""
        codes = self._codes()
        items = torch.arange(len(trained))
        with torch.no_grad():
            warm = net.item_vectors(items, codes).numpy()
            cold = net.side_mean(codes).numpy()
        c = self.config
        if c.cold_map and trained.sum() > c.dim:
            # Ridge map from side-only averages to trained vectors, fitted on the trained items:
            # it removes what all side averages share and puts new items in the trained space.
            s_w, h_w = cold[trained].astype(np.float64), warm[trained].astype(np.float64)
            s_w1 = np.hstack([s_w, np.ones((len(s_w), 1))])
            reg = c.cold_map_ridge * np.eye(s_w1.shape[1])
            self._cold_map = np.linalg.solve(s_w1.T @ s_w1 + reg, s_w1.T @ h_w).astype(np.float32)
        else:
            self._cold_map = np.zeros((0, 0), dtype=np.float32)
        cold = self._map_cold(cold)
        q = c.cold_norm_quantile
        self._cold_norm = float(np.quantile(np.linalg.norm(warm[trained], axis=1), q)) if trained.any() and q is not None else 1.0
        if q is not None:
            cold = _rescale(cold, self._cold_norm)
        return np.where(trained[:, None], warm, cold).astype(np.float32)

    def _map_cold(self, v: np.ndarray) -> np.ndarray:
        if self._cold_map.size == 0:
            return v
        has = np.linalg.norm(v, axis=-1, keepdims=True) > 0
        mapped = np.concatenate([v, np.ones((*v.shape[:-1], 1), dtype=v.dtype)], axis=-1) @ self._cold_map
        return np.where(has, mapped, 0.0).astype(np.float32)

    def _train(self, net: EGESNet, ds: Dataset, desc: str, validate=None, fixed_epochs=None):  # noqa: ANN001, ANN202
        c = self.config
        graph = transition_graph(ds, c.session_gap_hours, c.directed)
        walks = random_walks(graph, c.walks_per_node, c.walk_length, seed=c.seed)
        centre, context = walk_pairs(walks, c.window)
        self._trained = np.bincount(centre, minlength=ds.n_items) > 0
        freq = np.bincount(context, minlength=ds.n_items).astype(np.float64)
        noise = np.where(freq > 0, np.power(np.maximum(freq, 1.0), c.ns_exponent), 0.0)
        noise = torch.from_numpy(noise / max(noise.sum(), 1e-12))
        has_side = torch.from_numpy(
            np.any([self.side.codes[f].max(axis=1) > 0 for f in self.side.names[1:]], axis=0)
            if len(self.side.names) > 1 else np.zeros(ds.n_items, dtype=bool)
        )
        codes = self._codes()
        ctr, ctx = torch.from_numpy(centre), torch.from_numpy(context)
        # A small corpus gets smaller batches: every epoch makes at least `min_steps` updates.
        bs = int(min(c.train.batch_size, max(64, len(ctr) // c.min_steps)))

        def epoch_steps(rng: np.random.Generator) -> list:
            order = torch.from_numpy(rng.permutation(len(ctr)))
            return [order[i : i + bs] for i in range(0, len(ctr), bs)]

        pool = c.negative_pool
        scale = c.negative / pool

        def step_loss(m: EGESNet, idx: torch.Tensor) -> torch.Tensor:
            a, b = ctr[idx], ctx[idx]
            hide = (torch.rand(len(a)) < c.id_dropout) & has_side[a]
            neg = torch.multinomial(noise, pool, replacement=True)
            if c.tied:
                # One vector space: centre, context and negatives are all attention sums, so
                # an item's side-only vector is trained against the same vectors it is served with.
                keys = torch.cat([a * 2 + hide.long(), b * 2, neg * 2])
            else:
                keys = a * 2 + hide.long()
            # Each distinct (item, id hidden) vector is built once: batches repeat popular items.
            uniq, inv = torch.unique(keys, return_inverse=True)
            items = uniq // 2
            h_all = m.item_vectors(items, [x[items] for x in codes], (uniq % 2).bool())
            h = h_all[inv[: len(a)]]
            if c.tied:
                pos_v, neg_v = h_all[inv[len(a) : 2 * len(a)]], h_all[inv[2 * len(a) :]]
            else:
                pos_v, neg_v = m.context.weight[b], m.context.weight[neg]
            if c.tied and c.id_dropout > 0 and c.side_stop_gradient:
                # A centre without its id learns to point where its contexts are, and only that:
                # its gradient must not move the (shared) side embeddings of the contexts, which
                # would pull all side vectors toward one common direction.
                pos_v = torch.where(hide.unsqueeze(1), pos_v.detach(), pos_v)
                negs = torch.empty(len(a), pool)
                negs[hide] = h[hide] @ neg_v.detach().T
                negs[~hide] = h[~hide] @ neg_v.T
            else:
                negs = h @ neg_v.T  # one pool of negatives shared by the batch: a dense product
            pos = (h * pos_v).sum(-1)
            negs = negs.masked_fill(neg.unsqueeze(0) == b.unsqueeze(1), float("-inf"))  # accidental hits
            return -(nn.functional.logsigmoid(pos) + scale * nn.functional.logsigmoid(-negs).sum(-1)).mean()

        return train(net, epoch_steps, step_loss, c.train, seed=c.seed, validate=validate, fixed_epochs=fixed_epochs, desc=desc)

    def _validator(self, val):  # noqa: ANN001, ANN202
        """NDCG@10 of the validation targets by full ranking, on a fixed user sample."""
        c = self.config
        users, targets, batch = validation_sample(val, c.train.eval_users, c.seed)
        hist = batch.history_matrix(recency_weights(batch, c.history_decay, c.history_last_n))
        total = np.maximum(np.asarray(hist.sum(axis=1)).ravel(), 1e-9)

        def validate(net: EGESNet) -> float:
            vecs = self._vectors(net, self._trained)
            if c.normalize:
                vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            u = np.asarray(hist @ vecs) / total[:, None]
            top = full_ranking_topk(lambda chunk: u[np.searchsorted(users, chunk)] @ vecs.T, users, val.fit.user_item, 10)
            return ndcg(target_ranks(top, targets), 10)

        return validate

    # ---- a brand-new item --------------------------------------------------------------
    def side_vector(self, categories: list[str] | None = None, created: float | None = None, price: float | None = None) -> np.ndarray:
        """The vector of an item that was not in the catalog at fit time, from its side
        information alone (zeros when none of it is known)."""
        codes = self.side.code_new(categories, created, price)
        parts = [torch.zeros((1, 1), dtype=torch.int64)]  # no id
        parts += [torch.from_numpy(codes[f])[None, :] for f in self.side.names[1:]]
        with torch.no_grad():
            v = self._map_cold(self.net.side_mean(parts).numpy()[0].astype(np.float32))
        if self.config.cold_norm_quantile is not None:
            v = _rescale(v, self._cold_norm)
        if self.config.normalize and np.linalg.norm(v) > 0:
            v = v / np.linalg.norm(v)
        return v

    # ---- persistence: weights in safetensors, side-information vocabulary in JSON ------------
    def state(self) -> dict[str, Any]:
        side = {f"side_{f}": self.side.codes[f] for f in self.side.names}
        return {**super().state(), **side, "cold_norm": np.array(self._cold_norm), "cold_map": self._cold_map}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._cold_norm = float(state["cold_norm"])
        self._cold_map = state["cold_map"]
        self._side_codes = {k[len("side_") :]: v for k, v in state.items() if k.startswith("side_")}

    def save(self, directory: str | Path) -> None:
        super().save(directory)
        d = Path(directory)
        write_json(d / "side.json", self.side.to_json())
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(d / "model.safetensors"))

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        src = super().load(directory)
        d = Path(directory)
        meta = read_json(d / "side.json")
        src.side = SideInfo({f: src._side_codes[f] for f in meta["fields"]}, meta["vocab"], meta["edges"])
        net = EGESNet(src.n_items, src.side.sizes(), src.config.dim)
        net.load_state_dict(load_file(str(d / "model.safetensors")))
        src.net = net.eval()
        return src
