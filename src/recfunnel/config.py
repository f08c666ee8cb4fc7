"""The funnel's settings: one typed object that round-trips through a TOML file.

`configs/default.toml` is this object written out with comments; every field has a
description here, which `recfunnel config` prints.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field

from recfunnel.features.candidates import CandidateFeaturesConfig
from recfunnel.features.pointintime import PointInTimeConfig
from recfunnel.rank.lightgbm_ranker import LightGBMConfig
from recfunnel.rank.neural import (
    DeepFMConfig,
    DIENConfig,
    DINConfig,
    FFMConfig,
    FMConfig,
    GBDTLRConfig,
    LRConfig,
    MMoEConfig,
    SharedBottomConfig,
    WideDeepConfig,
)
from recfunnel.rank.prerank import PreRankConfig
from recfunnel.recall.content import ContentConfig
from recfunnel.recall.cooccurrence import CooccurrenceConfig
from recfunnel.recall.eges import EGESConfig
from recfunnel.recall.graph_embedding import DeepWalkConfig, Node2VecConfig
from recfunnel.recall.item2vec import Item2VecConfig
from recfunnel.recall.mind import MINDConfig
from recfunnel.recall.sequential import GRU4RecConfig, SASRecConfig
from recfunnel.recall.twotower import DSSMConfig, YouTubeDNNConfig
from recfunnel.recall.itemcf import ItemCFConfig
from recfunnel.recall.popular import CategoryHotConfig, HotConfig, PopularConfig
from recfunnel.recall.usercf import UserCFConfig
from recfunnel.rerank.rules import RerankConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecallConfig(_Strict):
    popular: PopularConfig = PopularConfig(quota=100)
    hot: HotConfig = HotConfig(quota=100)
    category_hot: CategoryHotConfig = CategoryHotConfig(quota=100)
    itemcf: ItemCFConfig = ItemCFConfig(quota=300)
    usercf: UserCFConfig = UserCFConfig(quota=200)
    cooccur: CooccurrenceConfig = CooccurrenceConfig(quota=300)
    item2vec: Item2VecConfig = Item2VecConfig(enabled=False, quota=200)
    deepwalk: DeepWalkConfig = DeepWalkConfig(enabled=False, quota=200)
    node2vec: Node2VecConfig = Node2VecConfig(enabled=False, quota=200)
    sasrec: SASRecConfig = SASRecConfig(enabled=False, quota=200)
    gru4rec: GRU4RecConfig = GRU4RecConfig(enabled=False, quota=200)
    eges: EGESConfig = EGESConfig(enabled=False, quota=200)
    content: ContentConfig = ContentConfig(enabled=False, quota=200)
    dssm: DSSMConfig = DSSMConfig(enabled=False, quota=200)
    youtubednn: YouTubeDNNConfig = YouTubeDNNConfig(enabled=False, quota=200)
    mind: MINDConfig = MINDConfig(enabled=False, quota=200)

    def enabled(self) -> dict[str, object]:
        return {name: cfg for name, cfg in self if getattr(cfg, "enabled", False)}


class MergeConfig(_Strict):
    """Merge: union of the channels' quotas, deduplicated, cut to the pool size."""

    pool_size: int = Field(500, ge=1, description="candidates kept after merging all channels")


class RankConfig(_Strict):
    """Rank: the model that orders the merged pool, and how its training rows are made."""

    model: Literal[
        "lightgbm", "lr", "fm", "ffm", "gbdt_lr", "widedeep", "deepfm", "din", "dien", "shared_bottom", "mmoe", "none"
    ] = Field("widedeep", description="'none' keeps the merged recall order; the others read [rank.<model>]")
    train_steps: int = Field(
        10, ge=1, description="last interactions per user held out to build ranker training queries"
    )
    train_max_share: float = Field(
        0.2, gt=0, le=1, description="... but at most this share of a user's interactions (at least one)"
    )
    max_train_queries: int = Field(
        60000, ge=1, description="training queries kept (a random sample) when there are more"
    )
    negatives_per_query: int = Field(
        100, ge=1, description="pool negatives sampled per training query (the positive is always kept)"
    )
    random_negatives_per_query: int = Field(
        0, ge=0, description="random catalog items recall did not find, added per training query as easy negatives"
    )
    prerank: PreRankConfig = PreRankConfig()
    features: CandidateFeaturesConfig = CandidateFeaturesConfig()
    point_in_time: PointInTimeConfig = PointInTimeConfig()
    lightgbm: LightGBMConfig = LightGBMConfig()
    lr: LRConfig = LRConfig()
    fm: FMConfig = FMConfig()
    ffm: FFMConfig = FFMConfig()
    gbdt_lr: GBDTLRConfig = GBDTLRConfig()
    widedeep: WideDeepConfig = WideDeepConfig()
    deepfm: DeepFMConfig = DeepFMConfig()
    din: DINConfig = DINConfig()
    dien: DIENConfig = DIENConfig()
    shared_bottom: SharedBottomConfig = SharedBottomConfig()
    mmoe: MMoEConfig = MMoEConfig()


class FunnelConfig(_Strict):
    n: int = Field(10, ge=1, description="items in the final list")
    seed: int = Field(0, description="seed for every random choice (sampling, model init)")
    recall: RecallConfig = RecallConfig()
    merge: MergeConfig = MergeConfig()
    rank: RankConfig = RankConfig()
    rerank: RerankConfig = RerankConfig()

    @classmethod
    def from_toml(cls, path: str | Path) -> "FunnelConfig":
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{p}: not valid TOML: {e}") from e
        return cls.model_validate(data)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(mode="json"))

    def to_commented_toml(self) -> str:
        """The config as TOML with every field's description as a comment (the manual)."""
        lines = [line.rstrip() for line in HEADER.strip().splitlines()] + [""]
        _emit(self, (), lines)
        return "\n".join(lines).rstrip() + "\n"


HEADER = """
# recfunnel funnel configuration: the reference manual.
#
# Generated from the typed config in src/recfunnel/config.py (`recfunnel config` prints
# it); every key below is shown with its default. Unknown keys are an error, so a typo
# never silently falls back to a default. Recall channels run in parallel, each sending
# its `quota` best candidates to the merge; set `enabled = false` to drop one.
"""


def _emit(model: BaseModel, path: tuple[str, ...], lines: list[str]) -> None:
    scalars, sections = [], []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        (sections if isinstance(value, BaseModel) else scalars).append((name, info, value))
    if path and scalars:
        doc = (type(model).__doc__ or "").strip().split("\n\n")[0]
        lines.append(f"[{'.'.join(path)}]")
        if doc:
            lines.extend(f"# {d.strip()}" for d in doc.splitlines())
    for name, info, value in scalars:
        if info.description:
            lines.append(f"# {info.description}")
        lines.append(tomli_w.dumps({name: _plain(value)}).strip())
    if scalars:
        lines.append("")
    for name, _, value in sections:
        _emit(value, (*path, name), lines)


def _plain(value: object) -> object:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def default_config_path() -> Path:
    return Path(__file__).parent / "configs" / "default.toml"


def load_config(path: str | Path | None) -> FunnelConfig:
    """The config at `path`, or the packaged default."""
    return FunnelConfig.from_toml(path or default_config_path())
