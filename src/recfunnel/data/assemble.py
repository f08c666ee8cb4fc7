"""From validated raw-id frames to a `Dataset`: one place that builds the id maps.

Every loader ends here, so that all formats agree on how indices are assigned: users in
the order of the users file, then any further user in order of first appearance in the
events; items likewise from the catalog, then the events. Item ids that occur in events
but not in the catalog are kept (they get empty attributes) — dropping them would silently
remove interactions.
"""

from __future__ import annotations

import polars as pl

from recfunnel.data.dataset import Dataset
from recfunnel.data.idmap import IdMap
from recfunnel.data.validation import LoadReport


def build_idmap(*columns: pl.Series | None) -> IdMap:
    """Distinct raw ids over `columns`, in order of first appearance."""
    parts = [c.cast(pl.Utf8).rename("id") for c in columns if c is not None and len(c)]
    if not parts:
        return IdMap()
    return IdMap.from_unique(pl.concat(parts).drop_nulls().unique(maintain_order=True).to_list())


def to_index(raw: pl.Series, ids: IdMap) -> pl.Series:
    """Vectorised raw-id -> index for ids known to be in `ids`."""
    keys = ids.raw_ids
    return raw.cast(pl.Utf8).replace_strict(keys, list(range(len(keys))), return_dtype=pl.Int32)


def assemble(
    name: str,
    events: pl.DataFrame,
    items: pl.DataFrame | None,
    users: pl.DataFrame | None,
    report: LoadReport,
    ordinal_time: bool = False,
) -> Dataset:
    """Build the Dataset from raw-id frames.

    `events`: `user`, `item` (raw ids, str), `ts`, `event`, `value`, `pos`.
    `items`: `item` (raw id) plus any of title/categories/price/created and extra columns.
    `users`: `user` (raw id) plus attribute columns.
    """
    user_ids = build_idmap(users["user"] if users is not None else None, events["user"])
    item_ids = build_idmap(items["item"] if items is not None else None, events["item"])
    events = events.with_columns(
        user=to_index(events["user"], user_ids),
        item=to_index(events["item"], item_ids),
    )
    if items is not None:
        items = items.unique("item", keep="first", maintain_order=True)
        items = items.with_columns(item=to_index(items["item"], item_ids))
    if users is not None:
        users = users.unique("user", keep="first", maintain_order=True)
        users = users.with_columns(user=to_index(users["user"], user_ids))
    return Dataset.build(
        name=name,
        events=events,
        items=items,
        users=users,
        user_ids=user_ids,
        item_ids=item_ids,
        ordinal_time=ordinal_time,
        report=report,
    )
