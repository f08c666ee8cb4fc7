"""Settings of the re-rank stage: one section per rule, each on/off and parameterised.

Filters run first (they remove), then the selectors in a fixed order: sinks, diversity
(MMR or DPP), ratio caps, category scattering, fixed slots, channel interleaving,
exploration. The order is fixed on purpose: business rules that guarantee something
(caps, runs, slots) come after the soft diversity objective so nothing undoes them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PRESETS = ("default", "none", "mmr", "dpp")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServedConfig(_Strict):
    """Served-items filter: do not repeat what this user was shown recently (pages, refreshes)."""

    enabled: bool = Field(False, description="drop items served to the user within `window_s` (needs a served log)")
    window_s: int = Field(1800, ge=0, description="seconds an item stays 'recently served'")
    max_per_user: int = Field(500, ge=1, description="served items remembered per user by the in-memory log")


class AvailabilityConfig(_Strict):
    """Availability filter: catalog columns `available_from` / `available_until` (either may be absent)."""

    enabled: bool = Field(True, description="drop items outside their availability window at request time")


class AudienceConfig(_Strict):
    """Audience filter: an item column naming its audience must match the user's attribute."""

    enabled: bool = Field(True, description="drop items whose audience differs from the user's attribute")
    pairs: list[tuple[str, str]] = Field(
        [],
        description="[item column, user column] pairs, e.g. [['audience_gender', 'gender']]; "
        "an empty item value means everyone, an unknown user value filters nothing",
    )


class GroupConfig(_Strict):
    """Group dedupe: at most `max_per_group` items per group key (SPU of a SKU, a series)."""

    column: str = Field("", description="item column holding the group key ('' = off)")
    max_per_group: int = Field(1, ge=1, description="items kept per group, the best-scored ones")


class SinkPriceConfig(_Strict):
    """Price sink: items priced far above the user's usual range move down."""

    enabled: bool = Field(True, description="on when the catalog has prices; a no-op otherwise")
    factor: float = Field(2.0, gt=0, description="sink when price > factor x the user's usual maximum")
    quantile: float = Field(0.9, ge=0, le=1, description="the user's 'usual maximum' is this quantile of history prices")
    min_history: int = Field(3, ge=1, description="priced history items needed before the rule applies")
    positions: int = Field(5, ge=1, description="how many positions a sunk item moves down")


class SinkSimilarConfig(_Strict):
    """Similar sink: items too similar to something just consumed move down."""

    enabled: bool = Field(False, description="move down items similar to the last consumed ones")
    recent: int = Field(1, ge=1, description="how many of the latest history items count as 'just consumed'")
    threshold: float = Field(0.9, ge=0, le=1, description="similarity at or above which an item sinks")
    positions: int = Field(3, ge=1, description="how many positions a sunk item moves down")


class DiversityConfig(_Strict):
    """Diversity: MMR or DPP over the window, relevance = the ranker score scaled to [0, 1] per list."""

    method: Literal["mmr", "dpp", "off"] = Field(
        "mmr", description="selector used by the 'default' preset ('mmr' and 'dpp' presets force theirs)"
    )
    similarity: Literal["categories", "embeddings"] = Field(
        "categories", description="item similarity: Jaccard of category sets, or cosine of item embeddings"
    )
    mmr_lambda: float = Field(0.69, ge=0, le=1, description="MMR weight of relevance (1 = ranker order)")
    mmr_aggregate: Literal["max", "mean"] = Field(
        "mean", description="MMR similarity to the chosen items: 'max' (classic) or 'mean' (max-sum, optimises ILD)"
    )
    mmr_discount: bool = Field(
        True, description="weigh MMR relevance by the DCG discount of the slot being filled (top slots follow the ranker)"
    )
    dpp_theta: float = Field(
        0.9, ge=0, lt=1, description="DPP weight of relevance: kernel quality = exp(theta / (2 (1 - theta)) x relevance)"
    )
    relevance: Literal["minmax", "rank", "softmax"] = Field(
        "minmax",
        description="relevance scale: min-max of ranker scores, 1 - rank / window, or exp(score - top score)",
    )
    popularity_penalty: float = Field(
        0.0, ge=0, description="relevance minus this x normalised log popularity (favours the long tail)"
    )
    exposure_penalty: float = Field(
        0.25, ge=0, description="relevance minus this x the item's expected exposure (log share of top-n lists), for coverage"
    )
    exposure_users: int = Field(2000, ge=1, description="fit users sampled to estimate expected exposure when the funnel is fitted")
    keep_top: int = Field(4, ge=0, description="first positions kept in the ranker's order (they still count as chosen)")
    depth: int = Field(0, ge=0, description="positions chosen by the diversity selector (0 = the list length n)")


class RatioCapConfig(_Strict):
    """Category ratio cap: at most `max_share` of the top n from any one category."""

    max_share: float = Field(0.0, ge=0, le=1, description="largest share of the top n one category may take (0 = off)")


class FixedSlotConfig(_Strict):
    """Fixed slot: one position holds the best fresh item of the window."""

    enabled: bool = Field(False, description="put the best fresh item at `slot`")
    slot: int = Field(3, ge=1, description="1-based position reserved for a fresh item")
    max_age_s: int = Field(30 * 86400, ge=0, description="an item is fresh when created at most this long before the request")


class InterleaveConfig(_Strict):
    """Channel interleaving: alternate recall channels in the top of the list."""

    enabled: bool = Field(False, description="round-robin over `channels` in the final order")
    channels: list[str] = Field([], description="channel names in turn order (empty = all channels in funnel order)")


class ExploreConfig(_Strict):
    """Exploration: a bandit gives some slots to fresh or rarely shown items."""

    enabled: bool = Field(False, description="let an explorer take slots (online; off in offline evaluation)")
    method: Literal["thompson", "linucb"] = Field("thompson", description="Beta-Bernoulli Thompson sampling or LinUCB")
    max_share: float = Field(0.2, ge=0, le=1, description="cap on the share of the n slots explorers may take")
    slots: list[int] = Field([4, 8], description="1-based positions offered to explored items, in order")
    min_exposures: int = Field(100, ge=0, description="items served fewer times than this are eligible")
    fresh_s: int = Field(7 * 86400, ge=0, description="items created this recently are eligible too")
    prior_alpha: float = Field(1.0, gt=0, description="Thompson prior: pseudo clicks")
    prior_beta: float = Field(50.0, gt=0, description="Thompson prior: pseudo non-clicks")
    draws: int = Field(256, ge=16, description="posterior draws used to compute Thompson propensities")
    ucb_alpha: float = Field(
        0.1, ge=0, description="LinUCB confidence bonus in reward units (about the reward std: clicks at 0.5% -> 0.07)"
    )
    epsilon: float = Field(0.05, ge=0, le=1, description="LinUCB: share of uniform choices, so every item has a propensity")


class RerankConfig(_Strict):
    """Re-rank: filters and selectors applied to the ranked list before the top n."""

    preset: Literal["default", "none", "mmr", "dpp"] = Field(
        "default",
        description="'none' keeps the ranker's order; 'default' applies the rules below; "
        "'mmr' / 'dpp' apply them with that diversity method",
    )
    filter_seen: bool = Field(True, description="drop items the user already consumed")
    blacklist: list[str] = Field([], description="raw item ids never to recommend")
    blacklist_file: str = Field("", description="file with more raw item ids to block, one per line ('' = none)")
    scatter_max_run: int = Field(
        0, ge=0, description="at most this many items in a row sharing a category (0 = off)"
    )
    window: int = Field(50, ge=1, description="ranked candidates the re-ranker may draw from")
    served: ServedConfig = ServedConfig()
    availability: AvailabilityConfig = AvailabilityConfig()
    audience: AudienceConfig = AudienceConfig()
    group: GroupConfig = GroupConfig()
    sink_price: SinkPriceConfig = SinkPriceConfig()
    sink_similar: SinkSimilarConfig = SinkSimilarConfig()
    diversity: DiversityConfig = DiversityConfig()
    ratio_cap: RatioCapConfig = RatioCapConfig()
    fixed_slot: FixedSlotConfig = FixedSlotConfig()
    interleave: InterleaveConfig = InterleaveConfig()
    explore: ExploreConfig = ExploreConfig()

    def diversity_method(self) -> str:
        """The diversity selector this preset runs."""
        return self.preset if self.preset in ("mmr", "dpp") else self.diversity.method
