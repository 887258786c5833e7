"""Honest verification: full-length training on fresh paired seeds, scored on the test split.

The search selects on the *validation* split at a short fidelity. Verification re-trains the chosen
losses and the reference losses at full length on model seeds the search never used (same data
split, so the test split stays unseen by the search), scores them on *test*, and compares each loss
with CE and with the best reference through paired differences (paired t-test, 95 % t intervals).
Intervals are clipped to the range of the task's metric (accuracy in ``[0, 1]``, ``r2`` at most 1,
``neg_mse`` at most 0: :func:`loss_rl.training.score_range`). A seed that diverged (the trainer's
rule: NaN/inf, or a loss or outputs that exploded past their bounds —
:class:`loss_rl.training.TrainResult`) has no score and is counted in ``diverged``.

Verification trains what it is given, including losses that fail the validity checks a search
rejects candidates with; :func:`verification_losses` names the losses of one ``loss-rl evaluate``
and says which fail a check and which duplicates were merged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from loss_rl.errors import ConfigError
from loss_rl.expr import KNOWN_LOSSES, CheckResult, Expr, TaskKind, check, known_loss
from loss_rl.stats import fresh_seeds, paired_difference, summarize_seeds
from loss_rl.tasks import TaskConfig
from loss_rl.training import score_of, score_range

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


def _fitting(name: str, expr: Expr, kind: TaskKind) -> CheckResult:
    """The validity checks of ``expr`` for ``kind``.

    Raises:
        ConfigError: if the loss does not fit the task kind (it could not be trained at all).
    """
    verdict = check(expr, kind)
    if "kind" in verdict.codes:
        raise ConfigError(
            f"loss {name!r} ({expr}) does not fit a {kind.value} task: {verdict}",
            field="loss",
        )
    return verdict


def verification_losses(
    given: Sequence[tuple[str, Expr]],
    kind: TaskKind,
    references: Sequence[str] | None = None,
) -> tuple[dict[str, Expr], list[str]]:
    """Name the losses of one ``loss-rl evaluate`` for :func:`verify`; one warning line per issue.

    Nothing is dropped or merged silently:

    * a loss with the canonical key (:attr:`Expr.key`) of an earlier loss or of a reference is
      the same loss and would train to the same numbers: it is verified once, in the earlier
      loss's (or the reference's) row, and a warning names both;
    * a different loss under a name already taken is kept, as ``NAME#2`` (``#3``...), with a
      warning;
    * a loss that fails a validity check (:func:`loss_rl.expr.check`, which a search rejects
      candidates with) is verified anyway — it was asked for — with a warning naming the failed
      check(s).

    Args:
        given: ``(name, expression)`` pairs in command-line order.
        kind: The task kind.
        references: The references :func:`verify` will add (defaults by kind, as there).

    Returns:
        The losses to pass to :func:`verify` and the warning lines (one per merged, renamed or
        failing loss).

    Raises:
        ConfigError: for a loss that does not fit the task kind.
    """
    refs = list(references if references is not None else default_references(kind))
    owner: dict[str, str] = {}  # canonical key -> the row that has it
    for ref in refs:
        spec = KNOWN_LOSSES.get(ref)
        if spec is not None and spec.kind is kind:  # verify names an unknown one
            owner.setdefault(known_loss(ref).key, ref)
    taken = set(refs)
    out: dict[str, Expr] = {}
    warnings: list[str] = []
    for name, expr in given:
        verdict = _fitting(name, expr, kind)
        shown = repr(name) if name == str(expr) else f"{name!r} ({expr})"
        row = owner.get(expr.key)
        if row is not None:
            what = "the reference" if row in refs else "the loss"
            warnings.append(
                f"{shown} is the same loss as {what} {row!r} (same canonical key): verified "
                f"once, in row {row!r}"
            )
            continue
        label, copy = name, 2
        while label in taken:
            label, copy = f"{name}#{copy}", copy + 1
        if label != name:
            warnings.append(
                f"{name!r} is already the name of a different loss: {expr} is verified as {label!r}"
            )
        taken.add(label)
        owner[expr.key] = label
        out[label] = expr
        if not verdict.ok:
            warnings.append(
                f"{shown} fails the validity check {verdict} — a search would reject it; "
                f"verified anyway" + (f", as {label!r}" if label != name else "")
            )
    return out, warnings


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
        the task's score (``task.score_metric``) on the test split over seeds that did not
        diverge, with a 95 % t interval clipped to the score's range; ``diverged`` counts the
        seeds that diverged; ``val_mean`` is the score on the validation split (for selection);
        ``reference`` marks the known losses. A loss named like a reference and equal to it
        (same canonical key) is that reference's row. ``attrs``: ``steps``, ``seeds``,
        ``metric``, ``split``, ``best_reference``, and ``failed_checks`` (name → the validity
        checks it fails, for the losses that fail one: they are trained all the same).

    Raises:
        ConfigError: if a loss does not fit the task kind (e.g. a regression loss on a
            classification task), has a reference's name but is a different loss, or an
            unknown reference is named.
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
    failed: dict[str, str] = {}
    for name, expr in losses.items():
        verdict = _fitting(name, expr, kind)
        if name in table:  # a reference's name: only the reference itself may take its row
            if table[name][0].key != expr.key:
                raise ConfigError(
                    f"loss {name!r} ({expr}) has the name of the reference {name!r} "
                    f"({table[name][0]}) but is a different loss; rename it",
                    field="loss",
                )
            continue
        if not verdict.ok:
            failed[name] = str(verdict)
        table[name] = (expr, False)

    names = list(table)
    exprs = [table[n][0] for n in names]
    runner = executor or InProcessExecutor()
    # Validation scores ride along so that a caller can *select* on val and report test.
    raw = runner.run(exprs, task, n_steps, seed_list, data_seed, splits=("test", "val"))
    scores = np.full((len(names), len(seed_list)), np.nan)
    val = np.full_like(scores, np.nan)
    metric = task.score_metric
    for r in raw:
        if r.status == "ok" and r.score is not None:
            scores[r.candidate, seed_list.index(r.seed)] = r.score
            v = r.metrics.get("val", {})
            # The score, not the raw metric: task.metric may be unset or a neg_ score.
            val[r.candidate, seed_list.index(r.seed)] = (
                score_of(v, metric) if metric.removeprefix("neg_") in v else math.nan
            )

    ce_name = "ce" if kind is TaskKind.CLASSIFICATION else "mse"
    ref_means = {n: np.nanmean(scores[i]) for i, n in enumerate(names) if table[n][1]}
    best_ref = max(ref_means, key=lambda n: -np.inf if np.isnan(ref_means[n]) else ref_means[n])
    bounds = score_range(metric)
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
                *summarize_seeds(s, bounds),
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
        steps=n_steps,
        seeds=seed_list,
        metric=metric,
        split="test",
        best_reference=best_ref,
        failed_checks=failed,
    )
    return df.sort_values("mean", ascending=False, na_position="last").reset_index(drop=True)
