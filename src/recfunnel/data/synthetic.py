"""A synthetic marketplace with planted structure that tests (and the demo) can rely on.

Real data sets say little about *why* a model wins; here the causes are known, so a test
can check that a component finds what was planted:

- popularity: item weights follow a power law (Zipf with `popularity_exponent`);
- content: each item has 1-2 categories; each user 1-3 favourite categories, and a share
  `taste_concentration` of their events come from them;
- sessions: bursts of events minutes apart, separated by gaps of more than an hour;
- sequence: every item has a fixed successor (mostly in its own category); inside a
  session the next event follows it with probability `p_follow_sequence`;
- drift: a user's weights over their favourites move from a start mix to an end mix over
  the timeline, and recently released items get a boost that fades (hot items);
- release: items appear over time, and no item is consumed before its `created` time.

`generate_with_truth` returns the `SyntheticTruth` (favourites, successors, ...) next to
the Dataset. Everything is drawn from one seeded numpy Generator: same config, same data.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from recfunnel.data.assemble import assemble
from recfunnel.data.dataset import Dataset
from recfunnel.data.validation import LoadReport

DAY = 86_400
HOUR = 3_600
CATEGORY_NAMES = [
    "books", "music", "games", "garden", "kitchen", "sports", "toys", "beauty", "travel",
    "fashion", "tech", "film", "pets", "health", "auto", "office", "baby", "art", "food", "tools",
]
AGE_GROUPS = ["18-24", "25-34", "35-44", "45-54", "55+"]
GENDERS = ["F", "M"]


class SyntheticConfig(BaseModel):
    """Size and strength of each planted effect. Defaults: small and fast (< 1 s)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "synthetic"
    n_users: int = Field(500, ge=1)
    n_items: int = Field(1000, ge=2)
    n_categories: int = Field(12, ge=1)
    events_per_user: float = Field(30.0, gt=0)  # mean; the count is over-dispersed
    min_events_per_user: int = Field(3, ge=1)
    popularity_exponent: float = Field(1.2, ge=0)  # weight of the r-th item ~ r^-exponent
    taste_concentration: float = Field(0.85, ge=0, le=1)  # P(event from a favourite category)
    p_second_category: float = Field(0.4, ge=0, le=1)
    session_length: float = Field(5.0, ge=1)  # mean events per session
    p_follow_sequence: float = Field(0.4, ge=0, le=1)  # P(next event = successor of the last)
    p_successor_same_category: float = Field(0.8, ge=0, le=1)
    drift: float = Field(0.5, ge=0, le=1)  # how far tastes move and how hot new items are
    freshness_boost: float = Field(3.0, ge=0)  # a just-released item is (1 + drift*boost)x likelier
    freshness_days: float = Field(14.0, gt=0)  # e-folding time of that boost
    initial_catalog_share: float = Field(0.6, ge=0, le=1)  # items released before start_time
    start_time: int = 1_600_000_000  # unix seconds
    duration_days: float = Field(180.0, gt=0)
    seed: int = 0


@dataclass
class SyntheticTruth:
    """What was planted, indexed like the Dataset (user/item/category indices)."""

    category_names: list[str]
    item_categories: list[list[int]]  # category indices per item (first = primary)
    item_popularity: np.ndarray  # float64 base weights, sum 1
    item_created: np.ndarray  # int64 release time
    successor: np.ndarray  # int32: item -> its planted next item
    favourite_categories: list[list[int]]  # per user
    favourite_weights_start: list[np.ndarray]  # per user, over favourite_categories
    favourite_weights_end: list[np.ndarray]
    followed: np.ndarray  # bool per row of dataset.events: the item was a successor step


class _Uniforms:
    """Scalar uniforms from a seeded Generator in blocks: Python-speed draws in the loop."""

    def __init__(self, rng: np.random.Generator, block: int = 65_536) -> None:
        self._rng = rng
        self._block = block
        self._buf: list[float] = []
        self._i = 0

    def __call__(self) -> float:
        if self._i == len(self._buf):
            self._buf = self._rng.random(self._block).tolist()
            self._i = 0
        self._i += 1
        return self._buf[self._i - 1]


@dataclass
class _Catalog:
    cats: list[list[int]]
    popularity: np.ndarray
    created: np.ndarray
    successor: np.ndarray
    price: np.ndarray
    members: list[list[int]]  # category -> items
    cum: list[list[float]]  # category -> cumulative popularity of its members
    all_cum: list[float]


def _category_names(n: int) -> list[str]:
    base = CATEGORY_NAMES
    return [base[k % len(base)] + (f"-{k // len(base)}" if k >= len(base) else "") for k in range(n)]


def _make_catalog(cfg: SyntheticConfig, rng: np.random.Generator) -> _Catalog:
    n, c = cfg.n_items, cfg.n_categories
    # Every category gets at least one item when there are enough items.
    base = np.arange(min(n, c))
    primary = rng.permutation(np.concatenate([base, rng.integers(0, c, size=n - len(base))]))
    second = rng.random(n) < cfg.p_second_category
    other = (primary + rng.integers(1, max(c, 2), size=n)) % c
    cats = [[int(p)] + ([int(o)] if s and c > 1 else []) for p, s, o in zip(primary, second, other)]

    rank = rng.permutation(n)
    popularity = (rank + 1.0) ** -cfg.popularity_exponent
    popularity /= popularity.sum()

    start = cfg.start_time
    late = rng.random(n) >= cfg.initial_catalog_share
    created = np.where(
        late,
        start + rng.uniform(0, 0.9 * cfg.duration_days * DAY, size=n),
        start - rng.uniform(0, 365 * DAY, size=n),
    ).astype(np.int64)
    price = np.round(np.exp(rng.normal(3.0, 0.8, size=n)), 2)

    members: list[list[int]] = [[] for _ in range(c)]
    for i, cs in enumerate(cats):
        for k in cs:
            members[k].append(i)
    successor = _successors(cfg, rng, primary, members)
    pop = popularity.tolist()
    return _Catalog(
        cats=cats,
        popularity=popularity,
        created=created,
        successor=successor,
        price=price,
        members=members,
        cum=[list(accumulate(pop[i] for i in m)) for m in members],
        all_cum=list(accumulate(pop)),
    )


def _successors(
    cfg: SyntheticConfig, rng: np.random.Generator, primary: np.ndarray, members: list[list[int]]
) -> np.ndarray:
    """A fixed next item per item: in the same primary category with p_successor_same_category."""
    n = cfg.n_items
    same = rng.random(n) < cfg.p_successor_same_category
    pick = rng.random(n)
    succ = np.empty(n, dtype=np.int32)
    for i in range(n):
        pool = [j for j in members[primary[i]] if j != i] if same[i] else []
        if pool:
            succ[i] = pool[int(pick[i] * len(pool))]
        else:
            j = int(pick[i] * (n - 1))
            succ[i] = j + (j >= i)  # any other item
    return succ


@dataclass
class _Users:
    favourites: list[list[int]]
    w_start: list[np.ndarray]
    w_end: list[np.ndarray]
    age_group: list[str]
    gender: list[str]
    n_events: np.ndarray
    first_time: np.ndarray


def _make_users(cfg: SyntheticConfig, rng: np.random.Generator) -> _Users:
    n, c = cfg.n_users, cfg.n_categories
    favourites, w_start, w_end = [], [], []
    for _ in range(n):
        k = int(rng.integers(1, min(3, c) + 1))
        favourites.append([int(x) for x in rng.choice(c, size=k, replace=False)])
        w_start.append(rng.dirichlet(np.full(k, 2.0)))
        w_end.append(rng.dirichlet(np.full(k, 2.0)))
    activity = rng.gamma(2.0, cfg.events_per_user / 2.0, size=n)
    n_events = np.maximum(rng.poisson(activity), cfg.min_events_per_user)
    first_time = cfg.start_time + rng.uniform(0, 0.5 * cfg.duration_days * DAY, size=n)
    return _Users(
        favourites=favourites,
        w_start=w_start,
        w_end=w_end,
        age_group=[AGE_GROUPS[i] for i in rng.integers(0, len(AGE_GROUPS), size=n)],
        gender=[GENDERS[i] for i in rng.integers(0, len(GENDERS), size=n)],
        n_events=n_events,
        first_time=first_time.astype(np.int64),
    )


def _session_times(cfg: SyntheticConfig, rng: np.random.Generator, first: int, n: int) -> list[int]:
    """n event times: sessions minutes apart inside, more than an hour apart between."""
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(1 + int(rng.poisson(cfg.session_length - 1)))
    sizes[-1] -= sum(sizes) - n
    end = cfg.start_time + int(cfg.duration_days * DAY)
    mean_gap = max((end - first) / max(len(sizes), 1), 2 * HOUR)
    times: list[int] = []
    t = float(first)
    for s, size in enumerate(sizes):
        if s:
            t += 2 * HOUR + rng.exponential(mean_gap)  # > 1 hour: a new session
        for e in range(size):
            if e:
                t += min(30 + rng.exponential(180.0), 1800.0)  # minutes apart
            times.append(int(t))
    return times


class _Sampler:
    """Draws the item of one event; rejection sampling keeps it O(1) per draw."""

    def __init__(self, cfg: SyntheticConfig, cat: _Catalog, uni: _Uniforms) -> None:
        self.cfg, self.cat, self.u = cfg, cat, uni
        self.created = cat.created.tolist()
        self.successor = cat.successor.tolist()
        self.tau = cfg.freshness_days * DAY
        self.boost = cfg.drift * cfg.freshness_boost
        self.all_items = list(range(cfg.n_items))

    def _ok(self, i: int, t: int, seen: set[int]) -> bool:
        age = t - self.created[i]
        if age < 0 or i in seen:
            return False
        # Hot items: acceptance falls from 1 to 1/(1+boost) as the item ages.
        return self.u() * (1 + self.boost) < 1 + self.boost * math.exp(-age / self.tau)

    def _from(self, items: list[int], cum: list[float], t: int, seen: set[int]) -> int | None:
        total = cum[-1]
        for _ in range(40):
            i = items[min(bisect_right(cum, self.u() * total), len(items) - 1)]
            if self._ok(i, t, seen):
                return i
        return None

    def next_item(self, t: int, prev: int | None, weights: list[tuple[int, float]], seen: set[int]) -> tuple[int | None, bool]:
        u = self.u
        if prev is not None and u() < self.cfg.p_follow_sequence:
            s = self.successor[prev]
            if self.created[s] <= t and s not in seen:
                return s, True
        item = None
        if u() < self.cfg.taste_concentration:
            r, k = u(), weights[-1][0]
            for cat_k, cum_w in weights:
                if r < cum_w:
                    k = cat_k
                    break
        else:
            k = int(u() * self.cfg.n_categories)
        if self.cat.members[k]:
            item = self._from(self.cat.members[k], self.cat.cum[k], t, seen)
        if item is None:
            item = self._from(self.all_items, self.cat.all_cum, t, seen)
        if item is None:
            avail = [i for i in self.all_items if self.created[i] <= t and i not in seen]
            item = avail[int(u() * len(avail))] if avail else None
        return item, False


def _user_events(
    cfg: SyntheticConfig, sampler: _Sampler, cat: _Catalog, users: _Users, u: int, times: list[int]
) -> list[tuple[int, int, float, bool]]:
    """(time, item, rating, followed) of user u's events, in time order."""
    fav = users.favourites[u]
    fav_set = set(fav)
    w0, w1 = users.w_start[u].tolist(), users.w_end[u].tolist()
    span = cfg.duration_days * DAY
    seen: set[int] = set()
    prev: int | None = None
    last_t: int | None = None
    out = []
    for t in times:
        if last_t is not None and t - last_t > HOUR:
            prev = None  # the sequence effect lives inside a session
        last_t = t
        phase = min(max((t - cfg.start_time) / span, 0.0), 1.0) * cfg.drift
        w = [(1 - phase) * a + phase * b for a, b in zip(w0, w1)]
        total = sum(w)
        weights = list(zip(fav, accumulate(x / total for x in w)))
        item, followed = sampler.next_item(t, prev, weights, seen)
        if item is None:
            continue
        seen.add(item)
        liked = not fav_set.isdisjoint(cat.cats[item])
        # Ratings: favourites are liked more (value >= 4 is the "like" label).
        value = float(min(5, max(1, 2 + liked + int(sampler.u() * 3))))
        out.append((t, item, value, followed))
        prev = item
    return out


def generate_with_truth(cfg: SyntheticConfig | None = None) -> tuple[Dataset, SyntheticTruth]:
    """The Dataset and what was planted in it (see the module docstring)."""
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    cat = _make_catalog(cfg, rng)
    users = _make_users(cfg, rng)
    sampler = _Sampler(cfg, cat, _Uniforms(rng))
    ev_user: list[int] = []
    ev_item: list[int] = []
    ev_ts: list[int] = []
    ev_value: list[float] = []
    ev_followed: list[bool] = []
    for u in range(cfg.n_users):
        times = _session_times(cfg, rng, int(users.first_time[u]), int(users.n_events[u]))
        for t, item, value, followed in _user_events(cfg, sampler, cat, users, u, times):
            ev_user.append(u)
            ev_item.append(item)
            ev_ts.append(t)
            ev_value.append(value)
            ev_followed.append(followed)

    names = _category_names(cfg.n_categories)
    events = pl.DataFrame(
        {
            "user": [f"u{u + 1}" for u in ev_user],
            "item": [f"i{i + 1}" for i in ev_item],
            "ts": pl.Series(ev_ts, dtype=pl.Int64),
            "event": ["rating"] * len(ev_user),
            "value": ev_value,
            "pos": pl.int_range(0, len(ev_user), eager=True),
        }
    )
    items = pl.DataFrame(
        {
            "item": [f"i{i + 1}" for i in range(cfg.n_items)],
            "title": [f"{names[cs[0]].capitalize()} item {i + 1}" for i, cs in enumerate(cat.cats)],
            "categories": [[names[k] for k in cs] for cs in cat.cats],
            "price": cat.price,
            "created": cat.created,
        }
    )
    profile = pl.DataFrame(
        {"user": [f"u{u + 1}" for u in range(cfg.n_users)], "age_group": users.age_group, "gender": users.gender}
    )
    ds = assemble(cfg.name, events, items, profile, LoadReport())
    followed = np.asarray(ev_followed, dtype=bool)[ds.events["pos"].to_numpy()]
    truth = SyntheticTruth(
        category_names=names,
        item_categories=cat.cats,
        item_popularity=cat.popularity,
        item_created=cat.created,
        successor=cat.successor,
        favourite_categories=users.favourites,
        favourite_weights_start=users.w_start,
        favourite_weights_end=users.w_end,
        followed=followed,
    )
    return ds, truth


def generate(cfg: SyntheticConfig | None = None) -> Dataset:
    """The synthetic Dataset alone."""
    return generate_with_truth(cfg)[0]


def write_synthetic_files(cfg: SyntheticConfig | None, path: str | Path) -> Path:
    """Write events.csv, items.csv and users.csv that `load_table` reads with its default mapping.

    The demo uses it when no real data is at hand, so the whole CSV path is exercised.
    """
    ds = generate(cfg)
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    users, items = ds.user_ids.raw_ids, ds.item_ids.raw_ids
    # File order = generation order (pos), so a reload reproduces pos and the id order.
    ev = ds.events.sort("pos")
    pl.DataFrame(
        {
            "user": [users[u] for u in ev["user"].to_list()],
            "item": [items[i] for i in ev["item"].to_list()],
            "timestamp": ev["ts"],
            "event": ev["event"],
            "value": ev["value"],
        }
    ).write_csv(root / "events.csv")
    it = ds.items
    pl.DataFrame(
        {
            "item": items,
            "title": it["title"],
            "categories": it["categories"].list.join("|"),
            "price": it["price"],
            "created": it["created"],
        }
    ).write_csv(root / "items.csv")
    ds.users.with_columns(user=pl.Series([users[u] for u in ds.users["user"].to_list()])).write_csv(root / "users.csv")
    return root
