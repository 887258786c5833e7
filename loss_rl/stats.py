"""Statistics of paired multi-seed comparisons: fresh seeds, t intervals, paired t-tests.

Verification (:func:`loss_rl.verify.verify`, expressions through the batched trainer) and the
comparison of loss modules (:func:`loss_rl.meta.compare_modules`, neural losses through a plain
loop) both train every loss on the same fresh model seeds and summarise the per-seed scores the
same way, with the functions here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from loss_rl.errors import ConfigError

#: Fresh model seeds start here: the search uses small seeds.
VERIFY_SEED_OFFSET = 10_000

__all__ = [
    "VERIFY_SEED_OFFSET",
    "PairedComparison",
    "fresh_seeds",
    "paired_comparison",
    "paired_difference",
    "summarize_seeds",
    "t_interval",
]


def fresh_seeds(n: int) -> list[int]:
    """``n`` model seeds disjoint from the search's seeds.

    Raises:
        ConfigError: for fewer than 2 seeds (no confidence interval).
    """
    if n < 2:
        raise ConfigError("needs at least 2 seeds for a confidence interval", field="seeds")
    return [VERIFY_SEED_OFFSET + i for i in range(n)]


def t_interval(
    x: np.ndarray, bounds: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """Mean and 95 % t interval ``(mean, low, high)`` of ``x``.

    Args:
        x: The values (per-seed scores).
        bounds: The range ``(low, high)`` the quantity can take (``±inf`` for an open side);
            the interval is clipped to it. The t interval is symmetric, so with few, spread-out
            seeds it can otherwise reach values the metric cannot take (an accuracy below 0).
    """
    from scipy import stats

    n = len(x)
    m = float(np.mean(x))
    if n < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.975, n - 1) * np.std(x, ddof=1) / math.sqrt(n))
    low, high = m - half, m + half
    if bounds is not None:
        low, high = min(max(low, bounds[0]), bounds[1]), max(min(high, bounds[1]), bounds[0])
    return m, low, high


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean paired difference ``a - b`` over seeds finite in both, and its paired t-test p."""
    from scipy import stats

    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 2:
        return math.nan, math.nan
    d = a - b
    if np.allclose(d, d[0]):
        return float(d.mean()), (1.0 if abs(d[0]) < 1e-12 else 0.0)
    return float(d.mean()), float(stats.ttest_rel(a, b).pvalue)


@dataclass(frozen=True)
class PairedComparison:
    """Paired comparison of two losses over the seeds where both have a score.

    Attributes:
        diff: Mean paired difference ``a - b``.
        ci_low: Lower end of its 95 % t interval.
        ci_high: Upper end of its 95 % t interval.
        p: Two-sided paired t-test p-value.
        n: Seeds used (finite in both).
    """

    diff: float
    ci_low: float
    ci_high: float
    p: float
    n: int


def paired_comparison(a: np.ndarray, b: np.ndarray) -> PairedComparison:
    """Mean paired difference ``a - b``, its 95 % t interval and paired t-test p.

    Seeds where either score is NaN (diverged) are left out; fewer than 2 left gives NaNs.
    """
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    diff, p = paired_difference(a, b)
    if len(d) < 2:
        return PairedComparison(diff, math.nan, math.nan, p, len(d))
    _, low, high = t_interval(d)
    return PairedComparison(diff, low, high, p, len(d))


def summarize_seeds(
    scores: np.ndarray, bounds: tuple[float, float] | None = None
) -> tuple[float, float, float, float, int, int]:
    """``(mean, ci_low, ci_high, std, n, diverged)`` of one loss's per-seed scores.

    NaN entries are seeds that diverged; the statistics use the finite ones. ``bounds`` is the
    range of the score (e.g. ``(0, 1)`` for accuracy): the interval is clipped to it.
    """
    finite = scores[np.isfinite(scores)]
    mean, lo, hi = t_interval(finite, bounds) if len(finite) else (math.nan,) * 3
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    return mean, lo, hi, std, len(finite), int(len(scores) - len(finite))
