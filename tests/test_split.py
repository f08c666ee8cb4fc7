"""leave_last_out: the protocol's split, on a hand-made table and on ML-100K."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recfunnel.data import leave_last_out, load_movielens_100k, load_table

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

EVENTS = (
    "user,item,timestamp\n"
    "a,i1,100\n"
    "a,i2,200\n"
    "a,i3,200\n"  # tie with i2: later in the file, so i3 is a's last
    "b,i1,50\n"  # b has one interaction: not a test user
    "c,i4,10\n"
    "c,i1,5\n"  # file order is not time order: c's last is i4 (t=10)
    "d,i6,300\n"
    "d,i5,300\n"  # tie the other way round: i5 is d's last
)


@pytest.fixture()
def tiny(tmp_path: Path):
    (tmp_path / "events.csv").write_text(EVENTS)
    return load_table(tmp_path)


def raw(ds, users, items):
    return list(zip(ds.user_ids.raws(users), ds.item_ids.raws(items)))


def test_last_item_is_held_out(tiny) -> None:
    split = leave_last_out(tiny)
    assert raw(tiny, split.users, split.items) == [("a", "i3"), ("c", "i4"), ("d", "i5")]
    assert split.ts.tolist() == [200, 10, 300]
    assert len(split) == 3
    assert split.fit.n_events == tiny.n_events - 3


def test_fit_never_holds_the_test_event(tiny) -> None:
    split = leave_last_out(tiny)
    fit = split.fit
    for u, i in zip(split.users, split.items):
        items, ts = fit.history(int(u))
        assert int(i) not in items.tolist()
    fit_pairs = raw(fit, fit.user, fit.item)
    assert sorted(fit_pairs) == [("a", "i1"), ("a", "i2"), ("b", "i1"), ("c", "i1"), ("d", "i6")]


def test_single_interaction_users_stay_in_fit(tiny) -> None:
    split = leave_last_out(tiny)
    b = tiny.user_ids.get("b")
    assert b not in split.users.tolist()
    assert split.fit.history(b)[0].tolist() == [tiny.item_ids.get("i1")]


def test_validation_is_the_same_split_of_fit(tiny) -> None:
    val = leave_last_out(leave_last_out(tiny).fit)
    assert raw(tiny, val.users, val.items) == [("a", "i2")]


def test_ml100k_split() -> None:
    if not (SHARED / "ml-100k").is_dir():
        pytest.skip("shared data folder absent")
    ds = load_movielens_100k(SHARED / "ml-100k")
    split = leave_last_out(ds)
    assert len(split) == 943
    assert split.fit.n_events == 100_000 - 943
    # The held-out event is each user's latest; nothing in fit is later.
    last_fit_ts = np.maximum.reduceat(split.fit.ts, split.fit.user_indptr[:-1])
    assert np.all(last_fit_ts <= split.ts)
    # ML-100K has no repeated (user, item): no test item sits in its user's fit data.
    assert split.fit.user_item[split.users, split.items].sum() == 0


def test_hold_out_steps_respects_the_share_cap(tiny) -> None:
    """At most `max_share` of a user's events (at least one) are held out, latest first."""
    from recfunnel.data.split import hold_out_steps

    full = hold_out_steps(tiny, 2)
    capped = hold_out_steps(tiny, 2, max_share=0.34)  # a: 3 events -> 1 step; c, d: 2 -> 1
    assert len(full.users) == 4  # a gives 2, c and d 1 each (one event always stays)
    assert sorted(tiny.user_ids.raws(capped.users)) == ["a", "c", "d"]
    last = dict(zip(tiny.user_ids.raws(capped.users), tiny.item_ids.raws(capped.items)))
    assert last == {"a": "i3", "c": "i4", "d": "i5"}
    assert capped.fit.n_events == tiny.n_events - 3
