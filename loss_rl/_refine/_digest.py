"""Plain-data digests of a verification table, for summaries and the metadata of exported specs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

_DIGEST_COLUMNS = ("mean", "ci_low", "ci_high", "std", "n", "diverged", "diff_vs_ce", "p_vs_ce")


def plain(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``None`` (specs are strict JSON)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return str(value)


def table_digest(df: pd.DataFrame | None, keys: Sequence[str]) -> dict[str, Any]:
    """Test mean, 95 % CI, spread and difference vs CE of the rows named ``keys``."""
    if df is None:
        return {}
    out = {}
    for _, row in df.iterrows():
        if row["loss"] in keys:
            out[row["loss"]] = {k: row[k] for k in _DIGEST_COLUMNS if k in row}
    return plain(out)


def table_facts(df: pd.DataFrame | None) -> dict[str, Any]:
    """How a verification was run: its steps, seeds and metric (empty when it was skipped)."""
    if df is None:
        return {}
    return {
        "verification_steps": df.attrs.get("steps"),
        "verification_seeds": df.attrs.get("seeds"),
        "metric": df.attrs.get("metric"),
    }
