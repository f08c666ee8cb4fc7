"""torch-rechub 0.9.0's matching models on the protocol split (PROTOCOL.md), same metrics.

DSSM, YoutubeDNN and MIND (`torch_rechub.models.matching`) are trained the way the
library's MovieLens examples train them (`examples/matching/run_ml_*.py`): one example per
(history -> next item) step of every fit-data user, user id + profile columns + the mean
(DSSM, YoutubeDNN) or capsule-routed (MIND) history on the user side, item id (+ category
for DSSM) on the item side, popularity-sampled negatives (`negative_sample(method_id=1)`),
point-wise BCE for DSSM and list-wise softmax for YoutubeDNN/MIND, all through
`MatchTrainer`. SASRec gets the original paper's training: one row per user (the last
`max_len` steps), a sampled negative per position, pair-wise loss (`MatchTrainer(mode=1)`).

What this adapter does differently from the examples, so the baselines are not straw men
(each measured on ML-100K, see bench/results/protocol_compare.md):

- the examples train a fixed 10 epochs at lr 1e-4 on a 100-user sample; here the epoch
  count is chosen by NDCG@10 on the validation step (each user's second-to-last item,
  checked every `eval_every` epochs with early stopping), and the reported model is
  refitted on all fit data for that many epochs (PROTOCOL.md), at lr 1e-3;
- negatives are resampled every epoch (the examples draw them once);
- the history's padding is masked in mean pooling (`padding_idx=0`; the examples average
  the padding embedding in);
- DSSM and MIND take a `temperature` but 0.9.0 ignores it (DSSM's division is commented
  out, MIND never applies it): cosine logits in [-1, 1] barely train a softmax/BCE, so the
  small subclasses below apply it, as YoutubeDNN already does.

Scoring is full ranking over every fit-data item minus the user's own, through
`full_ranking_topk` and `summarize` (the same code as recfunnel's own models and the
implicit baselines). MIND's user has several interest vectors: an item scores the max
over them (each interest retrieves; the merged list keeps the best score).

torch-rechub is the optional `bench` extra; this module imports it lazily.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel.data.dataset import Dataset
from recfunnel.data.split import Split, leave_last_out
from recfunnel.evaluate.metrics import ndcg, summarize, target_ranks
from recfunnel.evaluate.ranking import full_ranking_topk

MODELS: tuple[str, ...] = ("dssm", "youtubednn", "mind", "sasrec")
TOP_K = 500


@dataclass
class RechubSettings:
    """One model's training settings (defaults: the library's MovieLens examples, see above)."""

    embed_dim: int = 16
    max_len: int = 50
    learning_rate: float = 1e-3
    weight_decay: float = 1e-6
    batch_size: int = 1024
    neg_ratio: int = 3
    neg_method: int = 1  # torch-rechub's negative_sample method: 0 uniform, 1 count**0.75 (examples)
    temperature: float = 0.02
    epochs: int = 60  # most epochs; validation usually stops sooner
    eval_every: int = 2
    patience: int = 3
    eval_users: int = 5000
    user_dims: tuple[int, ...] = (256, 128, 64)  # DSSM towers / YoutubeDNN user tower
    interest_num: int = 4  # MIND
    num_blocks: int = 2  # SASRec
    num_heads: int = 1
    dropout: float = 0.2
    refit: bool = True


DEFAULTS: dict[str, RechubSettings] = {
    # run_ml_dssm.py: 16-d embeddings, towers [256, 128, 64] with prelu, temperature 0.02,
    # point-wise; negatives uniform and 5 per positive (the example's 3 drawn by count**0.75
    # teach the towers to push popular items down: HR@10 far under popularity on ML-100K)
    "dssm": RechubSettings(neg_method=0, neg_ratio=5, batch_size=2048, epochs=40),
    # run_ml_youtube_dnn.py: user tower [128, 64, 16], temperature 0.02, list-wise; measured
    # on ML-100K, 3 negatives by count**0.75: NDCG@10 0.012; 20 uniform: 0.044
    "youtubednn": RechubSettings(user_dims=(128, 64, 16), neg_method=0, neg_ratio=20),
    # run_ml_mind.py: 4 interests, temperature 0.02, list-wise, lr 1e-3; negatives as YoutubeDNN
    "mind": RechubSettings(neg_method=0, neg_ratio=20, batch_size=512),
    # SASRec paper settings (ML-1M: dropout 0.2), 2 blocks, 1 head; 64-d like our channel
    "sasrec": RechubSettings(embed_dim=64, batch_size=128, dropout=0.2, epochs=200, eval_every=5),
}


# ---- input construction --------------------------------------------------------------
def _windows(ds: Dataset, starts: np.ndarray, ends: np.ndarray, max_len: int, padding: str) -> np.ndarray:
    """(len(ends), max_len) item ids + 1 of event rows [starts[j], ends[j]), the last max_len.

    Rows are 0-padded at the front ('pre', right-aligned) or at the back ('post').
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    items = np.append(ds.item.astype(np.int64) + 1, 0)  # a trailing 0 for clipped indices
    lo = np.maximum(starts, ends - max_len)
    n = ends - lo
    offs = np.arange(max_len)
    if padding == "pre":
        idx = ends[:, None] - max_len + offs
        valid = offs >= (max_len - n)[:, None]
    else:
        idx = lo[:, None] + offs
        valid = offs < n[:, None]
    return np.where(valid, items[np.clip(idx, 0, len(items) - 1)], 0)


def _user_windows(ds: Dataset, users: np.ndarray, max_len: int, padding: str) -> np.ndarray:
    users = np.asarray(users, dtype=np.int64)
    return _windows(ds, ds.user_indptr[users], ds.user_indptr[users + 1], max_len, padding)


def _step_rows(ds: Dataset) -> np.ndarray:
    """Event rows that have at least one earlier event of the same user (training targets)."""
    first = np.zeros(ds.n_events, dtype=bool)
    first[ds.user_indptr[:-1][np.diff(ds.user_indptr) > 0]] = True
    return np.flatnonzero(~first)


@dataclass
class _Schema:
    """Integer codes of user profile columns and each item's category, shared by all sets."""

    user_cols: dict[str, np.ndarray]  # column -> code per user (0 = unknown)
    user_vocab: dict[str, int]
    item_cate: np.ndarray  # per item, code + 1 (0 = none)
    n_cates: int

    @classmethod
    def of(cls, ds: Dataset) -> "_Schema":
        cols, vocab = {"user_id": np.arange(1, ds.n_users + 1)}, {"user_id": ds.n_users + 1}
        for c in ds.users.columns:
            if c == "user":
                continue
            vals = ds.users[c].cast(str).fill_null("").to_numpy()
            uniq, codes = np.unique(vals, return_inverse=True)
            if len(uniq) < 2:
                continue
            cols[c] = codes + 1
            vocab[c] = len(uniq) + 1
        # the item's most specific category (fewest items), as the examples' `cate_id`
        cats = sp.csr_matrix(ds.item_categories)
        size = np.asarray((cats > 0).sum(axis=0)).ravel()
        cate = np.zeros(ds.n_items, dtype=np.int64)
        for i in range(ds.n_items):
            row = cats.indices[cats.indptr[i] : cats.indptr[i + 1]]
            if len(row):
                cate[i] = row[np.argmin(size[row])] + 1
        return cls(cols, vocab, cate, cats.shape[1] + 1)


class _Batches:
    """An iterable of (x_dict, y) batches for `MatchTrainer`, rebuilt on every iteration.

    Each pass draws fresh negatives and a fresh order (numpy slicing, no per-row Python),
    which is all a DataLoader over rechub's `TorchDataset` would do, only faster.
    """

    def __init__(self, make_epoch, batch_size: int, seed: int) -> None:  # noqa: ANN001
        self.make_epoch = make_epoch
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self._n = len(make_epoch(np.random.default_rng(seed))[1])

    def __len__(self) -> int:
        return -(-self._n // self.batch_size)

    def __iter__(self):  # noqa: ANN204
        x, y = self.make_epoch(self.rng)
        order = self.rng.permutation(len(y))
        bs = self.batch_size
        for lo in range(0, len(y), bs):
            sel = order[lo : lo + bs]
            if len(sel) < 2:  # SASRec squeezes the batch axis of a batch of one
                continue
            yield {k: torch.from_numpy(v[sel]) for k, v in x.items()}, torch.from_numpy(y[sel])


def _neg_sampler(ds: Dataset, method: int):  # noqa: ANN202
    """torch-rechub's `negative_sample`: method 0 uniform over items, 1 by count**0.75."""
    from torch_rechub.utils.match import negative_sample

    counts = ds.item_user_count
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]
    cnt = {int(i) + 1: int(counts[i]) for i in order}

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        np.random.seed(int(rng.integers(2**31 - 1)))  # the library draws from numpy's global RNG
        return np.asarray(negative_sample(cnt, n, method_id=method), dtype=np.int64)

    return draw


# ---- the models --------------------------------------------------------------------
def _build(name: str, s: RechubSettings, schema: _Schema, n_items: int) -> torch.nn.Module:
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.models.matching import DSSM, MIND, SASRec, YoutubeDNN

    d = s.embed_dim
    vocab = n_items + 1
    if name == "sasrec":
        seq = SequenceFeature("seq", vocab_size=vocab, embed_dim=d, pooling="concat", padding_idx=0)
        pos = SequenceFeature("pos", vocab_size=vocab, embed_dim=d, pooling="concat", shared_with="seq")
        neg = SequenceFeature("neg", vocab_size=vocab, embed_dim=d, pooling="concat", shared_with="seq")
        return _SASRec([seq, pos, neg], max_len=s.max_len, dropout_rate=s.dropout, num_blocks=s.num_blocks, num_heads=s.num_heads)
    user = [SparseFeature(c, vocab_size=schema.user_vocab[c], embed_dim=d) for c in schema.user_cols]
    item_id = SparseFeature("item_id", vocab_size=vocab, embed_dim=d)
    pooling = "concat" if name == "mind" else "mean"
    hist = SequenceFeature("hist_item_id", vocab_size=vocab, embed_dim=d, pooling=pooling, shared_with="item_id", padding_idx=0)
    neg = [SequenceFeature("neg_items", vocab_size=vocab, embed_dim=d, pooling="concat", shared_with="item_id")]
    if name == "dssm":
        tower = {"dims": list(s.user_dims), "activation": "prelu"}
        items = [item_id, SparseFeature("cate_id", vocab_size=schema.n_cates, embed_dim=d)]
        return _DSSM(user + [hist], items, user_params=tower, item_params=dict(tower), temperature=s.temperature)
    if name == "youtubednn":
        return YoutubeDNN(user + [hist], [item_id], neg, user_params={"dims": list(s.user_dims)}, temperature=s.temperature)
    if name == "mind":
        return _MIND(user, [hist], [item_id], neg, max_length=s.max_len, temperature=s.temperature, interest_num=s.interest_num)
    raise ValueError(f"unknown torch-rechub model '{name}', expected one of {MODELS}")


def _subclasses():  # noqa: ANN202
    from torch_rechub.models.matching import DSSM, MIND, SASRec

    class TempDSSM(DSSM):
        """DSSM with its `temperature` applied (0.9.0 has the division commented out)."""

        def forward(self, x):  # noqa: ANN001, ANN202
            if self.mode is not None:
                return super().forward(x)
            u, i = self.user_tower(x), self.item_tower(x)
            return torch.sigmoid((u * i).sum(dim=1) / self.temperature)

    class TempMIND(MIND):
        """MIND with its `temperature` applied to the list-wise logits (0.9.0 ignores it)."""

        def forward(self, x):  # noqa: ANN001, ANN202
            y = super().forward(x)
            return y if self.mode is not None else y / self.temperature

    class FlatSASRec(SASRec):
        """SASRec whose pair-wise logits are flattened to the non-padding positions.

        0.9.0's `BPRLoss` flattens the positive logits but not the negative ones, so the
        (batch, positions) pair `SASRec.forward` returns does not broadcast; this returns
        the same logits as two aligned vectors (and leaves the padding out of the mean).
        """

        def forward(self, x):  # noqa: ANN001, ANN202
            out = super().forward(x)
            if self.mode is not None:
                return out
            pos, neg = out
            keep = x["pos"] > 0
            return pos[keep], neg[keep]

    return TempDSSM, TempMIND, FlatSASRec


def _SASRec(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202, N802
    return _subclasses()[2](*args, **kwargs)


def _DSSM(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202, N802
    return _subclasses()[0](*args, **kwargs)


def _MIND(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202, N802
    return _subclasses()[1](*args, **kwargs)


def _train_data(name: str, s: RechubSettings, ds: Dataset, schema: _Schema, seed: int) -> _Batches:
    """Training batches in the dict layout the model's features name."""
    draw = _neg_sampler(ds, s.neg_method)
    if name == "sasrec":
        users = np.flatnonzero(np.diff(ds.user_indptr) >= 2)
        # the last max_len + 1 items, left-aligned: inputs all but the last, targets shifted by one
        full = _user_windows(ds, users, s.max_len + 1, "post")
        n = (full > 0).sum(axis=1)
        seq = full[:, :-1].copy()
        short = np.flatnonzero(n <= s.max_len)
        seq[short, n[short] - 1] = 0  # the last item is a target only
        pos = full[:, 1:]
        n_items = ds.n_items

        def epoch(rng: np.random.Generator):  # noqa: ANN202
            neg = rng.integers(1, n_items + 1, size=pos.shape)
            neg = np.where(pos > 0, neg, 0)
            return {"seq": seq, "pos": pos, "neg": neg}, np.zeros(len(seq), dtype=np.float32)

        return _Batches(epoch, s.batch_size, seed)

    rows = _step_rows(ds)
    users = ds.user[rows].astype(np.int64)
    hist = _windows(ds, ds.user_indptr[users], rows, s.max_len, "post" if name == "mind" else "pre")
    target = ds.item[rows].astype(np.int64) + 1
    base = {c: v[users] for c, v in schema.user_cols.items()}
    base["hist_item_id"] = hist
    if name == "dssm":
        reps = 1 + s.neg_ratio

        def epoch(rng: np.random.Generator):  # noqa: ANN202
            x = {k: np.repeat(v, reps, axis=0) for k, v in base.items()}
            items = np.repeat(target, reps)
            label = np.zeros(len(items), dtype=np.float32)
            label[::reps] = 1.0
            negs = label == 0
            items[negs] = draw(rng, int(negs.sum()))
            x["item_id"] = items
            x["cate_id"] = schema.item_cate[items - 1]
            return x, label

        return _Batches(epoch, s.batch_size, seed)

    def epoch_listwise(rng: np.random.Generator):  # noqa: ANN202
        x = dict(base)
        x["item_id"] = target
        x["neg_items"] = draw(rng, len(target) * s.neg_ratio).reshape(len(target), s.neg_ratio)
        return x, np.zeros(len(target), dtype=np.int64)  # class 0 = the positive

    return _Batches(epoch_listwise, s.batch_size, seed)


@torch.no_grad()
def _embeddings(name: str, model: torch.nn.Module, s: RechubSettings, ds: Dataset, schema: _Schema, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user vectors, item vectors) from the model's own user/item inference modes.

    User vectors are (n, d), or (n, interests, d) for MIND; item vectors are (n_items, d).
    """
    model.eval()
    pad = "post" if name in ("mind", "sasrec") else "pre"
    hist = _user_windows(ds, users, s.max_len, pad)
    chunk = 1024
    out = []
    try:
        model.mode = "user"
        for lo in range(0, len(users), chunk):
            sl = slice(lo, lo + chunk)
            if name == "sasrec":
                x = {"seq": hist[sl]}
            else:
                x = {c: v[users[sl]] for c, v in schema.user_cols.items()}
                x["hist_item_id"] = hist[sl]
            x = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in x.items()}
            if len(users[sl]) == 1:  # SASRec squeezes a batch of one: score a twin row
                x = {k: torch.cat([v, v]) for k, v in x.items()}
                out.append(model(x)[:1].numpy())
            else:
                out.append(model(x).numpy())
        u = np.concatenate(out) if out else np.zeros((0, s.embed_dim), dtype=np.float32)
        if name == "sasrec":
            items = model.item_emb.embed_dict["seq"].weight[1:].numpy().copy()
        else:
            model.mode = "item"
            ids = np.arange(1, ds.n_items + 1)
            x = {"item_id": torch.from_numpy(ids)}
            if name == "dssm":
                x["cate_id"] = torch.from_numpy(schema.item_cate)
            items = model(x).numpy()
    finally:
        model.mode = None
    return u.astype(np.float32), items.astype(np.float32)


def _score_fn(u: np.ndarray, items: np.ndarray, users: np.ndarray):  # noqa: ANN202
    """Catalog scores for a chunk of user ids (rows of `u` follow the sorted `users`)."""

    def score(chunk: np.ndarray) -> np.ndarray:
        rows = u[np.searchsorted(users, chunk)]
        if rows.ndim == 3:  # MIND: best interest per item
            return np.einsum("bkd,nd->bkn", rows, items).max(axis=1)
        return rows @ items.T

    return score


def _topk(name, model, s, ds, schema, users, k):  # noqa: ANN001, ANN202
    order = np.argsort(users, kind="stable")
    su = np.asarray(users)[order]
    u, items = _embeddings(name, model, s, ds, schema, su)
    top = full_ranking_topk(_score_fn(u, items, su), su, ds.user_item, k, candidate_items=ds.item_user_count > 0)
    out = np.empty_like(top)
    out[order] = top
    return out


@contextlib.contextmanager
def _quiet(progress: bool):  # noqa: ANN202
    """MatchTrainer prints epochs and tqdm bars; keep them only when progress is asked for."""
    if progress:
        yield
        return
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def _train(name, s, ds, schema, seed, epochs, progress, validate=None):  # noqa: ANN001, ANN202
    """Train a fresh model with MatchTrainer; with `validate`, stop early on it."""
    from torch_rechub.trainers import MatchTrainer

    torch.manual_seed(seed)
    model = _build(name, s, schema, ds.n_items)
    data = _train_data(name, s, ds, schema, seed)
    mode = {"dssm": 0, "sasrec": 1}.get(name, 2)
    history: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = MatchTrainer(
            model, mode=mode, optimizer_params={"lr": s.learning_rate, "weight_decay": s.weight_decay},
            n_epoch=epochs, device="cpu", model_path=tmp,
        )
        if validate is None:
            with _quiet(progress):
                trainer.fit(data)
            return model, 0, history
        best, best_epoch, best_state, waited = -1.0, 0, None, 0
        for epoch in range(1, epochs + 1):
            with _quiet(progress):
                trainer.train_one_epoch(data)
            if epoch % s.eval_every and epoch != epochs:
                continue
            score = validate(model)
            history.append((epoch, score))
            if progress:
                print(f"  {name} epoch {epoch}: val NDCG@10 {score:.4f}", flush=True)
            if score > best:
                best, best_epoch, best_state, waited = score, epoch, copy.deepcopy(model.state_dict()), 0
            else:
                waited += 1
                if waited >= s.patience:
                    break
        model.load_state_dict(best_state)
        return model, best_epoch, history


def run_rechub(
    split: Split,
    model: str,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    k: int = TOP_K,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit torch-rechub's `model` on the fit data, rank the full catalog per test user, score it.

    Returns {"model", "metrics", "fit_seconds", "predict_seconds", "best_epoch",
    "val_history", "settings"}, `metrics` as in `recfunnel.evaluate.baselines.run_implicit`.
    `fit_seconds` covers the epoch search on the validation step and the refit.
    """
    if model not in MODELS:
        raise ValueError(f"unknown torch-rechub model '{model}', expected one of {MODELS}")
    s = replace(DEFAULTS[model], **(settings or {}))
    torch.set_num_threads(1)
    fit = split.fit
    schema = _Schema.of(fit)

    t0 = time.perf_counter()
    val = leave_last_out(fit)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(val.users), min(s.eval_users, len(val.users)), replace=False))
    vu, vt = val.users[pick], val.items[pick]

    def validate(m: torch.nn.Module) -> float:
        top = _topk(model, m, s, val.fit, schema, vu, 10)
        return ndcg(target_ranks(top, vt), 10)

    net, best_epoch, history = _train(model, s, val.fit, schema, seed, s.epochs, progress, validate)
    if s.refit:
        net, _, _ = _train(model, s, fit, schema, seed, max(best_epoch, 1), progress)
    fit_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    topk = _topk(model, net, s, fit, schema, split.users, k)
    predict_seconds = time.perf_counter() - t0
    metrics = summarize(topk, split.items, fit.item_categories, fit.item_user_count, fit.n_users, fit.n_items)
    return {
        "model": model,
        "metrics": metrics,
        "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds,
        "best_epoch": best_epoch,
        "val_history": history,
        "settings": {kk: list(v) if isinstance(v, tuple) else v for kk, v in asdict(s).items()},
    }


def rechub_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("torch-rechub")
    except Exception:  # noqa: BLE001
        return None


__all__ = ["DEFAULTS", "MODELS", "RechubSettings", "rechub_version", "run_rechub"]
