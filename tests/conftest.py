from __future__ import annotations

from pathlib import Path

import pytest

from recfunnel.data.split import leave_last_out
from recfunnel.data.synthetic import SyntheticConfig, generate_with_truth

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.exists():
        pytest.skip(f"{SHARED} not present")
    return SHARED


@pytest.fixture(scope="session")
def planted():
    """Synthetic data with planted tastes, successors and drift, plus the truth."""
    ds, truth = generate_with_truth(SyntheticConfig(n_users=400, n_items=600, seed=7))
    return ds, truth


@pytest.fixture(scope="session")
def planted_split(planted):
    ds, truth = planted
    return leave_last_out(ds), truth
