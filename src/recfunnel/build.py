"""`recfunnel build`: evaluate on the protocol, fit on everything, publish a version.

The artifact set holds the fitted funnel, the id maps, the catalog and the users'
histories (what serving needs to answer for a known user), the config, the data
fingerprint and the evaluation numbers, all in formats that load without running code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from recfunnel.artifacts import new_version_dir, publish
from recfunnel.config import FunnelConfig
from recfunnel.data.dataset import Dataset
from recfunnel.funnel import Funnel


def build(
    ds: Dataset,
    config: FunnelConfig,
    out: str | Path,
    metrics: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Fit the funnel on all of `ds` and publish it under `out`; returns the version dir."""
    t = time.perf_counter()
    funnel = Funnel(config).fit(ds, progress=progress)
    fit_s = time.perf_counter() - t
    d = new_version_dir(out, ds.fingerprint())
    funnel.save(d / "funnel")
    ds.user_ids.save(d / "user_ids.json")
    ds.events.select("user", "item", "ts", "event", "value").write_parquet(d / "events.parquet")
    ds.items.write_parquet(d / "items.parquet")
    publish(
        d,
        {
            "dataset": ds.name,
            "fingerprint": ds.fingerprint(),
            "counts": {"events": ds.n_events, "users": ds.n_users, "items": ds.n_items},
            "ordinal_time": ds.ordinal_time,
            "config": config.model_dump(mode="json"),
            "metrics": metrics or {},
            "fit_seconds": round(fit_s, 3),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return d
