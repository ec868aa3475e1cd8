"""Step metrics as KFP's scalar-metrics view shows them: flat name -> number (a nested dict is not shown)."""

from __future__ import annotations

import math


def flat_metrics(values: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested dict under '/'-joined names ({"a": {"b": 1}} -> {"a/b": 1.0}); strings,
    lists, None and booleans are left out (they are no metric)."""
    flat: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_metrics(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat
