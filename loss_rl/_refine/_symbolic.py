"""``refine``: learn a symbolic loss's constants by meta-gradient descent, verify and write it.

``refine`` is what ``loss-rl refine SOURCE --env NAME`` calls: it reads the loss (an expression,
a JSON spec or a run folder), learns its constants by differentiating through the task's own
inner training (support = train minibatches, query = val), verifies the refined loss against the
unrefined one, CE and the usual references on the *test* split with fresh paired seeds (the same
:func:`loss_rl.verify.verify` the search uses), and writes it next to the source.

Raymond et al. 2023 (EvoMAL) refine symbolic constants this way; Finn et al. 2017 (MAML) is the
outer loop over a task distribution.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from loss_rl._refine._digest import plain, table_digest, table_facts
from loss_rl._refine._recorder import VerificationRecorder
from loss_rl._refine._settings import (
    DEFAULT_UNROLL,
    ObjectiveChoice,
    ProgressFn,
    check_verify_seeds,
    meta_configs,
    settings_digest,
)
from loss_rl._refine._sources import LossSource, ResolvedEnv, resolve_env, resolve_source
from loss_rl.errors import ConfigError, LossSpecError
from loss_rl.export import export
from loss_rl.expr import Expr, TaskKind, check, task_kind
from loss_rl.meta import (
    DeadConstant,
    MetaHistory,
    MetaProgress,
    SymbolicLoss,
    TaskEpisodes,
    dead_constants,
    meta_optimize,
)
from loss_rl.output_paths import check_writable
from loss_rl.stats import paired_difference
from loss_rl.tasks import TaskConfig
from loss_rl.verify import verify

logger = logging.getLogger(__name__)


@dataclass
class RefineResult:
    """Outcome of :func:`refine`.

    Attributes:
        original: The loss as given.
        refined: The loss with learned constants (rounded to 4 significant digits).
        kind: Task kind.
        env: Env preset name.
        constants: Per constant: index, context, value before and after, learnable.
        no_gradient_constants: Constants that no meta-gradient can move, with the reason.
        history: The outer optimisation record.
        verification: The verification table (``None`` when skipped); rows ``refined``,
            ``unrefined``, ``ce`` and the references.
        paths: Files written (``json``, and ``py`` in a run folder).
        summary: Plain-data digest of all the above (what the CLI prints and the spec stores):
            ``original``, ``refined``, ``changed``, ``constants``, ``no_gradient_constants``,
            ``meta`` (outer-loop digest), ``verification`` (``refined``/``unrefined``/CE rows:
            test mean, 95 % CI, difference vs CE and its p), ``refined_vs_unrefined`` (paired
            test difference over the verification seeds, p-value, per-seed scores), ``paths``.
    """

    original: Expr
    refined: Expr
    kind: TaskKind
    env: str
    constants: list[dict[str, Any]]
    no_gradient_constants: list[dict[str, Any]]
    history: MetaHistory
    verification: pd.DataFrame | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def refine(
    source: str | Path | Expr,
    env: Any = None,
    *,
    meta_steps: int = 30,
    inner_steps: int | None = None,
    unroll: int | None = DEFAULT_UNROLL,
    tasks_per_step: int = 2,
    meta_lr: float = 0.05,
    clip_norm: float | None = 1.0,
    objective: ObjectiveChoice = "auto",
    data_seeds: Sequence[int] | None = None,
    learn_integer_exponents: bool = False,
    verify_seeds: int = 10,
    verify_steps: int | None = None,
    references: Sequence[str] | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    write: bool = True,
    progress: ProgressFn | None = None,
    trust_code: bool = False,
) -> RefineResult:
    """Refine the constants of a symbolic loss by meta-gradient descent, verify and write it.

    Args:
        source: A loss expression (text or :class:`~loss_rl.expr.Expr`), a known loss name, a
            JSON spec file or a run folder (its verified best loss); see
            :func:`~loss_rl._refine.resolve_source`.
        env: Env preset name/path, an ``EnvPreset`` or a ``TaskConfig``; defaults to the run's
            env for a run folder.
        meta_steps: Outer Adam steps.
        inner_steps: Inner training steps per episode (default: the task's ``full_steps``, the
            length the refined loss is verified and used at). Shorter horizons are cheaper but
            biased towards losses that fit fast: measured on MNIST-1D, a 500-step horizon turned
            label smoothing into anti-smoothing that lost 17 points of test accuracy at 2000
            steps, while the 2000-step horizon kept it close to CE.
        unroll: Differentiate through the last ``unroll`` inner steps only (``None``: all).
        tasks_per_step: Episodes (fresh model seeds and minibatch orders) per outer step.
        meta_lr: Outer Adam learning rate (a relative step: constants are scaled by their size).
        clip_norm: Meta-gradient norm clip.
        objective: Query loss: ``"ce"``, ``"soft_error"`` (``1 - p_y``) or ``"auto"`` (soft
            error for accuracy-type scores, CE for ``neg_nll``; regression always uses MSE).
        data_seeds: Data seeds episodes are drawn from (default: the env's data seed, the one
            verification uses, so its test split stays unseen).
        learn_integer_exponents: Refine integer exponents too.
        verify_seeds: Fresh paired seeds for verification: 0 skips it, else at least 2 (checked
            before any training).
        verify_steps: Verification training steps (default: the task's ``full_steps``).
        references: Known losses verified alongside (default by task kind; CE always included).
        seed: Seed of the episode draws.
        out: Folder to write into instead of the default: next to a JSON source
            (``<stem>.refined.json``), ``<run>/refined/`` for a run folder, the current folder
            (``loss.refined.json``) for an expression or a known loss name. It is checked to be
            writable before any training.
        write: Write the refined loss (``False``: only return it).
        progress: Called with a :class:`~loss_rl.meta.MetaProgress` after every outer step and
            around verification.
        trust_code: For a run folder whose task builds its model with code it names
            (``task.model.factory``): allow importing it (refused otherwise).

    Returns:
        A :class:`RefineResult`.

    Raises:
        LossSpecError: for an unreadable source or a loss without learnable constants.
        ConfigError: for bad settings, an output path that cannot be written or a loss that does
            not fit the task.
    """
    # Bad settings and an unwritable destination fail here, before any training.
    check_verify_seeds(verify_seeds)
    src = resolve_source(source)
    if write:
        check_writable(src.refined_path(out), "out")
    envr = resolve_env(env, src, trust_code=trust_code)
    task, kind = envr.task, envr.task.kind
    _check_fits(src, envr)
    probe, dead, loss = _learnable_loss(src.expr, kind, learn_integer_exponents)
    inner, outer = meta_configs(
        task,
        inner_steps=inner_steps,
        unroll=unroll,
        meta_steps=meta_steps,
        tasks_per_step=tasks_per_step,
        meta_lr=meta_lr,
        clip_norm=clip_norm,
        seed=seed,
        objective=objective,
    )
    seeds = _episode_seeds(data_seeds, envr.data_seed)
    sampler = TaskEpisodes(task, seeds)
    if loss.learnable:
        history = meta_optimize(loss, sampler, inner, outer, progress)
    else:
        history = MetaHistory()

    no_grad = _no_gradient_constants(dead, loss, history)
    refined = loss.expr()
    constants = _constant_changes(probe, loss)
    verdict = check(refined, kind)
    if not verdict.ok:
        logger.warning("the refined loss %s fails a validity check: %s", refined, verdict)

    table = None
    paired: dict[str, Any] = {}
    if verify_seeds:
        if progress is not None:
            progress(MetaProgress("verify", meta_steps, meta_steps))
        table, paired = _verify_refined(
            refined, src.expr, task, envr.data_seed, verify_seeds, verify_steps, references
        )
    keys = ["refined", "unrefined", "ce" if kind is TaskKind.CLASSIFICATION else "mse"]
    summary: dict[str, Any] = {
        "source": str(src.path) if src.path is not None else str(src.expr),
        "origin": src.origin,
        "env": envr.name,
        "original": str(src.expr),
        "refined": str(refined),
        "changed": refined.key != src.expr.key,
        "check": str(verdict),
        "constants": constants,
        "no_gradient_constants": no_grad,
        **settings_digest(inner, outer, seeds),
        "meta": history.summary(),
        "verification": table_digest(table, keys),
        "refined_vs_unrefined": paired,
        **table_facts(table),
    }
    paths: dict[str, Path] = {}
    if write:
        paths = _write_refined(src, refined, kind, summary, constants, no_grad, out)
        summary["paths"] = {k: str(v) for k, v in paths.items()}
    return RefineResult(
        original=src.expr,
        refined=refined,
        kind=kind,
        env=envr.name,
        constants=constants,
        no_gradient_constants=no_grad,
        history=history,
        verification=table,
        paths=paths,
        summary=plain(summary),
    )


def _check_fits(src: LossSource, envr: ResolvedEnv) -> None:
    """Refuse a loss written for the other task kind (a regression loss on a classifier)."""
    kind = envr.task.kind
    loss_kind = src.kind or task_kind(src.expr)
    if loss_kind is not None and loss_kind is not kind:
        raise ConfigError(
            f"the loss is a {loss_kind.value} loss but env {envr.name!r} is a {kind.value} task",
            field="env",
        )


def _learnable_loss(
    expr: Expr, kind: TaskKind, learn_integer_exponents: bool
) -> tuple[SymbolicLoss, list[DeadConstant], SymbolicLoss]:
    """The loss with its constants as parameters: ``(probe, dead constants, loss to train)``.

    ``probe`` has every learnable constant; ``loss`` freezes the dead ones, which stay exactly as
    written (their meta-gradient is zero anyway).

    Raises:
        LossSpecError: if the loss has no learnable constant.
    """
    probe = SymbolicLoss(expr, kind, learn_integer_exponents=learn_integer_exponents)
    if not probe.learnable:
        frozen = [c for c in probe.constants if not c.learnable]
        hint = (
            " (its integer exponents are kept; pass learn_integer_exponents=True to refine them)"
            if frozen
            else ""
        )
        raise LossSpecError(
            f"nothing to refine: {expr} has no learnable constants{hint}", field="expression"
        )
    dead = dead_constants(probe)
    for d in dead:
        logger.warning("%s; it is kept fixed", d.describe())
    loss = SymbolicLoss(
        expr,
        kind,
        learn_integer_exponents=learn_integer_exponents,
        freeze=[d.constant.index for d in dead],
    )
    return probe, dead, loss


def _episode_seeds(data_seeds: Sequence[int] | None, verify_seed: int) -> list[int]:
    """The data seeds episodes are drawn from; warns when they are not the verification's."""
    seeds = list(data_seeds) if data_seeds is not None else [verify_seed]
    if any(s != verify_seed for s in seeds):
        logger.warning(
            "episodes use data seeds %s but verification uses data seed %d: another seed's split "
            "trains on rows of this seed's test split",
            seeds,
            verify_seed,
        )
    return seeds


def _no_gradient_constants(
    dead: Sequence[DeadConstant], loss: SymbolicLoss, history: MetaHistory
) -> list[dict[str, Any]]:
    """Constants no meta-gradient moved: dead by construction, or silent during refinement."""
    no_grad = [
        {
            "index": d.constant.index,
            "value": d.constant.value,
            "context": d.constant.context,
            "reason": d.reason,
            "message": d.describe(),
        }
        for d in dead
    ]
    if history.meta_loss and any(math.isfinite(v) for v in history.meta_loss):
        for c, g in zip(loss.learnable, history.grad_abs, strict=True):
            if g <= 0.0:
                msg = f"{c.describe()} received no meta-gradient during refinement"
                logger.warning(msg)
                no_grad.append(
                    {
                        "index": c.index,
                        "value": c.value,
                        "context": c.context,
                        "reason": "no_meta_gradient",
                        "message": msg,
                    }
                )
    return no_grad


def _constant_changes(probe: SymbolicLoss, loss: SymbolicLoss) -> list[dict[str, Any]]:
    """Per constant of the original loss: its value before and after, and whether it learned."""
    values = loss.values().detach().tolist()
    learned = dict(zip((c.index for c in loss.learnable), values, strict=True))
    return [
        {
            "index": c.index,
            "context": c.context,
            "before": c.value,
            "after": learned.get(c.index, c.value),
            "learnable": c.index in learned,
        }
        for c in probe.constants
    ]


def _verify_refined(
    refined: Expr,
    original: Expr,
    task: TaskConfig,
    data_seed: int,
    seeds: int,
    steps: int | None,
    references: Sequence[str] | None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Verify refined and unrefined side by side; also their paired difference over the seeds."""
    recorder = VerificationRecorder()
    table = verify(
        {"refined": refined, "unrefined": original},
        task,
        seeds=seeds,
        steps=steps,
        references=references,
        data_seed=data_seed,
        executor=recorder,
    )
    ref_scores = recorder.scores(refined)
    unref_scores = recorder.scores(original, 1 if refined == original else 0)
    diff, p_value = paired_difference(ref_scores, unref_scores)
    paired = {
        "diff": diff,
        "p": p_value,
        "refined": ref_scores.tolist(),
        "unrefined": unref_scores.tolist(),
    }
    return table, paired


def _write_refined(
    src: LossSource,
    refined: Expr,
    kind: TaskKind,
    summary: dict[str, Any],
    constants: list[dict[str, Any]],
    no_grad: list[dict[str, Any]],
    out: str | Path | None,
) -> dict[str, Path]:
    """Export the refined loss next to its source (a JSON spec, and a ``.py`` in a run folder)."""
    target = src.refined_path(out)
    kept = ("env", "original", "meta", "verification", "refined_vs_unrefined")
    metadata = plain(
        {
            "title": "A loss refined by meta-gradient descent",
            **{k: summary[k] for k in kept},
            "refined_from": str(src.expr),
            "constants": constants,
            "no_gradient_constants": no_grad,
        }
    )
    paths = {"json": export(refined, target, "json", kind=kind, metadata=metadata)}
    if src.origin == "run":
        paths["py"] = export(refined, target.with_suffix(".py"), "py", kind=kind, metadata=metadata)
    return paths
