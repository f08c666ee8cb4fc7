"""The synthetic generator plants what it promises, deterministically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recfunnel.data import SyntheticConfig, generate, generate_with_truth, load_dataset
from recfunnel.data.synthetic import write_synthetic_files

HOUR = 3600


@pytest.fixture(scope="module")
def gen():
    return generate_with_truth(SyntheticConfig())


def test_deterministic_per_seed() -> None:
    small = dict(n_users=100, n_items=200)
    a, b = generate(SyntheticConfig(seed=7, **small)), generate(SyntheticConfig(seed=7, **small))
    assert a.events.equals(b.events) and a.items.equals(b.items) and a.users.equals(b.users)
    c = generate(SyntheticConfig(seed=8, **small))
    assert not a.events.equals(c.events)


def test_shape_and_attributes(gen) -> None:
    ds, truth = gen
    cfg = SyntheticConfig()
    assert (ds.n_users, ds.n_items) == (cfg.n_users, cfg.n_items)
    assert 0.8 * cfg.events_per_user < ds.n_events / ds.n_users < 1.3 * cfg.events_per_user
    assert all(1 <= len(c) <= 2 for c in ds.items["categories"].to_list())
    assert all(1 <= len(f) <= 3 for f in truth.favourite_categories)
    assert set(ds.users.columns) >= {"age_group", "gender"}
    assert ds.items["title"].str.len_chars().min() > 0
    assert ds.items["price"].min() > 0
    assert ds.items["created"].null_count() == 0
    # Items are released over time and never consumed before their release.
    assert np.all(ds.ts >= truth.item_created[ds.item])
    assert (truth.item_created > SyntheticConfig().start_time).mean() > 0.2
    # No repeats: a user meets an item once.
    assert ds.user_item.nnz == ds.n_events


def test_power_law_popularity(gen) -> None:
    ds, _ = gen
    counts = np.sort(np.bincount(ds.item, minlength=ds.n_items))[::-1]
    top = counts[: ds.n_items // 10].sum() / counts.sum()
    assert top > 0.35  # uniform would give 0.10
    assert counts[0] > 10 * np.median(counts)


def test_users_concentrate_on_favourites(gen) -> None:
    ds, truth = gen
    fav = [set(f) for f in truth.favourite_categories]
    cats = truth.item_categories
    in_fav = np.array([not fav[u].isdisjoint(cats[i]) for u, i in zip(ds.user, ds.item)])
    # Chance: the share of the catalog inside each user's favourites.
    chance = np.mean([np.mean([not f.isdisjoint(c) for c in cats]) for f in fav])
    assert in_fav.mean() > 0.65
    assert in_fav.mean() > 2.5 * chance


def test_successors_are_followed(gen) -> None:
    ds, truth = gen
    same_user = ds.user[1:] == ds.user[:-1]
    follows = (truth.successor[ds.item[:-1]] == ds.item[1:]) & same_user
    rate = follows.sum() / same_user.sum()
    assert rate > 50 / ds.n_items  # chance is about 1 / n_items
    assert truth.followed.sum() == pytest.approx(follows.sum(), rel=0.05)
    # Successors mostly share the item's primary category (p_successor_same_category=0.8).
    cats = truth.item_categories
    same_cat = np.mean([cats[i][0] in cats[s] for i, s in enumerate(truth.successor)])
    assert same_cat > 0.7
    assert np.all(truth.successor != np.arange(ds.n_items))


def test_sessions(gen) -> None:
    ds, _ = gen
    gaps = np.diff(ds.ts)[ds.user[1:] == ds.user[:-1]]
    assert np.all(gaps > 0)
    assert not np.any((gaps > 1800) & (gaps <= HOUR))  # inside: minutes; between: over an hour
    assert 0.5 < np.mean(gaps <= 1800) < 0.95
    assert np.median(gaps[gaps <= 1800]) < 600


def _taste_shift(cfg: SyntheticConfig, ds, truth) -> float:
    """Mean rise, early half -> late half, of the share of the favourite that gains most."""
    mid = cfg.start_time + cfg.duration_days * 86_400 / 2
    shifts = []
    for u in range(ds.n_users):
        fav = truth.favourite_categories[u]
        if len(fav) < 2:
            continue
        k = fav[int(np.argmax(truth.favourite_weights_end[u] - truth.favourite_weights_start[u]))]
        items, ts = ds.history(u)
        hits = [(k in truth.item_categories[i], t >= mid) for i, t in zip(items, ts)
                if not set(fav).isdisjoint(truth.item_categories[i])]
        early = [h for h, late in hits if not late]
        late = [h for h, late in hits if late]
        if len(early) >= 3 and len(late) >= 3:
            shifts.append(np.mean(late) - np.mean(early))
    return float(np.mean(shifts))


def _fresh_share(ds, truth) -> float:
    """Share of events on items released less than two weeks before."""
    return float(np.mean(ds.ts - truth.item_created[ds.item] < 14 * 86_400))


def test_drift(gen) -> None:
    still = SyntheticConfig(drift=0.0)
    moving = SyntheticConfig(drift=1.0)
    ds0, truth0 = generate_with_truth(still)
    ds1, truth1 = generate_with_truth(moving)
    # Tastes move toward each user's end mix ...
    assert _taste_shift(moving, ds1, truth1) > 0.05
    assert abs(_taste_shift(still, ds0, truth0)) < 0.03
    # ... and new items are hot.
    assert _fresh_share(ds1, truth1) > 1.5 * _fresh_share(ds0, truth0)


def test_csv_round_trip(tmp_path: Path, gen) -> None:
    ds, _ = gen
    write_synthetic_files(SyntheticConfig(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.csv", "items.csv", "users.csv"]
    back = load_dataset(tmp_path)
    assert (back.n_events, back.n_users, back.n_items) == (ds.n_events, ds.n_users, ds.n_items)
    assert back.report.n_dropped == 0
    assert back.events.equals(ds.events)
    assert back.items.equals(ds.items)
    assert back.users.equals(ds.users)
    assert back.user_ids.raw_ids == ds.user_ids.raw_ids
