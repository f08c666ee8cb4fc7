"""torch-rechub 0.9.0's DeepFM, DIN and MMoE as a recfunnel `Ranker` (bench only).

The adapter reads exactly what recfunnel's neural rankers read: the candidate columns
named by `FeatureSpecs` (sparse ids, dense values, recent-item sequences), with the dense
values normalised by `NeuralRanker`'s own code (signed log1p, then z-score on the training
rows), and the same 15% of training queries held out (same seed, same draw). Each spec
becomes a torch-rechub feature:

- sparse -> `SparseFeature` (16-d); the tables a sequence shares (item id, item category)
  get `padding_idx=0`, so padding steps embed to zero;
- dense -> one `DenseFeature` per column;
- sequence -> `SequenceFeature(shared_with=<its sparse table>, padding_idx=0)`: mean
  pooled (masked) for DeepFM and MMoE; for DIN the history (`pooling="concat"`) attends
  with the candidate's own feature as the target (item id for recent items, category for
  recent categories), sharing its embedding table.

Models, as the library builds them: DeepFM (deep part: every feature; FM and its linear
term: sparse and pooled sequences, as rechub's FM takes embeddings only), DIN (Dice MLP,
Dice activation unit [36], unnormalised attention), MMoE (4 experts, a [32] tower per
task: interact, like). Layer sizes follow recfunnel's defaults (embeddings 16, MLP/experts
[128, 64], no dropout) so the comparison is about the implementation, not the width.

One change to the library: 0.9.0's DIN counts dense features in its MLP's input width
but its embedding layer drops them (it returns sparse embeddings only when not
squeezing), so a DIN with dense features fails on a shape mismatch. `DINWithDense`
appends the dense values to the MLP input, nothing else.

Training is the library's own: `CTRTrainer` (DeepFM, DIN) and `MTLTrainer` (MMoE, mean
of the two BCE losses, early stopping on task 0, the interact head), BCE on sigmoid
outputs, Adam lr 1e-3 with rechub's default weight decay 1e-5, batch 1024, at most 20
epochs, early stopping on the held-out queries' AUC with patience 2 (recfunnel's
settings, except its lr of 2e-3). The loaders yield what a `DataLoader` over rechub's
`TorchDataset` yields (a dict of column tensors and the labels), indexed a batch at a
time. Probabilities are the models' sigmoid outputs, uncalibrated (recfunnel's rankers are
Platt-scaled); MMoE ranks by the log-odds of (1.0 x P(interact) + 0.5 x P(like)) / 1.5, recfunnel's fusion.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from recfunnel.candidates import Candidates
from recfunnel.features.specs import FeatureSpecs
from recfunnel.persist import read_json, write_json
from recfunnel.rank.base import Ranker, RankerConfig
from recfunnel.rank.metrics import auc, calibration_error, gauc, logloss
from recfunnel.rank.neural import NeuralRanker, fused_log_odds

SCORE_CHUNK = 16384


class RechubRankerConfig(RankerConfig):
    """A torch-rechub ranking model trained by the library's own trainer."""

    model: Literal["deepfm", "din", "mmoe"] = "deepfm"
    embed_dim: int = Field(16, ge=1)
    hidden: list[int] = Field([128, 64], description="MLP / expert layer sizes")
    dropout: float = Field(0.0, ge=0, lt=1)
    dense_buckets: int = Field(0, ge=0, le=0, description="none: rechub's models read the dense values only")
    attention_hidden: list[int] = Field([36], description="DIN activation unit")
    n_experts: int = Field(4, ge=1)
    tower_hidden: int = Field(32, ge=1)
    fusion_interact: float = 1.0
    fusion_like: float = 0.5
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5  # torch-rechub's trainers' default
    batch_size: int = 1024
    epochs: int = 20
    patience: int = 2
    holdout_share: float = Field(0.15, gt=0, lt=1)
    seed: int = 0
    threads: int = 1
    verbose: bool = Field(False, description="let the trainers print (epochs, progress bars)")


class _Batches:
    """What a DataLoader over rechub's TorchDataset yields: ({column: tensor}, labels)."""

    def __init__(self, x: dict[str, torch.Tensor], y: torch.Tensor, rows: np.ndarray, batch: int, seed: int | None):
        self.x, self.y, self.rows, self.batch = x, y, rows, batch
        self.rng = None if seed is None else np.random.default_rng(seed)

    def __len__(self) -> int:
        return (len(self.rows) + self.batch - 1) // self.batch

    def __iter__(self):
        rows = self.rng.permutation(self.rows) if self.rng is not None else self.rows
        for s in range(0, len(rows), self.batch):
            idx = torch.from_numpy(rows[s : s + self.batch])
            yield {k: v[idx] for k, v in self.x.items()}, self.y[idx]


def _record_checks(stopper) -> list[float]:  # noqa: ANN001 - torch-rechub's EarlyStopper
    """The validation AUC of every epoch, as the trainer hands it to its early stopper."""
    history: list[float] = []
    check = stopper.stop_training

    def recorded(score, weights):  # noqa: ANN001, ANN202
        history.append(float(score))
        return check(score, weights)

    stopper.stop_training = recorded
    return history


def din_with_dense():  # noqa: ANN201 - a torch module class, built lazily
    from torch_rechub.basic.features import DenseFeature
    from torch_rechub.models.ranking import DIN

    class DINWithDense(DIN):
        """rechub's DIN with the dense features appended to the MLP input (see module doc)."""

        def __init__(self, features, history_features, target_features, mlp_params, attention_mlp_params):  # noqa: ANN001
            super().__init__(features, history_features, target_features, mlp_params, attention_mlp_params)
            self.sparse_features = [f for f in features if not isinstance(f, DenseFeature)]
            self.dense_features = [f for f in features if isinstance(f, DenseFeature)]

        def forward(self, x):  # noqa: ANN001, ANN201 - DIN.forward plus the dense values
            embed_x_features = self.embedding(x, self.sparse_features)
            embed_x_history = self.embedding(x, self.history_features)
            embed_x_target = self.embedding(x, self.target_features)
            pooled = [
                self.attention_layers[i](embed_x_history[:, i, :, :], embed_x_target[:, i, :]).unsqueeze(1)
                for i in range(self.num_history_features)
            ]
            parts = [torch.cat(pooled, dim=1).flatten(1), embed_x_target.flatten(1), embed_x_features.flatten(1)]
            if self.dense_features:
                parts.append(self.embedding(x, self.dense_features, squeeze_dim=True))
            return torch.sigmoid(self.mlp(torch.cat(parts, dim=1)).squeeze(1))

    return DINWithDense


class RechubRanker(Ranker):
    """A torch-rechub model behind recfunnel's Ranker interface (see module doc)."""

    name = "rechub"
    Config = RechubRankerConfig
    uses_specs = True
    config: RechubRankerConfig

    # recfunnel's own input normalisation and hold-out draw, unchanged
    _fit_normalisation = NeuralRanker._fit_normalisation
    _held_out = NeuralRanker._held_out

    @property
    def heads(self) -> int:
        return 2 if self.config.model == "mmoe" else 1

    # ---- inputs ------------------------------------------------------------------
    def _inputs(self, cands: Candidates) -> dict[str, torch.Tensor]:
        """Candidates -> {rechub feature name: tensor}, dense normalised as NeuralRanker does."""
        enc = NeuralRanker._inputs(self, cands)  # sparse (n, S), dense (n, D), one (n, K) per sequence
        x = {s.name: enc["sparse"][:, j] for j, s in enumerate(self.specs.sparse)}
        x.update({d: enc["dense"][:, j] for j, d in enumerate(self.specs.dense)})
        x.update({s.name: enc[s.name] for s in self.specs.sequence})
        return x

    def _build(self) -> torch.nn.Module:
        from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature
        from torch_rechub.models.multi_task import MMOE
        from torch_rechub.models.ranking import DeepFM

        c, sp = self.config, self.specs
        torch.manual_seed(c.seed)
        shared = {s.table for s in sp.sequence}
        sparse = {
            s.name: SparseFeature(s.name, s.vocab, embed_dim=c.embed_dim, padding_idx=0 if s.name in shared else None)
            for s in sp.sparse
        }
        dense = [DenseFeature(d) for d in sp.dense]

        def seq(pooling: str) -> list:
            return [
                SequenceFeature(
                    s.name, s.vocab, embed_dim=c.embed_dim, pooling=pooling,
                    shared_with=s.table if s.table in sparse else None, padding_idx=0,
                )
                for s in sp.sequence
            ]

        mlp = {"dims": list(c.hidden), "dropout": c.dropout}
        if c.model == "deepfm":
            fm = list(sparse.values()) + seq("mean")
            return DeepFM(deep_features=fm + dense, fm_features=fm, mlp_params={**mlp, "activation": "relu"})
        if c.model == "din":
            history = [s for s in seq("concat") if s.shared_with is not None]
            targets = [sparse[h.shared_with] for h in history]
            rest = [f for n, f in sparse.items() if f not in targets]
            return din_with_dense()(
                features=rest + dense, history_features=history, target_features=targets, mlp_params=mlp,
                attention_mlp_params={"dims": list(c.attention_hidden), "activation": "dice", "use_softmax": False},
            )
        feats = list(sparse.values()) + seq("mean") + dense
        return MMOE(
            feats, ["classification", "classification"], n_expert=c.n_experts,
            expert_params={**mlp, "activation": "relu"},
            tower_params_list=[{"dims": [c.tower_hidden], "activation": "relu"}] * 2,
        )

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
        from torch_rechub.trainers import CTRTrainer, MTLTrainer

        c = self.config
        torch.set_num_threads(c.threads)
        self.specs = specs if specs is not None else FeatureSpecs(dense=list(features))
        self.features = list(self.specs.names)
        self._fit_normalisation(train_rows)
        rng = np.random.default_rng(c.seed)  # NeuralRanker.fit's first draw: the same held-out queries
        is_val = self._held_out(train_rows, rng)
        tr, va = np.flatnonzero(~is_val), np.flatnonzero(is_val)
        x = self._inputs(train_rows)
        y = np.column_stack([labels, labels if like is None else like]).astype(np.float32)
        yt = torch.from_numpy(y if self.heads == 2 else y[:, 0].copy())
        self.model = self._build()
        opt = {"lr": c.learning_rate, "weight_decay": c.weight_decay}
        train_dl = _Batches(x, yt, tr, c.batch_size, seed=c.seed)
        val_dl = _Batches(x, yt, va, c.batch_size, seed=None)
        quiet = contextlib.nullcontext() if c.verbose else contextlib.redirect_stdout(io.StringIO())
        quiet_err = contextlib.nullcontext() if c.verbose else contextlib.redirect_stderr(io.StringIO())
        with tempfile.TemporaryDirectory() as tmp, quiet, quiet_err:
            if self.heads == 2:
                trainer: Any = MTLTrainer(
                    self.model, task_types=["classification", "classification"], optimizer_params=opt,
                    n_epoch=c.epochs, earlystop_taskid=0, earlystop_patience=c.patience, device="cpu", model_path=tmp,
                )
            else:
                trainer = CTRTrainer(
                    self.model, optimizer_params=opt, n_epoch=c.epochs, earlystop_patience=c.patience,
                    device="cpu", model_path=tmp,
                )
            history = _record_checks(trainer.early_stopper)
            trainer.fit(train_dl, val_dl if len(va) else None)
        self.model.eval()
        self.report: dict[str, float] = {
            "train_rows": float(len(tr)),
            "epochs_run": float(len(history)),
            "best_epoch": float(int(np.argmax(history)) + 1) if history else 0.0,
        }
        if len(va):
            p = self._probabilities(x, va)
            q = train_rows.query.astype(np.int64)[va]
            for h in range(self.heads):
                tag = "" if h == 0 else "_like"
                self.report.update(
                    {
                        f"holdout_auc{tag}": auc(y[va, h], p[:, h]),
                        f"holdout_gauc{tag}": float(gauc(y[va, h], p[:, h], q)),
                        f"holdout_logloss{tag}": logloss(y[va, h], p[:, h]),
                        f"calibration_error{tag}": calibration_error(y[va, h], p[:, h]),
                    }
                )
        return self

    # ---- scoring -----------------------------------------------------------------
    def _probabilities(self, x: dict[str, torch.Tensor], rows: np.ndarray | None = None) -> np.ndarray:
        n = len(next(iter(x.values()))) if rows is None else len(rows)
        out = []
        with torch.no_grad():
            if rows is None and n <= SCORE_CHUNK:  # a request: no copies
                out.append(self.model(x).reshape(n, -1).float().numpy())
                n = 0
            for s in range(0, n, SCORE_CHUNK):
                idx = torch.arange(s, min(s + SCORE_CHUNK, n)) if rows is None else torch.from_numpy(rows[s : s + SCORE_CHUNK])
                out.append(self.model({k: v[idx] for k, v in x.items()}).reshape(len(idx), -1).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.heads), dtype=np.float32)

    def head_probabilities(self, cands: Candidates) -> np.ndarray:
        """(n, heads) sigmoid outputs of the rechub model (uncalibrated)."""
        torch.set_num_threads(self.config.threads)
        return self._probabilities(self._inputs(cands)).astype(np.float32)

    def score(self, cands: Candidates) -> np.ndarray:
        if len(cands) == 0:
            return np.empty(0, dtype=np.float32)
        c = self.config
        weights = (c.fusion_interact, c.fusion_like) if self.heads == 2 else (1.0,)
        return fused_log_odds(self.head_probabilities(cands), weights)

    # ---- persistence -------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v.detach().contiguous() for k, v in self.model.state_dict().items()}
        tensors["norm.mean"] = torch.from_numpy(self.mean)
        tensors["norm.std"] = torch.from_numpy(self.std)
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
        r.edges = np.zeros((len(r.mean), 0), dtype=np.float32)
        r.model = r._build()
        r.model.load_state_dict({k[len("net.") :]: v for k, v in t.items()})
        r.model.eval()
        return r
