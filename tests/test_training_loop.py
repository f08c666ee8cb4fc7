"""The shared training loop: with `ema_decay` the weights it validates and leaves in the
model are the moving average of the optimiser's iterates, not the last iterate."""

from __future__ import annotations

import numpy as np
import torch

from recfunnel.nn.training import TrainConfig, train
from recfunnel.rank.nets import Dice


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 4, generator=g)
    y = (x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.5 * torch.randn(512, generator=g) > 0).float()
    return x, y


def _run(ema_decay: float, snapshots: list[torch.Tensor] | None = None) -> tuple[torch.nn.Linear, object]:
    x, y = _problem()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)

    def epoch_steps(r: np.random.Generator) -> list[np.ndarray]:
        perm = r.permutation(len(x))
        return [perm[s : s + 32] for s in range(0, len(perm), 32)]

    def step_loss(net: torch.nn.Module, idx: np.ndarray) -> torch.Tensor:
        if snapshots is not None:
            snapshots.append(torch.cat([p.detach().clone().ravel() for p in net.parameters()]))
        i = torch.from_numpy(idx)
        return torch.nn.functional.binary_cross_entropy_with_logits(net(x[i]).squeeze(-1), y[i])

    def validate(net: torch.nn.Module) -> float:
        return -float(torch.nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(-1), y))

    cfg = TrainConfig(epochs=3, learning_rate=0.05, eval_every=1, patience=5, ema_decay=ema_decay, progress=False)
    return model, train(model, epoch_steps, step_loss, cfg, seed=0, validate=validate)


def test_ema_keeps_the_moving_average_of_the_iterates():
    iterates: list[torch.Tensor] = []
    raw, raw_result = _run(0.0, iterates)
    iterates = iterates[1:] + [torch.cat([p.detach().ravel() for p in raw.parameters()])]  # after each step
    # both runs take the same steps (the average does not feed back); replay the EMA up to
    # the epoch the averaged run kept
    steps_per_epoch = len(iterates) // 3
    ema, result = _run(0.9)
    kept = iterates[: result.best_epoch * steps_per_epoch]
    avg = kept[0].clone()
    for n, p in enumerate(kept[1:], start=1):
        d = min(0.9, (1.0 + n) / (10.0 + n))
        avg = avg + (p - avg) * (1 - d)
    got = torch.cat([p.detach().ravel() for p in ema.parameters()])
    torch.testing.assert_close(got, avg, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, kept[-1])  # not simply the last iterate
    assert result.best_score > -0.6 and raw_result.best_score > -0.6  # both learned the planted rule


def test_averaged_weights_get_their_own_batch_norm_statistics():
    """Dice switches where its batch norm's running mean lies: the averaged weights must
    carry statistics of their own activations, not the live iterate's."""
    x, y = _problem()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), Dice(8), torch.nn.Linear(8, 1))

    def epoch_steps(r: np.random.Generator) -> list[np.ndarray]:
        perm = r.permutation(len(x))
        return [perm[s : s + 32] for s in range(0, len(perm), 32)]

    def step_loss(net: torch.nn.Module, idx: np.ndarray) -> torch.Tensor:
        i = torch.from_numpy(idx)
        return torch.nn.functional.binary_cross_entropy_with_logits(net(x[i]).squeeze(-1), y[i])

    def validate(net: torch.nn.Module) -> float:
        return -float(torch.nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(-1), y))

    cfg = TrainConfig(epochs=2, learning_rate=0.05, eval_every=1, patience=5, ema_decay=0.99, progress=False)
    train(model, epoch_steps, step_loss, cfg, seed=0, validate=validate)
    with torch.no_grad():
        own = model[0](x)  # the kept (averaged) weights' pre-activations over the whole data
    torch.testing.assert_close(model[1].norm.running_mean, own.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model[1].norm.running_var, own.var(0), rtol=0.1, atol=1e-3)
