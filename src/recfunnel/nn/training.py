"""One training loop for the PyTorch models: progress bars, early stopping, refit.

PROTOCOL.md: the validation step (each user's second-to-last interaction) picks the
number of epochs; the model that is served is then refitted from scratch on all the fit
data for that many epochs, so the reported numbers come from a model that saw all of it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm


class TrainConfig(BaseModel):
    """How a neural model is trained."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(200, ge=1, description="most epochs; early stopping usually ends sooner")
    batch_size: int = Field(256, ge=1, description="sequences (or examples) per step")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty")
    eval_every: int = Field(2, ge=1, description="epochs between validation checks")
    patience: int = Field(5, ge=1, description="validation checks without improvement before stopping")
    eval_users: int = Field(5000, ge=1, description="validation users sampled for early stopping")
    refit: bool = Field(True, description="retrain on all fit data for the best epoch count")
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="validate and keep an exponential moving average of the weights (0 = off); "
        "it smooths the step-to-step noise of a model that is best after its first epoch",
    )
    threads: int = Field(
        1, ge=1, description="torch CPU threads (more than the free cores makes torch far slower, not faster)"
    )
    progress: bool = Field(True, description="show progress bars")


@dataclass
class TrainResult:
    best_epoch: int = 0
    best_score: float = float("-inf")
    history: list[tuple[int, float]] = field(default_factory=list)


def train(
    model: torch.nn.Module,
    epoch_steps: Callable[[np.random.Generator], list],
    step_loss: Callable[[torch.nn.Module, object], torch.Tensor],
    cfg: TrainConfig,
    seed: int,
    validate: Callable[[torch.nn.Module], float] | None = None,
    fixed_epochs: int | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train `model` in place; with `validate`, stop early and restore the best weights.

    `epoch_steps(rng)` returns one epoch's list of batches; `step_loss` turns one into a
    scalar loss. `fixed_epochs` runs exactly that many epochs (the refit). With
    `cfg.ema_decay`, the averaged weights are the ones validated and left in `model`.
    """
    torch.manual_seed(seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    averaged = AveragedModel(model, avg_fn=_ema(cfg.ema_decay)) if cfg.ema_decay > 0 else None
    kept = model if averaged is None else averaged.module
    result = TrainResult()
    best_state = None
    checks_without_gain = 0
    n_epochs = fixed_epochs or cfg.epochs
    bar = tqdm(range(1, n_epochs + 1), desc=desc, disable=not cfg.progress, leave=False)
    for epoch in bar:
        model.train()
        total, n = 0.0, 0
        for batch in epoch_steps(rng):
            opt.zero_grad(set_to_none=True)
            loss = step_loss(model, batch)
            loss.backward()
            opt.step()
            if averaged is not None:
                averaged.update_parameters(model)
            total += float(loss.detach())
            n += 1
        postfix = {"loss": f"{total / max(n, 1):.4f}"}
        if validate is not None and fixed_epochs is None and epoch % cfg.eval_every == 0:
            _own_statistics(kept, model, epoch_steps, step_loss, seed + epoch)
            kept.eval()
            with torch.no_grad():
                score = validate(kept)
            result.history.append((epoch, score))
            postfix["val"] = f"{score:.4f}"
            if score > result.best_score:
                result.best_score, result.best_epoch = score, epoch
                best_state = copy.deepcopy(kept.state_dict())
                checks_without_gain = 0
            else:
                checks_without_gain += 1
                if checks_without_gain >= cfg.patience:
                    bar.set_postfix(postfix)
                    break
        bar.set_postfix(postfix)
    bar.close()
    if best_state is None and averaged is not None:
        _own_statistics(kept, model, epoch_steps, step_loss, seed + n_epochs)
        best_state = averaged.module.state_dict()
    if best_state is not None:
        model.load_state_dict(best_state)
    if result.best_epoch == 0:
        result.best_epoch = n_epochs
    model.eval()
    return result


BN_BATCHES = 100  # training batches that re-estimate the averaged weights' batch-norm statistics


def _own_statistics(
    kept: torch.nn.Module,
    model: torch.nn.Module,
    epoch_steps: Callable[[np.random.Generator], list],
    step_loss: Callable[[torch.nn.Module, object], torch.Tensor],
    seed: int,
) -> None:
    """Give the averaged copy batch-norm statistics of its own, as SWA does (`update_bn`):
    the live model's running means describe the live weights' activations, not the
    average's, and Dice (DIN's activation) turns on exactly where that mean lies, so
    borrowed statistics shift every unit's switch point. Re-estimated over up to
    BN_BATCHES training batches with only the batch norms in training mode (a cumulative
    average); without batch norms there is nothing to do."""
    if kept is model:
        return
    norms = [m for m in kept.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was = kept.training
    kept.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for batch in epoch_steps(np.random.default_rng(seed))[:BN_BATCHES]:
            step_loss(kept, batch)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    kept.train(was)


def _ema(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Moving average whose decay warms up as (1 + n) / (10 + n), as TensorFlow's
    ExponentialMovingAverage does, so the random start does not linger in the average."""

    def update(avg: torch.Tensor, param: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return avg + (param - avg) * (1.0 - d)

    return update

