"""Honest verification: full-length training on fresh paired seeds, scored on the test split.

The search selects on the *validation* split at a short fidelity. Verification re-trains the chosen
losses and the reference losses at full length on model seeds the search never used (same data
split, so the test split stays unseen by the search), scores them on *test*, and compares each loss
with CE and with the best reference through paired differences (paired t-test, 95 % t intervals).

Every loss is trained the way a practitioner would train it: with the task's checkpoint selection
(``task.training.select``, on the validation split), and every reference with its
hyper-parameters **tuned** on the validation split over the small grid of the library
(:attr:`loss_rl.expr.KnownLoss.grid`: GCE q, focal γ, label-smoothing α, SCE α/β, Poly-1 ε,
NCE+RCE α/β, Huber δ, quantile τ). Tuning trains every grid point on the same paired seeds and
keeps, per reference, the point with the best mean validation score; test is never consulted.
Because the references are selected on the very seeds they are reported on, any selection luck
goes to the references, never to the losses under test.

A loss under test that *is* a library loss up to a positive scale (:func:`loss_rl.expr.
known_equivalent`) is marked in the ``known_as`` column: a known loss is not a discovery.
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
from loss_rl.expr import (
    KNOWN_LOSSES,
    CheckResult,
    Expr,
    TaskKind,
    check,
    format_params,
    known_equivalent,
    known_loss,
)
from loss_rl.stats import fresh_seeds, paired_comparison, summarize_seeds
from loss_rl.tasks import TaskConfig
from loss_rl.training import score_of, score_range

if TYPE_CHECKING:
    from loss_rl.evaluation import Executor

#: Every library loss of each kind is a reference (a loss the search finds must beat all of them).
CLASSIFICATION_REFERENCES: tuple[str, ...] = tuple(
    n for n, k in KNOWN_LOSSES.items() if k.kind is TaskKind.CLASSIFICATION
)
REGRESSION_REFERENCES: tuple[str, ...] = tuple(
    n for n, k in KNOWN_LOSSES.items() if k.kind is TaskKind.REGRESSION
)

COLUMNS = [
    "loss",
    "expression",
    "params",
    "mean",
    "ci_low",
    "ci_high",
    "std",
    "n",
    "diverged",
    "val_mean",
    "diff_vs_ce",
    "diff_vs_ce_low",
    "diff_vs_ce_high",
    "p_vs_ce",
    "diff_vs_best_ref",
    "diff_vs_best_ref_low",
    "diff_vs_best_ref_high",
    "p_vs_best_ref",
    "reference",
    "known_as",
]
"""Columns of :func:`verify`'s table.

``params``: a reference's (tuned) hyper-parameters, e.g. ``q=0.5`` (empty otherwise);
``diff_vs_*``: mean paired difference over the seeds with its 95 % t interval
(``_low``/``_high``) and paired t-test ``p_vs_*``; ``known_as``: for a loss under test that is a
library loss up to a positive scale, which (e.g. ``mae up to scale (×0.25)``), else empty.
"""


def default_references(kind: TaskKind) -> tuple[str, ...]:
    """Names of the known losses every verification compares against: all of the kind."""
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
    seeds: int | Sequence[int] = 10,
    steps: int | None = None,
    references: Sequence[str] | None = None,
    tune_references: bool = True,
    data_seed: int | None = 0,
    executor: Executor | None = None,
) -> pd.DataFrame:
    """Train ``losses`` and the (tuned) reference losses on fresh paired seeds; score on test.

    Args:
        losses: Name → expression of the losses to verify (may be empty: references only).
        task: The task (its ``training.full_steps`` is the default length; its
            ``training.select`` decides checkpoint selection, for every loss alike).
        seeds: Number of fresh seeds, or explicit model seeds.
        steps: Training steps; defaults to ``task.training.full_steps``.
        references: Known-loss names to compare against; defaults to every library loss of the
            task kind.
        tune_references: Tune each reference's hyper-parameters on the validation split over
            its grid (:attr:`loss_rl.expr.KnownLoss.grid`); ``False``: library defaults only.
        data_seed: Seed of the data split (the search's, so that test stays unseen).
        executor: An :class:`loss_rl.evaluation.Executor`; in-process by default.

    Returns:
        One row per loss (see :data:`COLUMNS`), sorted by mean test score, best first. ``mean`` is
        the task's score (``task.score_metric``) on the test split over seeds that did not
        diverge, with a 95 % t interval clipped to the score's range; ``diverged`` counts the
        seeds that diverged; ``val_mean`` is the score on the validation split (for selection);
        ``reference`` marks the known losses, each in its tuned setting. A loss named like a
        reference and equal to it (same canonical key) is that reference's row. ``attrs``:
        ``steps``, ``seeds``, ``metric``, ``split``, ``select`` (the checkpoint rule),
        ``best_reference`` (the reference with the best mean test score, after tuning),
        ``trainings`` (all trainings of this verification), ``tuning_trainings`` (those spent
        on the references' grids), ``tuning`` (reference → ``{"chosen": params, "grid":
        [{"params", "val_mean", "ok"}]}``), ``per_seed`` (name → test score per seed, NaN for a
        diverged seed) and ``failed_checks`` (name → the validity checks it fails, for the
        losses that fail one: they are trained all the same).

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
    grids: dict[str, list[dict[str, float]]] = {}
    for name in refs:
        spec = KNOWN_LOSSES.get(name)
        if spec is None or spec.kind is not kind:
            fits = [n for n, s in KNOWN_LOSSES.items() if s.kind is kind]
            raise ConfigError(
                f"unknown {kind.value} reference {name!r}; choose from {', '.join(fits)}",
                field="references",
            )
        grids[name] = spec.variants() if tune_references else [dict(spec.defaults)]
    failed: dict[str, str] = {}
    given: dict[str, Expr] = {}
    for name, expr in losses.items():
        verdict = _fitting(name, expr, kind)
        if name in grids:  # a reference's name: only the reference itself may take its row
            if known_loss(name).key != expr.key:
                raise ConfigError(
                    f"loss {name!r} ({expr}) has the name of the reference {name!r} "
                    f"({known_loss(name)}) but is a different loss; rename it",
                    field="loss",
                )
            continue
        if not verdict.ok:
            failed[name] = str(verdict)
        given[name] = expr

    # One training per distinct expression and seed: the losses under test first (so that a
    # recording executor sees them in the caller's order), then every grid point.
    exprs: list[Expr] = []
    index: dict[str, int] = {}

    def slot(expr: Expr) -> int:
        if expr.key not in index:
            index[expr.key] = len(exprs)
            exprs.append(expr)
        return index[expr.key]

    given_slot = {name: slot(expr) for name, expr in given.items()}
    grid_slots = {
        name: [slot(KNOWN_LOSSES[name].expr(**pt)) for pt in points]
        for name, points in grids.items()
    }
    runner = executor or InProcessExecutor()
    # Validation scores ride along so that a caller can *select* on val and report test.
    raw = runner.run(exprs, task, n_steps, seed_list, data_seed, splits=("test", "val"))
    scores = np.full((len(exprs), len(seed_list)), np.nan)
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

    # Tuning: per reference, the grid point with the most seeds trained and, among those, the
    # best mean validation score (the defaults come first, so a tie keeps them).
    rows_of: dict[str, tuple[int, Expr, dict[str, float], bool]] = {}
    tuning: dict[str, dict[str, object]] = {}
    for name, points in grids.items():
        record = []
        best_i, best_rank = 0, (-1, -math.inf)
        for i, (pt, k) in enumerate(zip(points, grid_slots[name], strict=True)):
            ok = int(np.isfinite(val[k]).sum())
            mean_val = float(np.nanmean(val[k])) if ok else math.nan
            record.append({"params": dict(pt), "val_mean": mean_val, "ok": ok})
            rank = (ok, mean_val if ok else -math.inf)
            if rank > best_rank:
                best_i, best_rank = i, rank
        k = grid_slots[name][best_i]
        rows_of[name] = (k, exprs[k], dict(points[best_i]), True)
        tuning[name] = {"chosen": dict(points[best_i]), "grid": record}
    for name, expr in given.items():
        rows_of[name] = (given_slot[name], expr, {}, False)

    names = list(rows_of)
    row_scores = {n: scores[rows_of[n][0]] for n in names}
    ce_name = "ce" if kind is TaskKind.CLASSIFICATION else "mse"
    ref_means = {n: np.nanmean(row_scores[n]) for n in names if rows_of[n][3]}
    best_ref = max(ref_means, key=lambda n: -np.inf if np.isnan(ref_means[n]) else ref_means[n])
    bounds = score_range(metric)
    rows = []
    for name in names:
        k, expr, params, is_ref = rows_of[name]
        s = row_scores[name]
        vs_ce = paired_comparison(s, row_scores[ce_name]) if ce_name in names else None
        vs_best = paired_comparison(s, row_scores[best_ref])
        match = None if is_ref else known_equivalent(expr, kind)
        rows.append(
            [
                name,
                str(expr),
                format_params(params),
                *summarize_seeds(s, bounds),
                float(np.nanmean(val[k])) if np.isfinite(val[k]).any() else math.nan,
                vs_ce.diff if vs_ce else math.nan,
                vs_ce.ci_low if vs_ce else math.nan,
                vs_ce.ci_high if vs_ce else math.nan,
                vs_ce.p if vs_ce else math.nan,
                vs_best.diff,
                vs_best.ci_low,
                vs_best.ci_high,
                vs_best.p,
                is_ref,
                str(match) if match is not None else "",
            ]
        )
    df = pd.DataFrame(rows, columns=COLUMNS)
    n_grid = len({k for slots in grid_slots.values() for k in slots})
    df.attrs.update(
        steps=n_steps,
        seeds=seed_list,
        metric=metric,
        split="test",
        select=task.training.select,
        best_reference=best_ref,
        trainings=len(exprs) * len(seed_list),
        tuning_trainings=n_grid * len(seed_list) if tune_references else 0,
        tuning=tuning,
        per_seed={n: [float(v) for v in row_scores[n]] for n in names},
        failed_checks=failed,
    )
    return df.sort_values("mean", ascending=False, na_position="last").reset_index(drop=True)
