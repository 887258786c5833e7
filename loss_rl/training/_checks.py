"""Validity checks of a batch of candidate losses, the costly descent check run for all at once.

:func:`loss_rl.expr.check` ends with the descent check (EvoMAL's and AutoLoss-Zero's filter:
minimise the loss over the probe outputs themselves and ask for progress towards the targets),
30 Adam steps through autograd, one candidate at a time: about 45 ms per candidate, measured as
the search's largest cost outside the trainer (27 s of a 148 s search of 600 trainings, all in
the main process while the trainer's workers wait). Here the candidates that pass the cheap
checks take those 30 steps together, as one population of the batched trainer's loss programs
(:class:`~loss_rl.training._ploss.PopulationLoss`: hand-written gradients, no autograd graph),
with Adam's update (torch's single-tensor formula) applied to all of them in one set of ops.

The verdicts are :func:`~loss_rl.expr.check`'s: the same probes, steps, learning rate, progress
measure and threshold; only float64 rounding may differ (the programs' hand-written gradients
against autograd's), which can move a candidate within rounding of the threshold to the other
side.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from loss_rl.expr import (
    DESCENT_LR,
    DESCENT_STEPS,
    CheckResult,
    Expr,
    TaskKind,
    check,
    descent_probes,
    descent_progress,
    descent_verdict,
)
from loss_rl.training._ploss import PopulationLoss
from loss_rl.training._trainer import split_candidates
from loss_rl.training._workers import run_chunks, running_workers

logger = logging.getLogger(__name__)

#: Batches at least this large are checked in the trainer's worker processes when they run:
#: the grammar space's batches hold 30-50 new expressions, the parametric space's 1-8.
PARALLEL_MIN = 16

# torch.optim.Adam's defaults, which the one-candidate descent check uses.
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


def check_batch(exprs: Sequence[Expr], kind: TaskKind | str) -> list[CheckResult]:
    """:func:`loss_rl.expr.check` of every candidate, the descent checks batched.

    A batch of at least :data:`PARALLEL_MIN` candidates is split over the trainer's worker
    processes when they are running (a search starts them first; they wait for the trainer
    while the checks run): each worker checks its share, grouped by tree structure as the
    trainer splits a population (:func:`~loss_rl.training.split_candidates`).

    Args:
        exprs: Candidate losses.
        kind: The task kind they are checked for.

    Returns:
        One :class:`~loss_rl.expr.CheckResult` per candidate, in order.
    """
    kind = TaskKind(kind)
    workers = running_workers()
    if workers > 1 and len(exprs) >= PARALLEL_MIN:
        chunks = split_candidates(exprs, 1, workers)
        if len(chunks) == workers:  # the pool's size: run_chunks would otherwise restart it
            parts = run_chunks(_check_here, [([exprs[i] for i in c], kind) for c in chunks])
            out: list[CheckResult | None] = [None] * len(exprs)
            for chunk, verdicts in zip(chunks, parts, strict=True):
                for i, verdict in zip(chunk, verdicts, strict=True):
                    out[i] = verdict
            return [r for r in out if r is not None]
    return _check_here(exprs, kind)


def _check_here(exprs: Sequence[Expr], kind: TaskKind) -> list[CheckResult]:
    """:func:`check_batch` in this process (also what each worker runs for its share)."""
    out: list[CheckResult | None] = [None] * len(exprs)
    todo: list[int] = []
    for i, e in enumerate(exprs):
        verdict = check(e, kind, descent=False)
        if verdict.ok:
            todo.append(i)
        else:
            out[i] = verdict
    if todo:
        try:
            verdicts = descent_checks([exprs[i] for i in todo], kind)
        except Exception:  # e.g. a tree the batched programs cannot build: one by one instead
            logger.debug("batched descent check failed; checking one by one", exc_info=True)
            verdicts = [check(exprs[i], kind) for i in todo]
        for i, verdict in zip(todo, verdicts, strict=True):
            out[i] = verdict
    return [r for r in out if r is not None]


def descent_checks(exprs: Sequence[Expr], kind: TaskKind) -> list[CheckResult]:
    """The descent check of candidates that passed the other checks, all at once.

    Args:
        exprs: Candidates that passed ``check(..., descent=False)``.
        kind: Their task kind.

    Returns:
        One verdict per candidate, in order.
    """
    x0, y = descent_probes(kind)
    k = len(exprs)
    classes = x0.shape[-1] if kind is TaskKind.CLASSIFICATION else None
    loss = PopulationLoss(exprs, 1, kind, classes, dtype=x0.dtype)
    x = x0.expand(k, *x0.shape).clone()  # row m: candidate loss.order[m]
    yy = y.expand(k, *y.shape)
    before = descent_progress(x, yy, kind)
    finite = torch.ones(k, dtype=torch.bool)
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    row_shape = (k,) + (1,) * (x.dim() - 1)
    for step in range(1, DESCENT_STEPS + 1):
        ev = loss(x, yy)
        finite &= torch.isfinite(ev.loss)
        # A candidate stops at its first non-finite loss (its verdict is decided); zeroing its
        # gradient keeps its row finite. Rows never mix.
        g = torch.where(finite.view(row_shape), ev.grad, 0.0)
        m.lerp_(g, 1 - _BETA1)
        v.mul_(_BETA2).addcmul_(g, g, value=1 - _BETA2)
        step_size = DESCENT_LR / (1 - _BETA1**step)
        denom = (v.sqrt() / (1 - _BETA2**step) ** 0.5).add_(_EPS)
        x.addcdiv_(m, denom, value=-step_size)
    after = descent_progress(x, yy, kind)
    out: list[CheckResult | None] = [None] * k
    broken_rows: set[int] = set()
    for g_idx in loss.broken:  # a program that raised: that group's candidates, one by one
        start, prog = loss.programs[g_idx]
        broken_rows |= set(range(start, start + prog.size))
    for row, cand in enumerate(loss.order):
        if row in broken_rows:
            out[cand] = check(exprs[cand], kind)
        else:
            out[cand] = descent_verdict(
                kind, float(before[row]), float(after[row]), bool(finite[row])
            )
    return [r for r in out if r is not None]
