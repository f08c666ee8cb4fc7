"""Off-policy estimators on simulated logs (where the truth is known) and the OBD helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recfunnel.rerank.ope import LoggedBandit, bootstrap, ctr_table, cross_fitted_q, estimate, mean_ci
from recfunnel.rerank.open_bandit import load_obd, logged_policy

K = 5
P_CLICK = np.array([[0.05, 0.10, 0.20, 0.02, 0.30], [0.25, 0.05, 0.05, 0.15, 0.01]])  # (context, action)
PI_B = np.array([[0.4, 0.3, 0.1, 0.1, 0.1], [0.1, 0.1, 0.2, 0.3, 0.3]])  # logging policy
PI_E = np.array([[0.0, 0.1, 0.2, 0.0, 0.7], [0.6, 0.0, 0.1, 0.3, 0.0]])  # evaluation policy
TRUE_VALUE = 0.5 * (PI_E * P_CLICK).sum(axis=1).sum()


def simulate(n: int, rng: np.random.Generator) -> tuple[LoggedBandit, np.ndarray, np.ndarray]:
    ctx = rng.integers(0, 2, size=n)
    u = rng.random(n)
    action = (u[:, None] > np.cumsum(PI_B[ctx], axis=1)).sum(axis=1)
    reward = (rng.random(n) < P_CLICK[ctx, action]).astype(float)
    return LoggedBandit(action, reward, PI_B[ctx, action]), PI_E[ctx], ctx


def test_estimators_are_unbiased_on_simulated_logs():
    rng = np.random.default_rng(0)
    reps = {"IPS": [], "SNIPS": [], "DR": [], "DM": []}
    wrong_q = np.full((1, K), 0.5)  # a badly wrong reward model: DR must still be unbiased
    for _ in range(300):
        logs, dist, _ = simulate(1000, rng)
        est = estimate(logs, dist, np.repeat(wrong_q, len(logs), axis=0))
        for k in reps:
            reps[k].append(est[k])
    for k in ("IPS", "DR"):
        m, se = np.mean(reps[k]), np.std(reps[k]) / np.sqrt(len(reps[k]))
        assert abs(m - TRUE_VALUE) < 3.5 * se + 1e-4, (k, m, TRUE_VALUE, se)
    assert abs(np.mean(reps["SNIPS"]) - TRUE_VALUE) < 0.005  # consistent: tiny bias at n = 1000
    assert abs(np.mean(reps["DM"]) - TRUE_VALUE) > 0.1  # the wrong model alone is far off


def test_a_good_reward_model_lowers_dr_variance():
    rng = np.random.default_rng(1)
    ips, dr = [], []
    for _ in range(200):
        logs, dist, ctx = simulate(500, rng)
        est = estimate(logs, dist, P_CLICK[ctx])
        ips.append(est["IPS"])
        dr.append(est["DR"])
    assert np.std(dr) < 0.95 * np.std(ips)


def test_bootstrap_intervals_cover_the_truth_about_95_percent():
    rng = np.random.default_rng(2)
    hits = 0
    for rep in range(60):
        logs, dist, _ = simulate(400, rng)
        ci = bootstrap(logs, dist, n_boot=200, seed=rep)
        hits += ci["IPS"][0] <= TRUE_VALUE <= ci["IPS"][1]
        est = estimate(logs, dist)
        assert ci["IPS"][0] <= est["IPS"] <= ci["IPS"][1] and ci["SNIPS"][0] < ci["SNIPS"][1]
    assert 0.85 <= hits / 60 <= 1.0
    value, lo, hi = mean_ci(np.array([0.0] * 90 + [1.0] * 10), n_boot=500)
    assert value == 0.1 and lo < 0.1 < hi


def test_uniform_target_on_uniform_logs_is_the_logged_mean():
    rng = np.random.default_rng(3)
    n = 1000
    action = rng.integers(0, K, n)
    logs = LoggedBandit(action, (rng.random(n) < 0.1).astype(float), np.full(n, 1.0 / K))
    est = estimate(logs, np.full((n, K), 1.0 / K))
    assert est["IPS"] == pytest.approx(logs.reward.mean()) and est["SNIPS"] == pytest.approx(logs.reward.mean())


def test_reward_model_is_smoothed_and_cross_fitted():
    action = np.array([0, 0, 1, 1, 1, 1])
    pos = np.array([0, 0, 0, 0, 1, 1])
    reward = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    t = ctr_table(action, pos, reward, 2, 2, prior=2.0)
    assert t[0, 0] == pytest.approx((1 + 2 * 0.25) / (2 + 2))
    logs = LoggedBandit(np.tile(action, 20), np.tile(reward, 20), np.full(120, 0.5), np.tile(pos, 20))
    q = cross_fitted_q(logs, 2, 2, folds=4)
    flipped = LoggedBandit(logs.action, logs.reward.copy(), logs.pscore, logs.position)
    flipped.reward[0] = 1.0 - flipped.reward[0]
    q2 = cross_fitted_q(flipped, 2, 2, folds=4)
    assert q[0].tolist() == q2[0].tolist()  # a row's own reward never enters its prediction


def _write_obd(root: Path, policy: str, rows: list[tuple[str, int, int, int, float]], k: int) -> None:
    d = root / policy / "men"
    d.mkdir(parents=True)
    df = pl.DataFrame(
        {
            "": list(range(len(rows))),
            "timestamp": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "position": [r[2] for r in rows],
            "click": [r[3] for r in rows],
            "propensity_score": [r[4] for r in rows],
            "user_feature_0": ["a", "b"] * (len(rows) // 2),
            **{f"user-item_affinity_{j}": [0.0] * len(rows) for j in range(k)},
        }
    )
    df.write_csv(d / "men.csv")
    pl.DataFrame({"": list(range(k)), "item_id": list(range(k)), "item_feature_0": [0.0] * k}).write_csv(d / "item_context.csv")


def test_obd_loader_and_policy_reconstruction(tmp_path):
    day = "2019-11-24 0{h}:00:00.000000+00:00"
    # the logged policy shows item 0 with p = 0.8 and item 1 with p = 0.2 at position 1
    bts = [(day.format(h=h % 10), 0 if h % 5 else 1, 1, 0, 0.8 if h % 5 else 0.2) for h in range(20)]
    rnd = [(day.format(h=h % 10), h % 2, 1, int(h == 3), 0.5) for h in range(20)]
    _write_obd(tmp_path, "bts", bts, 2)
    _write_obd(tmp_path, "random", rnd, 2)
    r = load_obd(tmp_path, "random", "men")
    b = load_obd(tmp_path, "bts", "men")
    assert r.n_actions == 2 and r.position.max() == 0 and r.user.shape == (20, 1) and np.all(np.diff(r.t) >= 0)
    dist, check = logged_policy(b, r.t, r.position)
    assert np.allclose(dist.sum(axis=1), 1.0) and np.allclose(dist[0], [0.8, 0.2]) and check == pytest.approx(1.0)


def test_harmonic_mean_recovers_a_time_varying_policy():
    """Rows are drawn in proportion to their probability: the harmonic mean of the logged
    propensities estimates the item's mean probability over the period."""
    rng = np.random.default_rng(4)
    p_t = np.where(np.arange(20000) < 10000, 0.6, 0.2)  # item 0's probability drifts
    shown = rng.random(20000) < p_t
    est = shown.sum() / (1.0 / p_t[shown]).sum()
    assert est == pytest.approx(p_t.mean(), rel=0.03)


def test_real_open_bandit_logs(shared_data):
    root = shared_data / "open-bandit-dataset-small"
    if not root.exists():
        pytest.skip("no Open Bandit data")
    r = load_obd(root, "random", "men")
    b = load_obd(root, "bts", "men")
    assert len(r) == 10000 and r.n_actions == 34 and np.allclose(r.pscore, 1 / 34)
    dist, check = logged_policy(b, r.t, r.position)
    assert 0.95 < check < 1.2  # the reconstruction is nearly consistent before normalising
    est = estimate(r.bandit(), dist)
    truth, lo, hi = mean_ci(b.reward, n_boot=500)
    assert lo <= est["IPS"] <= hi
