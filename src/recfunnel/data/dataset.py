"""The validated tables every component trains on.

Events carry dense `user`/`item` indices (see `IdMap`), a timestamp, an event type, a
value (the rating, a play count, 1.0 for a click) and `pos`, the row's position in the
source so that ties in time keep file order. They are always sorted by (user, ts, pos):
a user's history is a contiguous, time-ordered slice.

Some sources carry only an order, not clock time (the S3-Rec sequence files): there
`ordinal_time` is True and `ts` is the position in the user's sequence. Components that
need clock time (hot windows, item age) fall back to order-based definitions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl
import scipy.sparse as sp

from recfunnel.data.idmap import IdMap
from recfunnel.data.validation import LoadReport

EVENT_SCHEMA = {
    "user": pl.Int32,
    "item": pl.Int32,
    "ts": pl.Int64,
    "event": pl.Utf8,
    "value": pl.Float32,
    "pos": pl.Int64,
}
ITEM_SCHEMA = {
    "item": pl.Int32,
    "title": pl.Utf8,
    "categories": pl.List(pl.Utf8),
    "price": pl.Float64,
    "created": pl.Int64,
}


@dataclass
class Dataset:
    name: str
    events: pl.DataFrame  # EVENT_SCHEMA, sorted by (user, ts, pos)
    items: pl.DataFrame  # ITEM_SCHEMA, one row per item index 0..n_items-1, in order
    users: pl.DataFrame  # "user" (Int32, 0..n_users-1 in order) + attribute columns
    user_ids: IdMap
    item_ids: IdMap
    ordinal_time: bool = False
    report: LoadReport = field(default_factory=LoadReport)

    # ---- construction -------------------------------------------------------------
    @classmethod
    def build(
        cls,
        name: str,
        events: pl.DataFrame,
        items: pl.DataFrame | None,
        users: pl.DataFrame | None,
        user_ids: IdMap,
        item_ids: IdMap,
        ordinal_time: bool = False,
        report: LoadReport | None = None,
    ) -> "Dataset":
        """Normalise dtypes, sort, and give every known id a row in its table.

        `items`/`users` may miss ids that occur in events (they get empty attributes) and
        may list ids that never occur in events (catalog items nobody touched yet).
        """
        for col, dtype in EVENT_SCHEMA.items():
            if col not in events.columns:
                default = {"event": "interaction", "value": 1.0}.get(col)
                if col == "pos":
                    events = events.with_row_index("pos")
                    continue
                if default is None:
                    raise ValueError(f"events table lacks column '{col}'")
                events = events.with_columns(pl.lit(default).alias(col))
        events = events.select([pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()])
        events = events.sort(["user", "ts", "pos"])
        return cls(
            name=name,
            events=events,
            items=_complete_items(items, len(item_ids)),
            users=_complete_users(users, len(user_ids)),
            user_ids=user_ids,
            item_ids=item_ids,
            ordinal_time=ordinal_time,
            report=report or LoadReport(),
        )

    def with_events(self, events: pl.DataFrame) -> "Dataset":
        """Same catalog, users and id maps, other events (used by splits)."""
        return Dataset(
            name=self.name,
            events=events,
            items=self.items,
            users=self.users,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            ordinal_time=self.ordinal_time,
            report=self.report,
        )

    # ---- sizes and numpy views --------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_events(self) -> int:
        return self.events.height

    @cached_property
    def user(self) -> np.ndarray:
        return self.events["user"].to_numpy()

    @cached_property
    def item(self) -> np.ndarray:
        return self.events["item"].to_numpy()

    @cached_property
    def ts(self) -> np.ndarray:
        return self.events["ts"].to_numpy()

    @cached_property
    def value(self) -> np.ndarray:
        return self.events["value"].to_numpy()

    @cached_property
    def user_indptr(self) -> np.ndarray:
        """CSR offsets: user u's events are rows user_indptr[u]:user_indptr[u+1]."""
        counts = np.bincount(self.user, minlength=self.n_users)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def history(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        """(items, timestamps) of user u, oldest first."""
        a, b = self.user_indptr[u], self.user_indptr[u + 1]
        return self.item[a:b], self.ts[a:b]

    @cached_property
    def user_item(self) -> sp.csr_matrix:
        """Binary users x items matrix of who touched what (repeats count once)."""
        m = sp.csr_matrix(
            (np.ones(self.n_events, dtype=np.float32), (self.user, self.item)),
            shape=(self.n_users, self.n_items),
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    @cached_property
    def item_user_count(self) -> np.ndarray:
        """Distinct users per item in these events."""
        return np.asarray(self.user_item.sum(axis=0)).ravel().astype(np.int64)

    @cached_property
    def category_ids(self) -> IdMap:
        cats = self.items["categories"].explode().drop_nulls().unique(maintain_order=True)
        return IdMap(cats.to_list())

    @cached_property
    def item_categories(self) -> sp.csr_matrix:
        """Binary items x categories matrix (genres, attributes, tags)."""
        cmap = self.category_ids
        rows, cols = [], []
        for i, cats in enumerate(self.items["categories"].to_list()):
            for c in cats or ():
                rows.append(i)
                cols.append(cmap.get(c))
        m = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)),
            shape=(self.n_items, len(cmap)),
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    @cached_property
    def time_range(self) -> tuple[int, int]:
        if self.n_events == 0:
            return (0, 0)
        return int(self.ts.min()), int(self.ts.max())

    def fingerprint(self) -> str:
        """Content hash of the events and catalog: the artifact says what it was built on."""
        h = hashlib.sha256()
        for col in ("user", "item", "ts"):
            h.update(np.ascontiguousarray(self.events[col].to_numpy()).tobytes())
        h.update(str(self.n_items).encode())
        h.update(str(self.n_users).encode())
        return h.hexdigest()[:16]

    def describe(self) -> str:
        lo, hi = self.time_range
        kind = "order only" if self.ordinal_time else f"ts {lo}..{hi}"
        return (
            f"{self.name}: {self.n_events:,} events, {self.n_users:,} users, "
            f"{self.n_items:,} items, {len(self.category_ids):,} categories, {kind}"
        )


def _complete_items(items: pl.DataFrame | None, n: int) -> pl.DataFrame:
    base = pl.DataFrame({"item": np.arange(n, dtype=np.int32)})
    if items is None or items.height == 0:
        items = pl.DataFrame(schema=ITEM_SCHEMA)
    for col, dtype in ITEM_SCHEMA.items():
        if col not in items.columns:
            items = items.with_columns(pl.lit(None, dtype=dtype).alias(col))
    extra = [c for c in items.columns if c not in ITEM_SCHEMA]
    items = items.select(
        [pl.col(c).cast(t) for c, t in ITEM_SCHEMA.items()] + [pl.col(c) for c in extra]
    ).unique("item", keep="first")
    out = base.join(items, on="item", how="left").sort("item")
    return out.with_columns(
        pl.col("title").fill_null(""),
        pl.col("categories").fill_null(pl.lit([], dtype=pl.List(pl.Utf8))),
    )


def _complete_users(users: pl.DataFrame | None, n: int) -> pl.DataFrame:
    base = pl.DataFrame({"user": np.arange(n, dtype=np.int32)})
    if users is None or users.height == 0:
        return base
    users = users.with_columns(pl.col("user").cast(pl.Int32)).unique("user", keep="first")
    return base.join(users, on="user", how="left").sort("user")
