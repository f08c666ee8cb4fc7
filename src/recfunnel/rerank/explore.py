"""Explorers: bandits that give a capped share of slots to fresh or rarely shown items.

Both expose the same small interface: `probs(arms, contexts)` is the explorer's action
distribution over the offered arms (it sums to 1, so every choice has a propensity to log),
`choose` samples from exactly that distribution, and `update` learns from outcomes.

- `ThompsonExplorer`: Beta-Bernoulli Thompson sampling per item. The propensity of "arm a
  wins the posterior draw" has no closed form, so it is estimated from `draws` posterior
  samples and the choice is sampled from that estimate: the logged propensity is then the
  true probability of the choice actually made.
- `LinUCBExplorer`: disjoint LinUCB (Li et al. 2010), one ridge model per arm, with an
  epsilon share of uniform choices so every arm keeps a non-zero propensity (a
  deterministic policy's logs cannot be evaluated off-policy).

State is plain arrays (saved as .npy), grown when new items appear.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recfunnel.persist import load_state, save_state


class _ExposureCounting:
    """Served counts per arm, shared by every explorer (what "low exposure" means)."""

    exposures: np.ndarray

    def ensure(self, n_arms: int) -> None:  # pragma: no cover - each explorer grows its own state
        raise NotImplementedError

    def record_served(self, arms: np.ndarray) -> None:
        arms = np.asarray(arms, dtype=np.int64)
        if len(arms):
            self.ensure(int(arms.max()) + 1)
            np.add.at(self.exposures, arms, 1)


class ThompsonExplorer(_ExposureCounting):
    name = "thompson"

    def __init__(self, n_arms: int = 0, prior_alpha: float = 1.0, prior_beta: float = 1.0, draws: int = 256) -> None:
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.draws = draws
        self.alpha = np.full(n_arms, prior_alpha, dtype=np.float64)
        self.beta = np.full(n_arms, prior_beta, dtype=np.float64)
        self.exposures = np.zeros(n_arms, dtype=np.int64)

    def ensure(self, n_arms: int) -> None:
        """Grow the state to at least `n_arms` arms (new items start at the prior)."""
        extra = n_arms - len(self.alpha)
        if extra > 0:
            self.alpha = np.concatenate([self.alpha, np.full(extra, self.prior_alpha)])
            self.beta = np.concatenate([self.beta, np.full(extra, self.prior_beta)])
            self.exposures = np.concatenate([self.exposures, np.zeros(extra, dtype=np.int64)])

    def probs(self, arms: np.ndarray, rng: np.random.Generator, contexts: np.ndarray | None = None) -> np.ndarray:
        """P(each arm has the largest posterior draw), estimated from `draws` samples."""
        arms = np.asarray(arms, dtype=np.int64)
        if len(arms) == 0:
            return np.empty(0)
        self.ensure(int(arms.max()) + 1)
        theta = rng.beta(self.alpha[arms], self.beta[arms], size=(self.draws, len(arms)))
        wins = np.bincount(theta.argmax(axis=1), minlength=len(arms))
        return wins / self.draws

    def probs_batch(self, n_rows: int, rng: np.random.Generator) -> np.ndarray:
        """(n_rows, n_arms) action distributions for many rows under the current posterior."""
        k = len(self.alpha)
        theta = rng.beta(self.alpha, self.beta, size=(n_rows, self.draws, k))
        winner = theta.argmax(axis=2)
        out = np.zeros((n_rows, k))
        np.add.at(out, (np.repeat(np.arange(n_rows), self.draws), winner.ravel()), 1.0)
        return out / self.draws

    def choose(self, arms: np.ndarray, rng: np.random.Generator, contexts: np.ndarray | None = None) -> tuple[int, float]:
        """Index into `arms` of the chosen arm and its propensity."""
        p = self.probs(arms, rng, contexts)
        j = int(rng.choice(len(p), p=p))
        return j, float(p[j])

    def update(self, arms: np.ndarray, rewards: np.ndarray, contexts: np.ndarray | None = None) -> None:
        """One Bernoulli trial per (arm, reward in {0, 1})."""
        arms = np.asarray(arms, dtype=np.int64)
        r = np.asarray(rewards, dtype=np.float64)
        if len(arms) == 0:
            return
        self.ensure(int(arms.max()) + 1)
        np.add.at(self.alpha, arms, r)
        np.add.at(self.beta, arms, 1.0 - r)

    def state(self) -> dict[str, np.ndarray]:
        return {"alpha": self.alpha, "beta": self.beta, "exposures": self.exposures}

    def set_state(self, s: dict[str, np.ndarray]) -> None:
        self.alpha, self.beta, self.exposures = s["alpha"], s["beta"], s["exposures"]


class LinUCBExplorer(_ExposureCounting):
    name = "linucb"

    def __init__(self, n_arms: int = 0, dim: int = 2, alpha: float = 1.0, epsilon: float = 0.05, reg: float = 1.0) -> None:
        self.dim = dim
        self.alpha = alpha
        self.epsilon = epsilon
        self.reg = reg
        self.a_inv = np.repeat(np.eye(dim)[None] / reg, n_arms, axis=0)
        self.b = np.zeros((n_arms, dim))
        self.exposures = np.zeros(n_arms, dtype=np.int64)

    def ensure(self, n_arms: int) -> None:
        extra = n_arms - len(self.b)
        if extra > 0:
            self.a_inv = np.concatenate([self.a_inv, np.repeat(np.eye(self.dim)[None] / self.reg, extra, axis=0)])
            self.b = np.concatenate([self.b, np.zeros((extra, self.dim))])
            self.exposures = np.concatenate([self.exposures, np.zeros(extra, dtype=np.int64)])

    def ucb(self, arms: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """Upper confidence bound x'theta_a + alpha sqrt(x' A_a^-1 x) per offered arm."""
        arms = np.asarray(arms, dtype=np.int64)
        self.ensure(int(arms.max()) + 1 if len(arms) else 0)
        x = np.asarray(contexts, dtype=np.float64).reshape(len(arms), self.dim)
        a_inv = self.a_inv[arms]
        theta = np.einsum("kij,kj->ki", a_inv, self.b[arms])
        width = np.sqrt(np.maximum(np.einsum("ki,kij,kj->k", x, a_inv, x), 0.0))
        return np.einsum("ki,ki->k", x, theta) + self.alpha * width

    def probs(self, arms: np.ndarray, rng: np.random.Generator | None = None, contexts: np.ndarray | None = None) -> np.ndarray:
        """Epsilon-greedy over the UCB: (1 - eps) split over the best arms, eps uniform."""
        k = len(arms)
        if k == 0:
            return np.empty(0)
        if contexts is None:
            contexts = np.ones((k, self.dim))
        u = self.ucb(arms, contexts)
        best = np.isclose(u, u.max(), rtol=0, atol=1e-12)
        return (1.0 - self.epsilon) * best / best.sum() + self.epsilon / k

    def choose(self, arms: np.ndarray, rng: np.random.Generator, contexts: np.ndarray | None = None) -> tuple[int, float]:
        p = self.probs(arms, rng, contexts)
        j = int(rng.choice(len(p), p=p))
        return j, float(p[j])

    def update(self, arms: np.ndarray, rewards: np.ndarray, contexts: np.ndarray | None = None) -> None:
        """Sherman-Morrison update of A_a^-1 and b_a for each (arm, reward, context)."""
        arms = np.asarray(arms, dtype=np.int64)
        if len(arms) == 0:
            return
        self.ensure(int(arms.max()) + 1)
        x_all = np.ones((len(arms), self.dim)) if contexts is None else np.asarray(contexts, dtype=np.float64)
        for a, r, x in zip(arms, np.asarray(rewards, dtype=np.float64), x_all):
            ax = self.a_inv[a] @ x
            self.a_inv[a] -= np.outer(ax, ax) / (1.0 + x @ ax)
            self.b[a] += r * x

    def state(self) -> dict[str, np.ndarray]:
        return {"a_inv": self.a_inv, "b": self.b, "exposures": self.exposures}

    def set_state(self, s: dict[str, np.ndarray]) -> None:
        self.a_inv, self.b, self.exposures = s["a_inv"], s["b"], s["exposures"]


Explorer = ThompsonExplorer | LinUCBExplorer


def make_explorer(cfg, n_arms: int) -> Explorer:  # noqa: ANN001 - ExploreConfig
    if cfg.method == "linucb":
        return LinUCBExplorer(n_arms, dim=2, alpha=cfg.ucb_alpha, epsilon=cfg.epsilon)
    return ThompsonExplorer(n_arms, cfg.prior_alpha, cfg.prior_beta, cfg.draws)


def save_explorer(explorer: Explorer, directory: str | Path) -> None:
    save_state(directory, explorer.state())


def load_explorer(explorer: Explorer, directory: str | Path) -> Explorer:
    if Path(directory).exists():
        explorer.set_state(load_state(directory))
    return explorer


def place(
    order: list[int],
    eligible: list[int],
    slots: list[int],
    n: int,
    choose,  # noqa: ANN001 - (offered rows) -> (index, propensity)
) -> tuple[list[int], dict[int, float]]:
    """Insert explored rows at `slots` (0-based, ascending) of one query's `order`.

    `eligible` are rows outside the top n the explorer may offer; each slot takes one via
    `choose`, which returns its propensity (conditional on the earlier slots' picks).
    Exploit rows keep their relative order and shift down; the top n shrinks by exactly
    the number of explored slots, which is fixed per request, so the exploit rows that are
    shown are shown with probability 1.
    """
    offered = list(eligible)
    skip = set(offered)
    base = [r for r in order if r not in skip]
    props: dict[int, float] = {}
    picks: list[tuple[int, int]] = []
    for s in slots:
        if not offered or s >= n:
            break
        j, p = choose(offered)
        r = offered.pop(j)
        props[r] = p
        picks.append((s, r))
    out = list(base)
    for s, r in picks:
        out.insert(min(s, len(out)), r)
    out += offered  # the ones not picked, after everything
    return out, props
