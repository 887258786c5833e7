"""Presenting values: numbers as table text, and data as JSON-ready plain values."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

MISSING = "—"
"""What a table shows for a number that is absent or not finite."""


def format_number(value: Any, digits: int = 4) -> str:
    """A value as table text: a float with ``digits`` decimals, anything else as ``str``.

    Args:
        value: The value (``None`` and non-finite floats are shown as :data:`MISSING`).
        digits: Decimals of a float.

    Returns:
        The text of the cell.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def json_ready(obj: Any) -> Any:
    """A JSON-ready copy: numpy scalars to Python, NaN/inf to ``None``, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
