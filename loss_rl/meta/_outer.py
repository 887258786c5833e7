"""The outer loop: Adam on the loss's parameters φ over a distribution of tasks.

Each outer step draws ``tasks_per_step`` episodes, trains a fresh model on each with the current
loss (unrolled, :mod:`loss_rl.meta._unroll`), scores the trained model on the episode's query set,
and moves φ down the averaged meta-gradient (Finn et al. 2017, MAML; Bechtle et al. 2021, ML3;
Raymond et al. 2023, EvoMAL).

Guards, because an unrolled meta-gradient can explode: the gradient norm is clipped (and the clip
logged); a step whose meta-loss or meta-gradient is NaN/inf is skipped and logged, leaving φ and
the optimiser state untouched; a step that would make φ non-finite is undone and logged. Nothing
becomes NaN silently.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from loss_rl.errors import ConfigError
from loss_rl.meta._episodes import EpisodeSampler
from loss_rl.meta._unroll import InnerConfig, Objective, meta_objective

logger = logging.getLogger(__name__)


class LearnableLoss(Protocol):
    """A loss module with parameters φ and a per-sample form."""

    def parameters(self) -> Any:  # pragma: no cover - protocol
        """The learnable parameters φ."""
        ...

    def per_sample(self, input: Tensor, target: Tensor) -> Tensor:  # pragma: no cover
        """Per-sample loss."""
        ...


@dataclass(frozen=True)
class OuterConfig:
    """Outer (meta) optimisation.

    Attributes:
        meta_steps: Outer Adam steps.
        tasks_per_step: Episodes averaged per outer step (the meta-batch).
        lr: Outer Adam learning rate.
        clip_norm: Clip the meta-gradient's global norm to this (``None``: no clipping).
        seed: Seed of the episode draws.
        eval_episodes: Fixed episodes on which the meta-loss is measured before and after (0: no
            measurement). Fixed draws make "did the meta-loss go down" a paired comparison.
        objective: Query loss: ``"ce"`` or ``"soft_error"`` (see
            :func:`loss_rl.meta._unroll.query_loss`); regression always uses MSE.
    """

    meta_steps: int = 50
    tasks_per_step: int = 2
    lr: float = 0.05
    clip_norm: float | None = 1.0
    seed: int = 0
    eval_episodes: int = 0
    objective: Objective = "ce"

    def __post_init__(self) -> None:
        if self.meta_steps < 0:
            raise ConfigError(f"must be >= 0, got {self.meta_steps}", field="meta_steps")
        if self.tasks_per_step < 1:
            raise ConfigError(
                f"must be positive, got {self.tasks_per_step}", field="tasks_per_step"
            )
        if not self.lr > 0:
            raise ConfigError(f"must be positive, got {self.lr}", field="meta_lr")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConfigError(f"must be positive, got {self.clip_norm}", field="clip_norm")
        if self.objective not in ("ce", "soft_error"):
            raise ConfigError(
                f"use 'ce' or 'soft_error', got {self.objective!r}", field="objective"
            )


@dataclass(frozen=True)
class MetaProgress:
    """Snapshot handed to the ``progress`` callback after every outer step.

    Attributes:
        phase: ``"meta"`` during the outer loop, ``"verify"`` while verifying.
        step: Outer steps done.
        total: Outer steps planned.
        meta_loss: Mean query loss of this step's episodes (NaN if skipped).
        grad_norm: Meta-gradient norm before clipping (NaN if skipped).
        clipped: The gradient was clipped.
        skipped: The step was skipped (non-finite loss or gradient).
        seconds: Wall time so far.
    """

    phase: str
    step: int
    total: int
    meta_loss: float = math.nan
    grad_norm: float = math.nan
    clipped: bool = False
    skipped: bool = False
    seconds: float = 0.0


@dataclass
class MetaHistory:
    """Record of an outer optimisation.

    Attributes:
        meta_loss: Mean query loss per outer step (NaN where skipped).
        grad_norm: Meta-gradient norm per step before clipping (NaN where skipped).
        clipped: Steps whose gradient was clipped.
        skipped: Steps skipped for a non-finite meta-loss or gradient, with the reason.
        grad_abs: Sum over steps of ``|∂L_meta/∂φ|`` per flattened parameter (which parameters
            ever received a gradient).
        eval_before: Meta-loss on the fixed evaluation episodes before training (NaN if none).
        eval_after: Same after training.
        seconds: Wall time of the outer loop.
    """

    meta_loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    clipped: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    grad_abs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eval_before: float = math.nan
    eval_after: float = math.nan
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Plain-data digest (JSON-able)."""
        finite = [v for v in self.meta_loss if math.isfinite(v)]
        k = max(1, len(finite) // 5)
        return {
            "meta_steps": len(self.meta_loss),
            "meta_loss_first": float(np.mean(finite[:k])) if finite else math.nan,
            "meta_loss_last": float(np.mean(finite[-k:])) if finite else math.nan,
            "eval_before": self.eval_before,
            "eval_after": self.eval_after,
            "clipped_steps": len(self.clipped),
            "skipped_steps": [{"step": s, "reason": r} for s, r in self.skipped],
            "seconds": self.seconds,
        }


def _params(loss: nn.Module) -> list[Tensor]:
    return [p for p in loss.parameters() if p.requires_grad]


def evaluate_meta_loss(
    loss: LearnableLoss,
    sampler: EpisodeSampler,
    inner: InnerConfig,
    episodes: int,
    seed: int,
    objective: Objective = "ce",
) -> float:
    """Mean query loss of ``loss`` over ``episodes`` fixed draws (no parameter update).

    Args:
        loss: The loss (its parameters are not changed).
        sampler: Task distribution.
        inner: Inner training.
        episodes: Number of episodes.
        seed: Seed of the draws (equal seeds give identical episodes).
        objective: Query loss (see :class:`OuterConfig`).
    """
    rng = np.random.default_rng(seed)
    # Only the value is needed: one differentiated step keeps the graph (and memory) minimal.
    cfg = replace(inner, unroll=1)
    vals = []
    for _ in range(episodes):
        ep = sampler.sample(rng, cfg)
        v = meta_objective(
            ep.model, ep.params, loss.per_sample, ep.batches, ep.query, cfg, ep.kind, objective
        )
        vals.append(float(v.detach()))
    return float(np.mean(vals)) if vals else math.nan


def meta_optimize(
    loss: LearnableLoss,
    sampler: EpisodeSampler,
    inner: InnerConfig,
    outer: OuterConfig,
    progress: Callable[[MetaProgress], None] | None = None,
) -> MetaHistory:
    """Learn the loss's parameters by differentiating through inner training.

    Args:
        loss: A module with learnable parameters and ``per_sample(input, target)`` (e.g.
            :class:`~loss_rl.meta.SymbolicLoss`, :class:`~loss_rl.meta.NeuralLoss`); updated in
            place.
        sampler: The task distribution (see :mod:`loss_rl.meta._episodes`).
        inner: Inner training (horizon, truncation, optimiser).
        outer: Outer optimisation.
        progress: Called with a :class:`MetaProgress` after every outer step.

    Returns:
        The :class:`MetaHistory`.
    """
    params = _params(loss)  # type: ignore[arg-type]
    history = MetaHistory(grad_abs=np.zeros(sum(p.numel() for p in params)))
    eval_seed = outer.seed + 1_000_003  # fixed evaluation draws, disjoint from training draws
    if outer.eval_episodes:
        history.eval_before = evaluate_meta_loss(
            loss, sampler, inner, outer.eval_episodes, eval_seed, outer.objective
        )
    if not params or outer.meta_steps == 0:
        history.eval_after = history.eval_before
        return history
    opt = torch.optim.Adam(params, lr=outer.lr)
    rng = np.random.default_rng(outer.seed)
    t0 = time.perf_counter()
    for step in range(1, outer.meta_steps + 1):
        acc = [torch.zeros_like(p) for p in params]
        values: list[float] = []
        reason = ""
        for _ in range(outer.tasks_per_step):
            ep = sampler.sample(rng, inner)
            value = meta_objective(
                ep.model,
                ep.params,
                loss.per_sample,
                ep.batches,
                ep.query,
                inner,
                ep.kind,
                outer.objective,
            )
            values.append(float(value.detach()))
            if not torch.isfinite(value):
                reason = f"non-finite meta-loss ({values[-1]}) on episode {ep.label}"
                break
            # One backward per episode: memory holds one unrolled graph at a time.
            grads = torch.autograd.grad(value / outer.tasks_per_step, params, allow_unused=True)
            bad = [i for i, g in enumerate(grads) if g is not None and not torch.isfinite(g).all()]
            if bad:
                reason = f"non-finite meta-gradient on episode {ep.label}"
                break
            for a, g in zip(acc, grads, strict=True):
                if g is not None:
                    a += g
        if reason:
            history.meta_loss.append(math.nan)
            history.grad_norm.append(math.nan)
            history.skipped.append((step, reason))
            logger.warning(
                "outer step %d skipped: %s; the loss's parameters are unchanged", step, reason
            )
            _report(progress, step, outer, history, t0)
            continue
        norm = float(torch.sqrt(sum((a * a).sum() for a in acc)))
        history.meta_loss.append(float(np.mean(values)))
        history.grad_norm.append(norm)
        history.grad_abs += torch.cat([a.reshape(-1) for a in acc]).abs().double().numpy()
        if outer.clip_norm is not None and norm > outer.clip_norm:
            scale = outer.clip_norm / norm
            acc = [a * scale for a in acc]
            history.clipped.append(step)
            logger.info(
                "outer step %d: meta-gradient norm %.3g clipped to %.3g",
                step,
                norm,
                outer.clip_norm,
            )
        before = [p.detach().clone() for p in params]
        state = {
            k: {n: (v.clone() if isinstance(v, Tensor) else v) for n, v in s.items()}
            for k, s in opt.state.items()
        }
        for p, a in zip(params, acc, strict=True):
            p.grad = a.to(p.dtype)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if not all(torch.isfinite(p).all() for p in params):
            with torch.no_grad():
                for p, b in zip(params, before, strict=True):
                    p.copy_(b)
            opt.state.clear()
            opt.state.update(state)
            history.skipped.append((step, "the update made the parameters non-finite"))
            logger.warning(
                "outer step %d undone: the update made the loss's parameters non-finite", step
            )
        _report(progress, step, outer, history, t0)
    history.seconds = time.perf_counter() - t0
    if outer.eval_episodes:
        history.eval_after = evaluate_meta_loss(
            loss, sampler, inner, outer.eval_episodes, eval_seed, outer.objective
        )
    return history


def _report(
    progress: Callable[[MetaProgress], None] | None,
    step: int,
    outer: OuterConfig,
    history: MetaHistory,
    t0: float,
) -> None:
    if progress is None:
        return
    progress(
        MetaProgress(
            "meta",
            step,
            outer.meta_steps,
            history.meta_loss[-1],
            history.grad_norm[-1],
            bool(history.clipped and history.clipped[-1] == step),
            bool(history.skipped and history.skipped[-1][0] == step),
            time.perf_counter() - t0,
        )
    )
