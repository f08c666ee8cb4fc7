"""The re-rank stage: the single entry point `Funnel.run` calls after ranking.

`Reranker(config, catalog)(ranked, batch, n)` applies the filters, then the selectors in
their fixed order, and returns the top n per query with three explanation columns:

- `rank_before_rerank`: the row's position in the ranker's list;
- `rerank_notes`: a bitmask of the selectors that changed its position (see `notes`);
- `propensity`: probability of this item in this slot (1 for deterministic rules, the
  explorer's probability for explored slots), so served logs can be evaluated off-policy.

The counts of what every rule removed or moved go to the Trace (`trace.rules`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

import numpy as np

from recfunnel.candidates import Candidates
from recfunnel.query import NO_TIME, QueryBatch
from recfunnel.rerank import diversity as div
from recfunnel.rerank import filters as flt
from recfunnel.rerank import selectors as sel
from recfunnel.rerank.catalog import Catalog
from recfunnel.rerank.config import RerankConfig
from recfunnel.rerank.explore import Explorer, load_explorer, make_explorer, place, save_explorer
from recfunnel.rerank.notes import BIT, positions
from recfunnel.rerank.served_log import InMemoryServedLog, ServedLog


class Reranker:
    def __init__(
        self,
        config: RerankConfig,
        catalog: Catalog,
        item_ids=None,  # noqa: ANN001 - IdMap, for raw-id blacklists
        channel_names: Iterable[str] = (),
        served_log: ServedLog | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config  # read at every call: presets may change after fit
        self.catalog = catalog
        self.item_ids = item_ids
        self.channel_names = list(channel_names)
        self.served_log: ServedLog = served_log or InMemoryServedLog(config.served.max_per_user)
        self.explorer: Explorer | None = None
        self.rng = np.random.default_rng(seed)
        self.cats = sel.CategorySets(catalog.categories)
        self._added: set[int] = set()  # runtime blacklist (admin endpoint)
        self._removed: set[int] = set()
        self._blocked: np.ndarray | None = None
        self._blocked_key: tuple | None = None

    # ---- blacklist ------------------------------------------------------------------
    def update_blacklist(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> int:
        """Block / unblock raw item ids at runtime (on top of the config); returns how many were known."""
        known = 0
        for raws, into, other in ((add, self._added, self._removed), (remove, self._removed, self._added)):
            for i in self._indices(raws):
                into.add(i)
                other.discard(i)
                known += 1
        self._blocked = None
        return known

    def block_indices(self, items: np.ndarray) -> None:
        """Block item indices directly (no id map needed)."""
        self._added.update(int(i) for i in np.asarray(items).ravel() if i >= 0)
        self._blocked = None

    def blocked_items(self) -> np.ndarray:
        """Indices currently blocked: config list + file + runtime additions - runtime removals."""
        return np.flatnonzero(self._blocked_mask())

    def _indices(self, raws: Iterable[str]) -> list[int]:
        raws = list(raws)
        if not raws or self.item_ids is None:
            return []
        idx = self.item_ids.lookup(raws)
        return [int(i) for i in idx if i >= 0]

    def _blocked_mask(self) -> np.ndarray:
        cfg = self.config
        path = Path(cfg.blacklist_file) if cfg.blacklist_file else None
        mtime = path.stat().st_mtime if path is not None and path.exists() else None
        key = (tuple(cfg.blacklist), cfg.blacklist_file, mtime)
        if self._blocked is None or key != self._blocked_key:
            raws = list(cfg.blacklist)
            if mtime is not None:
                raws += [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            blocked = (set(self._indices(raws)) | self._added) - self._removed
            mask = np.zeros(self.catalog.n_items, dtype=bool)
            ids = np.array(sorted(blocked), dtype=np.int64)
            if len(ids):
                mask = np.zeros(max(self.catalog.n_items, int(ids.max()) + 1), dtype=bool)
                mask[ids] = True
            self._blocked, self._blocked_key = mask, key
        return self._blocked

    # ---- exploration ----------------------------------------------------------------
    def get_explorer(self) -> Explorer:
        cfg = self.config.explore
        if self.explorer is None or self.explorer.name != cfg.method:
            self.explorer = make_explorer(cfg, self.catalog.n_items)
        return self.explorer

    def save_state(self, directory: str | Path) -> None:
        """Online state worth keeping across builds: the explorer's counts (when one ran)."""
        if self.explorer is not None:
            d = Path(directory)
            save_explorer(self.explorer, d / self.explorer.name)

    def load_state(self, directory: str | Path) -> None:
        d = Path(directory) / self.config.explore.method
        if d.exists():
            load_explorer(self.get_explorer(), d)

    # ---- the stage ------------------------------------------------------------------
    def __call__(self, cands: Candidates, batch: QueryBatch, n: int, record: bool = True) -> tuple[Candidates, dict[str, int]]:
        cfg = self.config
        log: dict[str, int] = {}
        if cfg.preset == "none":
            out = cands.head(n)
            out.features["rank_before_rerank"] = out.rank_in_query()
            out.features["rerank_notes"] = np.zeros(len(out), dtype=np.int32)
            out.features["propensity"] = np.ones(len(out), dtype=np.float32)
            return out, log
        now = request_times(batch)
        cands = cands.head(cfg.window)
        cands.features["rank_before_rerank"] = cands.rank_in_query()
        cands = self._filter(cands, batch, now, log)
        order = sel.to_order(cands)  # width = the longest list (at most the window)
        notes = np.zeros(len(cands), dtype=np.int32)
        prop = np.ones(len(cands), dtype=np.float32)
        if len(cands):
            order = self._select(cands, batch, now, n, order, notes, prop, log)
        rows = order[:, :n]
        rows = rows[rows >= 0]
        out = cands.take(rows)
        out.features["rerank_notes"] = notes[rows]
        out.features["propensity"] = prop[rows]
        if record:
            self._side_effects(out, batch, now)
        return out, log

    def _filter(self, cands: Candidates, batch: QueryBatch, now: np.ndarray, log: dict[str, int]) -> Candidates:
        cfg, cat = self.config, self.catalog
        if cfg.filter_seen:
            cands, log["seen"] = flt.filter_items(cands, batch.seen)
        if cfg.served.enabled:
            cands, log["served"] = flt.filter_served(cands, self.served_log, batch.users, now - cfg.served.window_s)
        cands, log["blacklist"] = flt.filter_mask(cands, self._blocked_mask())
        if cfg.availability.enabled and (cat.available_from is not None or cat.available_until is not None):
            cands, log["unavailable"] = flt.filter_unavailable(cands, cat, now)
        if cfg.audience.enabled and cat.audiences:
            cands, log["audience"] = flt.filter_audience(cands, cat, self._user_codes(batch))
        if cfg.group.column and cat.group is not None:
            cands, log["group"] = flt.dedupe_groups(cands, cat.group, cfg.group.max_per_group)
        return cands

    def _user_codes(self, batch: QueryBatch) -> list[np.ndarray]:
        out = []
        for aud in self.catalog.audiences:
            codes = np.full(len(batch), -1, dtype=np.int32)
            for q, query in enumerate(batch.queries):
                attrs = getattr(query, "attributes", None) or {}
                if aud.user_column in attrs:
                    codes[q] = aud.code(attrs[aud.user_column])
                elif 0 <= query.user < len(aud.user_code):
                    codes[q] = aud.user_code[query.user]
            out.append(codes)
        return out

    def _select(
        self,
        cands: Candidates,
        batch: QueryBatch,
        now: np.ndarray,
        n: int,
        order: np.ndarray,
        notes: np.ndarray,
        prop: np.ndarray,
        log: dict[str, int],
    ) -> np.ndarray:
        cfg, cat = self.config, self.catalog

        def step(name: str, cur: np.ndarray, new: np.ndarray) -> np.ndarray:
            """Note the rows this selector moved into or inside the top n; count them."""
            if new is cur:
                return cur
            before, after = positions(cur, len(cands)), positions(new, len(cands))
            moved = (before != after) & (after >= 0) & (after < n)
            notes[moved] |= BIT[name]
            log[f"{name}_moved"] = log.get(f"{name}_moved", 0) + int(moved.sum())
            return new

        # sinks
        if cfg.sink_price.enabled and cat.price is not None:
            flag = self._price_flags(batch, _items(cands, order))
            order = step("sink_price", order, sel.sink(order, flag, cfg.sink_price.positions))
        if cfg.sink_similar.enabled:
            flag = self._similar_flags(batch, _items(cands, order))
            order = step("sink_similar", order, sel.sink(order, flag, cfg.sink_similar.positions))
        # diversity
        method = cfg.diversity_method()
        if method in ("mmr", "dpp") and order.shape[1] > 1:
            it = _items(cands, order)
            valid = order >= 0
            scores = np.where(valid, cands.score[np.maximum(order, 0)], 0.0)
            rel = div.relevance(scores, valid, cfg.diversity.relevance)
            for weight, per_item in (
                (cfg.diversity.popularity_penalty, cat.popularity),
                (cfg.diversity.exposure_penalty, cat.exposure),
            ):
                if weight > 0 and per_item is not None:
                    known = valid & (it < len(per_item))  # items added after the build: no penalty
                    value = np.where(known, per_item[np.where(known, it, 0)], 0.0)
                    rel = np.where(valid, rel - weight * value, 0.0).astype(np.float32)
            sim = div.similarity(it, cat, cfg.diversity.similarity)
            k = cfg.diversity.depth or n
            if method == "mmr":
                d = cfg.diversity
                picks = div.mmr(rel, sim, valid, d.mmr_lambda, k, d.keep_top, d.mmr_aggregate, d.mmr_discount)
            else:
                picks = div.dpp_greedy(rel, sim, valid, cfg.diversity.dpp_theta, k, cfg.diversity.keep_top)
            order = step(method, order, div.apply_picks(order, picks))
        # guarantees
        capped = 0 < cfg.ratio_cap.max_share < 1
        if capped:
            order = step("ratio_cap", order, sel.ratio_cap(order, cands.item, self.cats, cfg.ratio_cap.max_share, n))
        if cfg.scatter_max_run > 0:
            new = sel.scatter(order, cands.item, self.cats, cfg.scatter_max_run, n, limit=n if capped else None)
            order = step("scatter", order, new)
        if cfg.fixed_slot.enabled and cat.created is not None:
            fresh = self._fresh(_items(cands, order), now, cfg.fixed_slot.max_age_s)
            order = step("fixed_slot", order, sel.fixed_slot(order, fresh, cfg.fixed_slot.slot - 1))
        if cfg.interleave.enabled and "channels" in cands.features and self.channel_names:
            names = cfg.interleave.channels or self.channel_names
            turns = [self.channel_names.index(c) for c in names if c in self.channel_names]
            mask = np.where(order >= 0, cands.features["channels"][np.maximum(order, 0)], 0).astype(np.int64)
            order = step("interleave", order, sel.interleave(order, sel.primary_channel(mask, turns), turns, n))
        if cfg.explore.enabled:
            order = step("explore", order, self._explore(cands, now, n, order, prop, log))
        return order

    # ---- rule helpers ---------------------------------------------------------------
    def _price_flags(self, batch: QueryBatch, items: np.ndarray) -> np.ndarray:
        """Items priced above factor x the quantile of the user's history prices."""
        c = self.config.sink_price
        price = self.catalog.price
        assert price is not None
        limit = np.full(len(batch), np.inf)
        hist = batch.items
        hp = np.where(hist < len(price), price[np.minimum(hist, len(price) - 1)], np.nan)
        for q in range(len(batch)):
            p = hp[batch.indptr[q] : batch.indptr[q + 1]]
            p = p[np.isfinite(p)]
            if len(p) >= c.min_history:
                limit[q] = c.factor * np.quantile(p, c.quantile)
        safe = np.clip(items, 0, len(price) - 1)
        cand_price = np.where(items >= 0, price[safe], np.nan)
        return np.nan_to_num(cand_price, nan=-np.inf) > limit[:, None]

    def _similar_flags(self, batch: QueryBatch, items: np.ndarray) -> np.ndarray:
        """Window items whose similarity to one of the last `recent` history items is high."""
        c = self.config.sink_similar
        last = np.full((len(batch), c.recent), -1, dtype=np.int64)
        for q in range(len(batch)):
            h = batch.items[batch.indptr[q] : batch.indptr[q + 1]][-c.recent :]
            last[q, : len(h)] = h
        last[last >= self.catalog.n_items] = -1
        both = np.concatenate([items, last], axis=1)
        sim = div.similarity(both, self.catalog, self.config.diversity.similarity)
        w = items.shape[1]
        return (sim[:, :w, w:].max(axis=2) >= c.threshold) & (items >= 0)

    def _fresh(self, items: np.ndarray, now: np.ndarray, max_age_s: int) -> np.ndarray:
        created = self.catalog.created
        if created is None:
            return np.zeros(items.shape, dtype=bool)
        c = np.where(items >= 0, created[np.clip(items, 0, len(created) - 1)], np.iinfo(np.int64).min)
        return (items >= 0) & (c > np.iinfo(np.int64).min) & (c >= now[:, None] - max_age_s) & (c <= now[:, None])

    def _explore(
        self, cands: Candidates, now: np.ndarray, n: int, order: np.ndarray, prop: np.ndarray, log: dict[str, int]
    ) -> np.ndarray:
        """Explored slots: the explorer picks among eligible items the list would not show."""
        c = self.config.explore
        ex = self.get_explorer()
        ex.ensure(self.catalog.n_items)
        items = _items(cands, order)
        n_slots = min(int(np.floor(c.max_share * n)), n)
        slots = sorted({s - 1 for s in c.slots if 1 <= s <= n})[:n_slots]
        if not slots:
            return order
        exposures = np.zeros(items.shape, dtype=np.int64)
        known = (items >= 0) & (items < len(ex.exposures))
        exposures[known] = ex.exposures[items[known]]
        eligible = (items >= 0) & ((exposures < c.min_exposures) | self._fresh(items, now, c.fresh_s))
        eligible[:, :n] = False  # only items the list would not show anyway
        valid = order >= 0
        scores = np.where(valid, cands.score[np.maximum(order, 0)], 0.0)
        rel = div.relevance(scores, valid)
        out = order.copy()
        explored = 0
        for q in np.flatnonzero(eligible.any(axis=1)):
            m = int(valid[q].sum())
            row = order[q, :m].tolist()
            offer = order[q, eligible[q]].tolist()
            col_of = {r: j for j, r in enumerate(row)}

            def choose(offered: list[int], q: int = q) -> tuple[int, float]:
                arms = cands.item[offered].astype(np.int64)
                ctx = np.stack([np.ones(len(offered)), rel[q, [col_of[r] for r in offered]]], axis=1)
                return ex.choose(arms, self.rng, ctx)

            new, props = place(row, offer, slots, n, choose)
            for r, p in props.items():
                prop[r] = p
            explored += len(props)
            out[q, :m] = new
        log["explore_slots"] = explored
        return out

    def _side_effects(self, out: Candidates, batch: QueryBatch, now: np.ndarray) -> None:
        """Remember what was served (served-items filter, explorers' exposure counts)."""
        if self.config.served.enabled and len(out):
            ptr = out.indptr
            for q, u in enumerate(batch.users):
                if u >= 0 and ptr[q + 1] > ptr[q]:
                    self.served_log.record(int(u), out.item[ptr[q] : ptr[q + 1]], int(now[q]))
        if self.config.explore.enabled and self.explorer is not None:
            self.explorer.record_served(out.item)


def request_times(batch: QueryBatch) -> np.ndarray:
    """Each query's time in seconds; NO_TIME ('after everything') means the wall clock now."""
    t = batch.times.copy()
    t[t == NO_TIME] = int(time.time())
    return t


def _items(cands: Candidates, order: np.ndarray) -> np.ndarray:
    return np.where(order >= 0, cands.item[np.maximum(order, 0)], -1).astype(np.int64)
