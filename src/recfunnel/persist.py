"""Saving learned state without pickle.

A component's state is a flat dict of NumPy arrays and SciPy CSR matrices plus its JSON
config. Arrays go to `.npy`, sparse matrices to `.npz` (both read with allow_pickle=False),
so loading an artifact never runs code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp


def save_state(directory: str | Path, state: dict[str, Any]) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name, value in state.items():
        if sp.issparse(value):
            sp.save_npz(d / f"{name}.npz", sp.csr_matrix(value), compressed=False)
        elif isinstance(value, np.ndarray):
            if value.dtype == object:
                raise TypeError(f"{name}: object arrays cannot be saved without pickle")
            np.save(d / f"{name}.npy", value, allow_pickle=False)
        else:
            raise TypeError(f"{name}: unsupported state type {type(value).__name__}")


def load_state(directory: str | Path) -> dict[str, Any]:
    d = Path(directory)
    state: dict[str, Any] = {}
    for path in sorted(d.glob("*.npy")):
        state[path.stem] = np.load(path, allow_pickle=False)
    for path in sorted(d.glob("*.npz")):
        state[path.stem] = sp.load_npz(path).tocsr()
    return state


def write_json(path: str | Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
