"""Honest verification: full-length training on fresh paired seeds, scored on the test split.

The search selects on the *validation* split at a short fidelity. Verification re-trains the chosen
losses and the reference losses at full length on model seeds the search never used (same data
split, so the test split stays unseen by the search), scores them on *test*, and compares each loss
with CE and with the best reference through paired differences (paired t-test, 95 % t intervals).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from loss_rl.errors import ConfigError
from loss_rl.expr import KNOWN_LOSSES, Expr, TaskKind, check, known_loss
from loss_rl.stats import fresh_seeds, paired_difference, summarize_seeds
from loss_rl.tasks import TaskConfig

if TYPE_CHECKING:
    from loss_rl.evaluation import Executor

CLASSIFICATION_REFERENCES: tuple[str, ...] = (
    "ce",
    "label_smoothing",
    "focal",
    "gce",
    "sce",
    "poly1",
)
REGRESSION_REFERENCES: tuple[str, ...] = ("mse", "l1", "huber", "log_cosh")

COLUMNS = [
    "loss",
    "expression",
    "mean",
    "ci_low",
    "ci_high",
    "std",
    "n",
    "diverged",
    "val_mean",
    "diff_vs_ce",
    "p_vs_ce",
    "diff_vs_best_ref",
    "p_vs_best_ref",
    "reference",
]


def default_references(kind: TaskKind) -> tuple[str, ...]:
    """Names of the known losses every verification compares against."""
    return CLASSIFICATION_REFERENCES if kind is TaskKind.CLASSIFICATION else REGRESSION_REFERENCES


def verify(
    losses: Mapping[str, Expr],
    task: TaskConfig,
    *,
    seeds: int | Sequence[int] = 5,
    steps: int | None = None,
    references: Sequence[str] | None = None,
    data_seed: int | None = 0,
    executor: Executor | None = None,
) -> pd.DataFrame:
    """Train ``losses`` and the reference losses on fresh paired seeds and score them on test.

    Args:
        losses: Name → expression of the losses to verify (may be empty: references only).
        task: The task (its ``training.full_steps`` is the default length).
        seeds: Number of fresh seeds, or explicit model seeds.
        steps: Training steps; defaults to ``task.training.full_steps``.
        references: Known-loss names to compare against; defaults by task kind.
        data_seed: Seed of the data split (the search's, so that test stays unseen).
        executor: An :class:`loss_rl.evaluation.Executor`; in-process by default.

    Returns:
        One row per loss (see :data:`COLUMNS`), sorted by mean test score, best first. ``mean`` is
        the task metric on the test split over seeds that did not diverge; ``val_mean`` the same
        on the validation split (for selection); ``reference`` marks the known losses.

    Raises:
        ConfigError: if a loss does not fit the task kind (e.g. a regression loss on a
            classification task) or an unknown reference is named.
    """
    from loss_rl.evaluation import InProcessExecutor

    kind = task.kind
    seed_list = fresh_seeds(seeds) if isinstance(seeds, int) else [int(s) for s in seeds]
    n_steps = int(steps if steps is not None else task.training.full_steps)
    refs = list(references if references is not None else default_references(kind))
    table: dict[str, tuple[Expr, bool]] = {}
    for name in refs:
        spec = KNOWN_LOSSES.get(name)
        if spec is None or spec.kind is not kind:
            fits = [n for n, s in KNOWN_LOSSES.items() if s.kind is kind]
            raise ConfigError(
                f"unknown {kind.value} reference {name!r}; choose from {', '.join(fits)}",
                field="references",
            )
        table[name] = (known_loss(name), True)
    for name, expr in losses.items():
        verdict = check(expr, kind)
        if "kind" in verdict.codes:
            raise ConfigError(
                f"loss {name!r} ({expr}) does not fit a {kind.value} task: {verdict}",
                field="loss",
            )
        table.setdefault(name, (expr, False))

    names = list(table)
    exprs = [table[n][0] for n in names]
    runner = executor or InProcessExecutor()
    # Validation scores ride along so that a caller can *select* on val and report test.
    raw = runner.run(exprs, task, n_steps, seed_list, data_seed, splits=("test", "val"))
    scores = np.full((len(names), len(seed_list)), np.nan)
    val = np.full_like(scores, np.nan)
    for r in raw:
        if r.status == "ok" and r.score is not None:
            scores[r.candidate, seed_list.index(r.seed)] = r.score
            v = r.metrics.get("val", {}).get(task.metric)
            val[r.candidate, seed_list.index(r.seed)] = math.nan if v is None else v

    ce_name = "ce" if kind is TaskKind.CLASSIFICATION else "mse"
    ref_means = {n: np.nanmean(scores[i]) for i, n in enumerate(names) if table[n][1]}
    best_ref = max(ref_means, key=lambda n: -np.inf if np.isnan(ref_means[n]) else ref_means[n])
    rows = []
    for i, name in enumerate(names):
        s = scores[i]
        d_ce, p_ce = (math.nan, math.nan)
        if ce_name in names:
            d_ce, p_ce = paired_difference(s, scores[names.index(ce_name)])
        d_best, p_best = paired_difference(s, scores[names.index(best_ref)])
        rows.append(
            [
                name,
                str(exprs[i]),
                *summarize_seeds(s),
                float(np.nanmean(val[i])) if np.isfinite(val[i]).any() else math.nan,
                d_ce,
                p_ce,
                d_best,
                p_best,
                table[name][1],
            ]
        )
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs.update(
        steps=n_steps, seeds=seed_list, metric=task.metric, split="test", best_reference=best_ref
    )
    return df.sort_values("mean", ascending=False, na_position="last").reset_index(drop=True)
