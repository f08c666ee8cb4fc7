"""Point-in-time popularity never reads the request's own time or the future."""

from __future__ import annotations

import numpy as np
import polars as pl

from recfunnel.data.dataset import Dataset
from recfunnel.data.idmap import IdMap
from recfunnel.features.popularity import DecayedPopularity

DAY = 86400


def _ds(users, items, ts):
    ev = pl.DataFrame({"user": users, "item": items, "ts": ts})
    return Dataset.build("t", ev, None, None, IdMap(range(max(users) + 1)), IdMap(range(3)))


def test_future_event_changes_nothing_before_it():
    base = _ds([0, 1, 2], [0, 0, 1], [0, DAY, 2 * DAY])
    planted = _ds([0, 1, 2, 3], [0, 0, 1, 2], [0, DAY, 2 * DAY, 10 * DAY])
    times = np.array([DAY // 2, 3 * DAY, 10 * DAY])  # the last equals the planted event's time
    a = DecayedPopularity(7 * DAY, 3, DAY).fit(base).at(times)
    b = DecayedPopularity(7 * DAY, 3, DAY).fit(planted).at(times)
    np.testing.assert_allclose(a, b)
    after = DecayedPopularity(7 * DAY, 3, DAY).fit(planted).at(np.array([11 * DAY]))
    assert after[0, 2] > 0


def test_decay_follows_the_half_life():
    ds = _ds([0, 1], [0, 1], [0, 7 * DAY])
    pop = DecayedPopularity(7 * DAY, 3, DAY).fit(ds).at(np.array([8 * DAY]))
    np.testing.assert_allclose(pop[0, 0], 0.5 ** (8 / 7), rtol=1e-4)
    np.testing.assert_allclose(pop[0, 1], 0.5 ** (1 / 7), rtol=1e-4)


def test_order_only_data_weights_by_position_from_each_users_end():
    ev = pl.DataFrame({"user": [0, 0, 1], "item": [0, 1, 1], "ts": [0, 1, 0]})
    ds = Dataset.build("t", ev, None, None, IdMap([0, 1]), IdMap(range(3)), ordinal_time=True)
    pop = DecayedPopularity(7 * DAY, 1.0, DAY).fit(ds).at(np.array([0]))
    np.testing.assert_allclose(pop[0], [0.5, 2.0, 0.0])
