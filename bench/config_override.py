"""`a.b.c=value` overrides of a pydantic config, for the tuning benches' command lines."""

from __future__ import annotations

import json


def override(cfg, dotted: str, raw: str):  # noqa: ANN001, ANN201
    """cfg with the field at `dotted` (a.b.c) set to the JSON value `raw` (or the string);
    an unknown field fails validation (the configs forbid extra keys)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    head, _, rest = dotted.partition(".")
    if rest:
        return cfg.model_copy(update={head: override(getattr(cfg, head), rest, raw)})
    return type(cfg).model_validate({**cfg.model_dump(), head: value})
