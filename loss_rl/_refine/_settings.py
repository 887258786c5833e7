"""The settings shared by ``refine`` and ``meta_train``: inner and outer loop configs, query loss.

Both entry points train the learnable loss with the task's own optimiser over an unrolled inner
horizon and update it with Adam in an outer loop; they build those configs, and report them in
their summaries, the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from loss_rl.errors import ConfigError
from loss_rl.meta import InnerConfig, MetaProgress, OuterConfig
from loss_rl.tasks import TaskConfig

#: Called with a :class:`~loss_rl.meta.MetaProgress` after every outer step and around
#: verification.
ProgressFn = Callable[[MetaProgress], None]
#: Default number of inner steps differentiated through (the last ones of the horizon).
DEFAULT_UNROLL = 20
ObjectiveChoice = Literal["auto", "ce", "soft_error"]


MAX_VERIFY_SEEDS = 1000
"""Most fresh seeds of a verification (their list is built up front: 2**32 ran out of memory)."""


def check_verify_seeds(seeds: int) -> None:
    """Verification seeds: 0 skips verification, else 2 (a paired test needs 2) to 1000.

    Checked before any training: a bad count found at verification time would cost the whole
    refinement or meta-training.

    Raises:
        ConfigError: for 1, a negative count, more than :data:`MAX_VERIFY_SEEDS` or a
            non-integer.
    """
    ok = isinstance(seeds, int) and not isinstance(seeds, bool)
    if not ok or (seeds != 0 and not 2 <= seeds <= MAX_VERIFY_SEEDS):
        raise ConfigError(
            f"must be 0 (skip verification) or 2 to {MAX_VERIFY_SEEDS} fresh seeds (the paired "
            f"test needs 2), got {seeds!r}",
            field="verify_seeds",
        )


def resolve_objective(choice: str, task: TaskConfig) -> Literal["ce", "soft_error"]:
    """``auto``: the smooth error ``1 - p_y`` for accuracy-type scores, CE for ``neg_nll``.

    Measured on noisy digits: with CE as the query loss, refining GCE drives q *down* (towards
    CE: confident models have a lower validation CE even when they are less accurate); with
    ``1 - p_y`` q rises towards the robust region, as the accuracy wants.

    Raises:
        ConfigError: for an unknown choice.
    """
    if choice == "auto":
        return "ce" if task.score_metric == "neg_nll" else "soft_error"
    if choice not in ("ce", "soft_error"):
        raise ConfigError(f"use 'auto', 'ce' or 'soft_error', got {choice!r}", field="objective")
    return choice  # type: ignore[return-value]


def meta_configs(
    task: TaskConfig,
    *,
    inner_steps: int | None,
    unroll: int | None,
    meta_steps: int,
    tasks_per_step: int,
    meta_lr: float,
    clip_norm: float | None,
    seed: int,
    objective: str,
) -> tuple[InnerConfig, OuterConfig]:
    """The inner loop (the task's training, ``inner_steps`` long) and the outer loop.

    Args:
        task: The task; its training config sets the inner optimiser and default horizon
            (``full_steps``, the length the learned loss is verified and used at).
        inner_steps: Inner steps per episode (``None``: the task's ``full_steps``).
        unroll: Differentiate through the last ``unroll`` inner steps only (``None``: all).
        meta_steps: Outer Adam steps.
        tasks_per_step: Episodes per outer step.
        meta_lr: Outer Adam learning rate.
        clip_norm: Meta-gradient norm clip.
        seed: Seed of the episode draws.
        objective: Query loss choice (see :func:`resolve_objective`).

    Raises:
        ConfigError: for bad settings.
    """
    horizon = inner_steps if inner_steps is not None else task.training.full_steps
    inner = InnerConfig.from_training(task.training, horizon, unroll)
    outer = OuterConfig(
        meta_steps=meta_steps,
        tasks_per_step=tasks_per_step,
        lr=meta_lr,
        clip_norm=clip_norm,
        seed=seed,
        objective=resolve_objective(objective, task),
    )
    return inner, outer


def settings_digest(
    inner: InnerConfig, outer: OuterConfig, data_seeds: Sequence[int]
) -> dict[str, Any]:
    """The ``inner`` and ``outer`` entries of a summary."""
    return {
        "inner": {
            "steps": inner.steps,
            "unroll": inner.unroll,
            "optimizer": inner.optimizer,
            "lr": inner.lr,
            "batch_size": inner.batch_size,
        },
        "outer": {
            "meta_steps": outer.meta_steps,
            "tasks_per_step": outer.tasks_per_step,
            "lr": outer.lr,
            "clip_norm": outer.clip_norm,
            "seed": outer.seed,
            "data_seeds": data_seeds,
            "objective": outer.objective,
        },
    }
