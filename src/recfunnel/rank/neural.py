"""Neural rankers: one base for LR, FM, Wide&Deep, DeepFM, DIN, DIEN, Shared-Bottom, MMoE.

The base turns candidate columns into model inputs through `FeatureSpecs`, trains with the
shared loop (`recfunnel.nn.training.train`: early stopping on the AUC of held-out training
queries, progress bars), calibrates each head with Platt scaling on half of those held-out
queries and reports the calibration error on the other half. Weights, input normalisation
and calibration are stored in safetensors; settings and specs in JSON.

Probabilities are calibrated to the training sample (the target plus sampled pool
negatives per query), which is what the fused multi-task score needs: both heads on one
scale, so the configured weights mean what they say.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar, Literal, Self

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from recfunnel.candidates import Candidates
from recfunnel.features.specs import FeatureSpecs, SparseSpec
from recfunnel.nn.training import TrainConfig, train
from recfunnel.persist import read_json, write_json
from recfunnel.rank import nets
from recfunnel.rank.base import Ranker, RankerConfig
from recfunnel.rank.metrics import auc, calibration_error, gauc, logloss

SCORE_CHUNK = 16384


def _train_default() -> TrainConfig:
    return TrainConfig(
        epochs=20, batch_size=1024, learning_rate=2e-3, eval_every=1, patience=2, refit=False, ema_decay=0.999
    )


class NeuralRankerConfig(RankerConfig):
    """A neural ranker (used when rank.model names it)."""

    embed_dim: int = Field(16, ge=1, description="embedding size of every sparse and sequence feature")
    hidden: list[int] = Field([128, 64], description="MLP layer sizes (deep part, shared bottom, experts)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer")
    dense_buckets: int = Field(
        0, ge=0, description="quantile buckets per dense feature, each embedded as one more field (0 = values only)"
    )
    holdout_share: float = Field(0.15, gt=0, lt=1, description="training queries held out for early stopping and calibration")
    calibrate: bool = Field(True, description="Platt-scale each head on held-out queries")
    loss: Literal["pointwise", "listwise", "both"] = Field(
        "listwise",
        description="interact head: 'pointwise' log loss per row; 'listwise' softmax of the target against "
        "its own query's candidates (what NDCG rewards; batches hold whole queries); 'both' adds them",
    )
    embedding_l2: float = Field(
        0.0,
        ge=0,
        description="DIN's mini-batch aware regularisation: each id in a batch pays this x ||embedding||^2 "
        "/ its training frequency (0 = off)",
    )
    exclude_features: list[str] = Field(
        [], description="inputs this model leaves out, e.g. ['user_id'] where most users have one training query"
    )
    train: TrainConfig = Field(default_factory=_train_default)
    seed: int = Field(0, description="seed of initialisation, hold-out choice and batches")
    members: int = Field(
        1,
        ge=1,
        description="nets trained apart (initialisation and batch order from seed, seed+1, ...) whose logits "
        "are averaged: less variance from one fit to the next, at members x the scoring cost",
    )


class AttentionConfig(NeuralRankerConfig):
    """A ranker with attention over the recent items."""

    attention_hidden: list[int] = Field([36], description="hidden sizes of the attention (activation) unit")
    activation: nets.Activation = Field(
        "relu", description="activation of the attention unit and the MLP: relu, or dice (DIN's data-adaptive PReLU)"
    )
    history_product: bool = Field(
        False,
        description="also feed the MLP the mean-pooled history and its element-wise product with the candidate, "
        "as the authors' DIN and DIEN code does ([user, item, history sum, item x history sum, attention])",
    )


class DIENConfig(AttentionConfig):
    """DIEN (rank.model = "dien"): GRU interests with the auxiliary loss, AUGRU evolution."""

    aux_weight: float = Field(0.5, ge=0, description="weight of the auxiliary next-behaviour loss")


class MultiTaskConfig(NeuralRankerConfig):
    """A two-headed ranker: P(interact) and P(like), fused into one ranking value."""

    tower_hidden: int = Field(32, ge=1, description="hidden size of each task tower")
    like_loss_weight: float = Field(1.0, ge=0, description="weight of the 'like' head's loss")
    fusion_interact: float = Field(1.0, ge=0, description="ranking value = this x P(interact) + ...")
    fusion_like: float = Field(0.5, ge=0, description="... + this x P(like)")


class MMoEConfig(MultiTaskConfig):
    """MMoE (rank.model = "mmoe"): shared experts, a gate and a tower per task."""

    n_experts: int = Field(4, ge=1, description="shared experts")


class LRConfig(NeuralRankerConfig):
    """Logistic regression (rank.model = "lr") over ids, pooled recent items and dense features."""

    hidden: list[int] = Field([], description="unused: no MLP")


class FMConfig(LRConfig):
    """Factorisation machine (rank.model = "fm")."""


class FFMConfig(LRConfig):
    """Field-aware FM (rank.model = "ffm"): a vector per (field, other field) pair."""

    embed_dim: int = Field(4, ge=1, description="size of each field-aware vector (the FFM paper's k = 4)")


class DeepFMConfig(NeuralRankerConfig):
    """DeepFM (rank.model = "deepfm"): FM and an MLP on shared embeddings."""


class WideDeepConfig(NeuralRankerConfig):
    """Wide & Deep (rank.model = "widedeep")."""


class DINConfig(AttentionConfig):
    """DIN (rank.model = "din"): candidate-aware attention over the recent items.

    Dice and the pooled-history product are DIN's defaults: with both, its validation AUC
    is the best of the settings tried on both data sets (README, Ranking)."""

    activation: nets.Activation = Field("dice", description=AttentionConfig.model_fields["activation"].description)
    history_product: bool = Field(True, description=AttentionConfig.model_fields["history_product"].description)
    item_bias: bool = Field(False, description="add the candidate item's learned bias to the logit (the authors' item_b)")
    attention_softmax: bool = Field(
        False,
        description="normalise the attention weights over the history with a softmax, as the authors' code does "
        "(the paper leaves them unnormalised, so the interest's size says how much of the history is relevant)",
    )

    recency_keys: bool = Field(
        False,
        description="add a learned embedding of each step's recency (0 = the latest) to the history the attention "
        "unit reads, as BST adds positions to its items, so a weight can favour recent items; the attended values "
        "stay the items' own embeddings",
    )

    dense_buckets: int = Field(
        16, ge=0, description="quantile buckets per dense feature, each embedded as one more field (0 = values only)"
    )


class SharedBottomConfig(MultiTaskConfig):
    """Shared-Bottom (rank.model = "shared_bottom"): one shared MLP, a tower per task."""


class NeuralRanker(Ranker):
    """Base: subclasses name a `Net` class (and a config class)."""

    uses_specs = True
    Net: ClassVar[type[nets.Net]]

    # ---- inputs ------------------------------------------------------------------
    def _inputs(self, cands: Candidates) -> dict[str, torch.Tensor]:
        x = self.specs.encode(cands)
        d = x["dense"].astype(np.float32)
        d = np.sign(d) * np.log1p(np.abs(d))
        d = (d - self.mean) / self.std
        if self.edges.shape[1]:  # bucket 1..B by the training quantiles; NaN -> 0
            b = np.zeros(d.shape, dtype=np.int64)
            for j in range(d.shape[1]):
                b[:, j] = np.searchsorted(self.edges[j], d[:, j], side="right") + 1
            x["dense_bucket"] = np.where(np.isnan(d), 0, b)
        x["dense"] = np.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in x.items()}

    def _fit_normalisation(self, cands: Candidates) -> None:
        d = self.specs.encode(cands)["dense"].astype(np.float64)
        d = np.sign(d) * np.log1p(np.abs(d))
        with warnings.catch_warnings(action="ignore", category=RuntimeWarning):  # a column may be all NaN
            mean = np.nanmean(d, axis=0) if len(d) else np.zeros(d.shape[1])
            std = np.nanstd(d, axis=0) if len(d) else np.ones(d.shape[1])
        self.mean = np.nan_to_num(mean).astype(np.float32)
        self.std = np.where(np.nan_to_num(std) > 1e-6, np.nan_to_num(std), 1.0).astype(np.float32)
        self.edges = _quantile_edges((d - self.mean) / self.std, self.config.dense_buckets)

    def _new_net(self) -> nets.Net | nets.Ensemble:
        members = []
        for i in range(self.config.members):
            torch.manual_seed(self.config.seed + i)
            members.append(self.Net(self.specs, self.config))
        return members[0] if len(members) == 1 else nets.Ensemble(members)

    # ---- training ----------------------------------------------------------------
    def fit(
        self,
        train_rows: Candidates,
        labels: np.ndarray,
        features: list[str],
        progress: bool = False,
        specs: FeatureSpecs | None = None,
        like: np.ndarray | None = None,
    ) -> Self:
        """Learn P(interact) (and P(like) for two-headed nets) from candidate rows.

        `specs` names the inputs (default: `features` as dense inputs only); `like` is the
        second label, the first one where the data has none."""
        c = self.config
        self.specs = (specs if specs is not None else FeatureSpecs(dense=list(features))).without(c.exclude_features)
        self.features = list(self.specs.names)
        self._fit_normalisation(train_rows)
        y = np.column_stack([labels, labels if like is None else like]).astype(np.float32)
        rng = np.random.default_rng(c.seed)
        q = train_rows.query.astype(np.int64)
        is_val = self._held_out(train_rows, rng)
        tr, va = np.flatnonzero(~is_val), np.flatnonzero(is_val)
        x = self._inputs(train_rows)
        yt = torch.from_numpy(y)
        self.net = self._new_net()
        heads = self.net.heads
        aux_weight = float(getattr(c, "aux_weight", 0.0))
        like_weight = float(getattr(c, "like_loss_weight", 1.0))
        bce = torch.nn.functional.binary_cross_entropy_with_logits

        def take(idx: np.ndarray) -> dict[str, torch.Tensor]:
            i = torch.from_numpy(idx)
            return {k: v[i] for k, v in x.items()}

        listwise = c.loss != "pointwise"
        by_query = _rows_by_query(q, tr)

        def epoch_steps(r: np.random.Generator) -> list[np.ndarray]:
            if listwise:  # whole queries per batch, about batch_size rows each
                return _query_batches(by_query, r, c.train.batch_size)
            perm = r.permutation(tr)
            return [perm[s : s + c.train.batch_size] for s in range(0, len(perm), c.train.batch_size)]

        def step_loss(net: torch.nn.Module, idx: np.ndarray) -> torch.Tensor:
            batch = take(idx)
            out = net(batch)
            target = yt[torch.from_numpy(idx)]
            loss = bce(out[:, 0], target[:, 0]) if c.loss != "listwise" else out.new_zeros(())
            if listwise:
                loss = loss + _query_softmax_loss(out[:, 0], target[:, 0], torch.from_numpy(q[idx]))
            if heads > 1:
                loss = loss + like_weight * bce(out[:, 1], target[:, 1])
            if aux_weight > 0 and net.aux_loss is not None:
                loss = loss + aux_weight * net.aux_loss
            if c.embedding_l2 > 0:
                loss = loss + c.embedding_l2 * net.emb.frequency_penalty(batch)
            return loss

        def validate(net: torch.nn.Module) -> float:
            logits = self._logits(net, x, va)
            if listwise:  # the order within each query is what the loss learns
                scores = [gauc(y[va, h], logits[:, h], q[va]) for h in range(heads)]
            else:
                scores = [auc(y[va, h], logits[:, h]) for h in range(heads)]
            scores = [s for s in scores if not np.isnan(s)]
            return float(np.mean(scores)) if scores else 0.0

        tcfg = c.train.model_copy(update={"progress": c.train.progress and progress})
        members = list(self.net.members) if isinstance(self.net, nets.Ensemble) else [self.net]
        if c.embedding_l2 > 0:  # the same training ids for every member: count them once
            members[0].emb.count_ids(take(tr))
            for member in members[1:]:
                member.emb.id_counts = members[0].emb.id_counts
        epochs = []
        for i, member in enumerate(members):
            of = f" {i + 1}/{len(members)}" if len(members) > 1 else ""
            result = train(
                member, epoch_steps, step_loss, tcfg, seed=c.seed + i,
                validate=validate if len(va) else None, desc=f"ranker {self.name}{of}",
            )
            epochs.append(result.best_epoch)
        self.net.eval()
        self.platt = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (heads, 1))
        self.report: dict[str, float] = {"best_epoch": float(np.mean(epochs)), "train_rows": float(len(tr))}
        if len(va):
            self._calibrate(self._logits(self.net, x, va), y[va], q[va], rng)
        return self

    def _held_out(self, rows: Candidates, rng: np.random.Generator) -> np.ndarray:
        """Rows of the queries held out for early stopping and calibration."""
        q = rows.query.astype(np.int64)
        held_q = rng.random(int(q.max()) + 1 if len(q) else 1) < self.config.holdout_share
        return held_q[q]

    def _calibrate(self, logits: np.ndarray, y: np.ndarray, q: np.ndarray, rng: np.random.Generator) -> None:
        """Platt scaling per head on half of the held-out queries; errors on the other half."""
        uq = np.unique(q)
        half = set(rng.choice(uq, len(uq) // 2, replace=False).tolist()) if len(uq) > 1 else set(uq.tolist())
        a = np.isin(q, list(half))
        b = ~a if (~a).any() else a
        for h in range(logits.shape[1]):
            if self.config.calibrate and len(np.unique(y[a, h])) == 2:
                self.platt[h] = _platt(logits[a, h], y[a, h])
            p_raw = _sigmoid(logits[b, h])
            p = _sigmoid(self.platt[h, 0] * logits[b, h] + self.platt[h, 1])
            tag = "" if h == 0 else "_like"
            self.report.update(
                {
                    f"holdout_auc{tag}": auc(y[b, h], p),
                    f"holdout_gauc{tag}": float(gauc(y[b, h], p, q[b])),
                    f"holdout_logloss{tag}": logloss(y[b, h], p),
                    f"calibration_error_raw{tag}": calibration_error(y[b, h], p_raw),
                    f"calibration_error{tag}": calibration_error(y[b, h], p),
                }
            )

    @staticmethod
    def _logits(net: torch.nn.Module, x: dict[str, torch.Tensor], rows: np.ndarray | None = None) -> np.ndarray:
        was = net.training
        net.eval()
        n = len(x["dense"]) if rows is None else len(rows)
        out = []
        with torch.no_grad():
            if rows is None and n <= SCORE_CHUNK:  # a request: no copies
                out.append(net(x).float().numpy())
                n = 0
            for s in range(0, n, SCORE_CHUNK):
                idx = torch.arange(s, min(s + SCORE_CHUNK, n)) if rows is None else torch.from_numpy(rows[s : s + SCORE_CHUNK])
                out.append(net({k: v[idx] for k, v in x.items()}).float().numpy())
        net.train(was)
        return np.concatenate(out) if out else np.zeros((0, net.heads), dtype=np.float32)

    # ---- scoring -----------------------------------------------------------------
    def head_probabilities(self, cands: Candidates) -> np.ndarray:
        """(n, heads) calibrated probabilities."""
        torch.set_num_threads(self.config.train.threads)
        logits = self._logits(self.net, self._inputs(cands))
        return _sigmoid(logits * self.platt[:, 0] + self.platt[:, 1]).astype(np.float32)

    def score(self, cands: Candidates) -> np.ndarray:
        if len(cands) == 0:
            return np.empty(0, dtype=np.float32)
        c = self.config
        weights = (c.fusion_interact, c.fusion_like) if isinstance(c, MultiTaskConfig) else (1.0,)
        return fused_log_odds(self.head_probabilities(cands), weights)

    # ---- persistence -------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v.detach().contiguous() for k, v in self.net.state_dict().items()}
        tensors["norm.mean"] = torch.from_numpy(self.mean)
        tensors["norm.std"] = torch.from_numpy(self.std)
        tensors["platt"] = torch.from_numpy(self.platt.astype(np.float32))
        tensors["norm.edges"] = torch.from_numpy(self.edges)
        save_file(tensors, str(directory / "model.safetensors"))
        write_json(
            directory / "config.json",
            {"name": self.name, "config": self.config.model_dump(mode="json"), "specs": self.specs.to_json(), "report": self.report},
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        directory = Path(directory)
        meta = read_json(directory / "config.json")
        r = cls(cls.Config.model_validate(meta["config"]))
        r.specs = FeatureSpecs.from_json(meta["specs"])
        r.features = list(r.specs.names)
        r.report = meta.get("report", {})
        t = load_file(str(directory / "model.safetensors"))
        r.mean, r.std = t.pop("norm.mean").numpy(), t.pop("norm.std").numpy()
        r.platt = t.pop("platt").numpy()
        r.edges = t.pop("norm.edges").numpy()
        r.net = r._new_net()
        r.net.load_state_dict({k[len("net.") :]: v for k, v in t.items()})
        r.net.eval()
        return r


def _quantile_edges(d: np.ndarray, buckets: int) -> np.ndarray:
    """(D, buckets - 1) inner quantile edges per column (float32, +inf where a column has
    fewer distinct values); (D, 0) when bucketing is off."""
    if buckets <= 1:
        return np.zeros((d.shape[1], 0), dtype=np.float32)
    edges = np.full((d.shape[1], buckets - 1), np.inf, dtype=np.float32)
    qs = np.linspace(0, 1, buckets + 1)[1:-1]
    for j in range(d.shape[1]):
        v = d[:, j][~np.isnan(d[:, j])]
        if len(v):
            e = np.unique(np.quantile(v, qs).astype(np.float32))
            edges[j, : len(e)] = e
    return edges


def _rows_by_query(q: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """`rows` grouped by their query id."""
    rows = rows[np.argsort(q[rows], kind="stable")]
    cuts = np.flatnonzero(np.diff(q[rows])) + 1
    return np.split(rows, cuts) if len(rows) else []


def _query_batches(groups: list[np.ndarray], rng: np.random.Generator, batch_rows: int) -> list[np.ndarray]:
    """Whole queries in random order, packed into batches of about `batch_rows` rows."""
    batches, current, size = [], [], 0
    for g in rng.permutation(len(groups)):
        current.append(groups[g])
        size += len(groups[g])
        if size >= batch_rows:
            batches.append(np.concatenate(current))
            current, size = [], 0
    if current:
        batches.append(np.concatenate(current))
    return batches


def _query_softmax_loss(logits: torch.Tensor, y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean over queries with a positive of -log softmax(positive logit) within the query."""
    uq, inv = torch.unique(q, return_inverse=True)
    n = len(uq)
    peak = torch.full((n,), -torch.inf).scatter_reduce(0, inv, logits.detach(), "amax")
    lse = peak + torch.log(torch.zeros(n).index_add(0, inv, torch.exp(logits - peak[inv])))
    pos = y > 0
    if not bool(pos.any()):
        return logits.sum() * 0.0
    return (lse[inv[pos]] - logits[pos]).mean()


def fused_log_odds(p: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    """The ranking value of (n, heads) probabilities: the log-odds of their weighted mean.

    One head: its log-odds. Two: the same order as the configured weighted sum. Log-odds, not probabilities, because the
    re-ranker scales each list's scores to [0, 1] for MMR/DPP relevance: probabilities
    squash everything below the top few items to ~0, so diversity would decide nearly
    every slot, while log-odds spread like LambdaRank's (Beauty validation, Wide&Deep, same
    ranked order: final NDCG@10 0.0737 with probabilities, 0.0749 with log-odds;
    bench/results/rank_tune_Beauty_validation_q60k*.md).
    """
    w = np.asarray(weights, dtype=np.float64)
    v = np.clip(p.astype(np.float64) @ w / max(float(w.sum()), 1e-12), 1e-7, 1 - 1e-7)
    return (np.log(v) - np.log1p(-v)).astype(np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def _platt(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(a, b) minimising the logloss of sigmoid(a z + b): Newton steps with backtracking, so
    the loss never rises (plain Newton overshoots on listwise logits, whose scale is free)."""
    z = z.astype(np.float64)
    y = y.astype(np.float64)

    def loss(ab: np.ndarray) -> float:
        t = ab[0] * z + ab[1]
        return float(np.mean(np.logaddexp(0.0, t) - y * t))

    ab = np.array([1.0, 0.0])
    current = loss(ab)
    for _ in range(50):
        p = _sigmoid(ab[0] * z + ab[1])
        g = np.array([np.sum((p - y) * z), np.sum(p - y)])
        w = p * (1 - p) + 1e-9
        hess = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, g)
        shrink = 1.0
        while shrink > 1e-6 and not loss(ab - shrink * step) <= current:
            shrink *= 0.5
        if shrink <= 1e-6:
            break
        ab = ab - shrink * step
        current = loss(ab)
        if np.abs(shrink * step).max() < 1e-8:
            break
    return ab.astype(np.float32)


def _ranker(name: str, net: type[nets.Net], config: type[NeuralRankerConfig], doc: str) -> type[NeuralRanker]:
    return type(f"{net.__name__[:-3]}Ranker", (NeuralRanker,), {"name": name, "Net": net, "Config": config, "__doc__": doc})


LRRanker = _ranker("lr", nets.LRNet, LRConfig, "Logistic regression over one-hot ids, pooled histories and dense features.")
FMRanker = _ranker("fm", nets.FMNet, FMConfig, "Factorisation machine: LR plus pairwise field interactions.")
WideDeepRanker = _ranker("widedeep", nets.WideDeepNet, WideDeepConfig, "Wide & Deep: LR (wide) plus an MLP (deep).")
FFMRanker = _ranker("ffm", nets.FFMNet, FFMConfig, "Field-aware FM: LR plus field-pair interactions.")
DeepFMRanker = _ranker("deepfm", nets.DeepFMNet, DeepFMConfig, "DeepFM: FM and an MLP sharing embeddings.")
DINRanker = _ranker("din", nets.DINNet, DINConfig, "DIN: candidate-aware attention over the recent items.")
DIENRanker = _ranker("dien", nets.DIENNet, DIENConfig, "DIEN: GRU interests (auxiliary loss), AUGRU evolution.")
SharedBottomRanker = _ranker(
    "shared_bottom", nets.SharedBottomNet, SharedBottomConfig, "Shared-Bottom multi-task (interact, like), fused."
)
MMoERanker = _ranker("mmoe", nets.MMoENet, MMoEConfig, "MMoE multi-task (interact, like), fused.")

class GBDTLRConfig(LRConfig):
    """GBDT+LR (rank.model = "gbdt_lr"): LightGBM leaves one-hot into a logistic regression."""

    n_trees: int = Field(50, ge=1, description="LightGBM trees whose leaves become LR inputs")
    num_leaves: int = Field(15, ge=2, description="leaves per tree")
    tree_learning_rate: float = Field(0.1, gt=0, description="LightGBM shrinkage")
    min_child_samples: int = Field(50, ge=1, description="rows a leaf needs at least")


class GBDTLRRanker(NeuralRanker):
    """GBDT+LR (He et al. 2014): LightGBM trees over the dense features; each tree's leaf
    becomes a one-hot field of a logistic regression that also sees the ids and recent
    items. Dense values reach the LR only through the trees."""

    name = "gbdt_lr"
    Net = nets.LRNet
    Config = GBDTLRConfig

    def fit(
        self,
        train_rows: Candidates,
        labels: np.ndarray,
        features: list[str],
        progress: bool = False,
        specs: FeatureSpecs | None = None,
        like: np.ndarray | None = None,
    ) -> Self:
        import lightgbm as lgb

        c = self.config
        base = specs if specs is not None else FeatureSpecs(dense=list(features))
        self.gbdt_dense = list(base.dense)
        params = {
            "objective": "binary",
            "num_leaves": c.num_leaves,
            "learning_rate": c.tree_learning_rate,
            "min_child_samples": c.min_child_samples,
            "num_threads": c.train.threads,
            "seed": c.seed,
            "verbose": -1,
        }
        # trees see only the training queries: held-out ones judge the LR (early stopping,
        # calibration) and must not be memorised by its inputs
        fit_rows = np.flatnonzero(~self._held_out(train_rows, np.random.default_rng(c.seed)))
        data = lgb.Dataset(self._gbdt_matrix(train_rows)[fit_rows], labels[fit_rows])
        self.booster = lgb.train(params, data, num_boost_round=c.n_trees)
        leaves = [SparseSpec(f"gbdt_leaf_{t}", c.num_leaves + 1) for t in range(self.booster.num_trees())]
        lr_specs = FeatureSpecs(list(base.sparse) + leaves, [], list(base.sequence))
        return super().fit(self._with_leaves(train_rows), labels, [], progress, specs=lr_specs, like=like)

    def _gbdt_matrix(self, cands: Candidates) -> np.ndarray:
        return np.column_stack([cands.features[d].astype(np.float64) for d in self.gbdt_dense])

    def _with_leaves(self, cands: Candidates) -> Candidates:
        out = Candidates(cands.query, cands.item, cands.score, cands.n_queries, dict(cands.features))
        if len(cands):
            leaf = self.booster.predict(self._gbdt_matrix(cands), pred_leaf=True, num_threads=1).reshape(len(cands), -1)
            for t in range(leaf.shape[1]):
                out.features[f"gbdt_leaf_{t}"] = leaf[:, t].astype(np.int64) + 1
        return out

    def _inputs(self, cands: Candidates) -> dict[str, torch.Tensor]:
        if not any(s.name.startswith("gbdt_leaf_") and s.name in cands.features for s in self.specs.sparse):
            cands = self._with_leaves(cands)
        return super()._inputs(cands)

    def _fit_normalisation(self, cands: Candidates) -> None:
        self.mean = np.zeros(0, dtype=np.float32)
        self.std = np.ones(0, dtype=np.float32)
        self.edges = np.zeros((0, 0), dtype=np.float32)

    def save(self, directory: Path) -> None:
        super().save(directory)
        self.booster.save_model(str(Path(directory) / "gbdt.txt"))
        write_json(Path(directory) / "gbdt.json", {"dense": self.gbdt_dense})

    @classmethod
    def load(cls, directory: Path) -> Self:
        import lightgbm as lgb

        r = super().load(directory)
        r.booster = lgb.Booster(model_file=str(Path(directory) / "gbdt.txt"))
        r.gbdt_dense = read_json(Path(directory) / "gbdt.json")["dense"]
        return r


NEURAL_RANKERS: dict[str, type[NeuralRanker]] = {
    r.name: r
    for r in (
        LRRanker, FMRanker, FFMRanker, GBDTLRRanker, WideDeepRanker, DeepFMRanker, DINRanker, DIENRanker,
        SharedBottomRanker, MMoERanker,
    )
}
