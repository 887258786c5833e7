"""Unrolled, differentiable inner training of a task model (functional, ``torch.func``).

The inner loop trains the model's parameters as plain tensors with
:func:`torch.func.functional_call`, so the parameters after ``K`` optimiser steps are a function
of the loss's own parameters φ and the outer loop can differentiate through them:

.. math::  \\theta_{k+1} = \\theta_k - \\alpha\\, u(\\nabla_\\theta L_\\phi(\\theta_k; B_k)),
   \\qquad \\mathcal L_{meta}(\\phi) = \\ell(\\theta_K; D_{query})

(Finn et al., "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks", ICML 2017;
Bechtle et al., "Meta Learning via Learned Loss" (ML3), ICPR 2021).

Truncation (``unroll``): only the last ``unroll`` steps are differentiated; earlier steps run
without a graph, which bounds memory by ``unroll`` steps whatever the horizon (truncated
back-propagation through the optimisation, as EvoMAL does with its unrolled refinement).
SGD (with momentum and weight decay) and Adam are implemented exactly as ``torch.optim`` computes
them, except that Adam's ``sqrt(v)`` is taken as ``sqrt(v + 1e-30)``: the derivative of ``sqrt``
at 0 is infinite, and a parameter with a zero gradient would otherwise turn the meta-gradient
into NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from loss_rl.errors import ConfigError
from loss_rl.expr import TaskKind
from loss_rl.tasks import TrainingConfig

#: ``(logits or predictions, target) -> per-sample loss``.
LossFn = Callable[[Tensor, Tensor], Tensor]
Params = dict[str, Tensor]
_SQRT_TINY = 1e-30


@dataclass(frozen=True)
class InnerConfig:
    """How a task model is trained inside the meta-objective.

    Attributes:
        steps: Inner optimiser steps per episode (the horizon ``K``).
        unroll: Differentiate through the last ``unroll`` steps only (truncation for memory);
            ``None`` differentiates through all ``steps``.
        optimizer: ``sgd`` or ``adam`` (matching ``torch.optim``).
        lr: Inner learning rate.
        batch_size: Support minibatch size (capped at the support-set size).
        momentum: SGD momentum.
        beta1: Adam β1.
        beta2: Adam β2.
        eps: Adam ε.
        weight_decay: L2 penalty added to the gradient (torch's ``weight_decay``).
    """

    steps: int = 20
    unroll: int | None = None
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    batch_size: int = 128
    momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"must be a positive integer, got {self.steps}", field="inner_steps")
        if self.unroll is not None and not self.unroll >= 1:
            raise ConfigError(f"must be a positive integer, got {self.unroll}", field="unroll")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"use 'sgd' or 'adam', got {self.optimizer!r}", field="optimizer")
        if not self.lr > 0:
            raise ConfigError(f"must be positive, got {self.lr}", field="inner_lr")
        if self.batch_size < 1:
            raise ConfigError(f"must be positive, got {self.batch_size}", field="batch_size")

    @property
    def differentiated(self) -> int:
        """Number of steps the meta-gradient flows through."""
        return self.steps if self.unroll is None else min(self.unroll, self.steps)

    @classmethod
    def from_training(
        cls, training: TrainingConfig, steps: int | None = None, unroll: int | None = None
    ) -> InnerConfig:
        """The task's own optimiser and batch size, with the meta horizon ``steps``.

        Refined constants are meant for the task's real training, so the inner loop uses the
        same optimiser: a loss scale matters to SGD but hardly to Adam.
        """
        return cls(
            steps=int(steps if steps is not None else training.steps),
            unroll=unroll,
            optimizer=training.optimizer,
            lr=training.lr,
            batch_size=training.batch_size,
            momentum=training.momentum,
            beta1=training.beta1,
            beta2=training.beta2,
            eps=training.eps,
            weight_decay=training.weight_decay,
        )


def model_params(model: nn.Module, dtype: torch.dtype | None = None) -> Params:
    """The model's parameters as fresh detached tensors (the functional starting point)."""
    return {
        n: (p.detach().to(dtype) if dtype is not None else p.detach()).clone()
        for n, p in model.named_parameters()
    }


def unrolled_train(
    model: nn.Module,
    params: Mapping[str, Tensor],
    loss_fn: LossFn,
    batches: Sequence[tuple[Tensor, Tensor]],
    config: InnerConfig,
) -> Params:
    """Train ``params`` of ``model`` for ``len(batches)`` steps, differentiably at the end.

    Args:
        model: The architecture (its own parameters are not used or changed).
        params: Starting parameters (e.g. :func:`model_params`).
        loss_fn: ``(output, target) -> per-sample loss``; it may close over learnable tensors.
        batches: One ``(x, y)`` support minibatch per step.
        config: Optimiser; ``config.unroll`` sets how many final steps keep their graph.

    Returns:
        The parameters after the last step. The last ``config.differentiated`` steps are in the
        autograd graph, so ``torch.autograd.grad(f(result), phi)`` differentiates through them.
    """
    n = len(batches)
    first_diff = n - (n if config.unroll is None else min(config.unroll, n))
    names = list(params)
    p = [params[k].detach().requires_grad_(True) for k in names]
    state: list[dict[str, Tensor]] = [{} for _ in p]
    for step, (x, y) in enumerate(batches):
        diff = step >= first_diff
        if step == first_diff:
            # Start of the differentiated stretch: fresh leaves, optimiser state as constants.
            p = [q.detach().requires_grad_(True) for q in p]
            state = [{k: v.detach() for k, v in s.items()} for s in state]
        with torch.enable_grad():
            out = functional_call(model, dict(zip(names, p, strict=True)), (x,))
            loss = loss_fn(out, y).mean()
            grads = torch.autograd.grad(loss, p, create_graph=diff, allow_unused=True)
        new = []
        for i, (q, g) in enumerate(zip(p, grads, strict=True)):
            g = torch.zeros_like(q) if g is None else g
            upd = _update(q, g, state[i], step + 1, config)
            new.append(upd if diff else upd.detach().requires_grad_(True))
        p = new
        if not diff:
            state = [{k: v.detach() for k, v in s.items()} for s in state]
    return dict(zip(names, p, strict=True))


def _update(p: Tensor, g: Tensor, state: dict[str, Tensor], t: int, cfg: InnerConfig) -> Tensor:
    """One ``torch.optim`` step written out of place (``state`` is updated in the dict)."""
    if cfg.weight_decay:
        g = g + cfg.weight_decay * p
    if cfg.optimizer == "sgd":
        if cfg.momentum:
            buf = state.get("buf")
            buf = g if buf is None else cfg.momentum * buf + g
            state["buf"] = buf
            g = buf
        return p - cfg.lr * g
    m = state.get("m", torch.zeros_like(p))
    v = state.get("v", torch.zeros_like(p))
    m = cfg.beta1 * m + (1 - cfg.beta1) * g
    v = cfg.beta2 * v + (1 - cfg.beta2) * g * g
    state["m"], state["v"] = m, v
    bc1 = 1 - cfg.beta1**t
    bc2 = 1 - cfg.beta2**t
    denom = torch.sqrt(v + _SQRT_TINY) / (bc2**0.5) + cfg.eps
    return p - (cfg.lr / bc1) * m / denom


Objective = Literal["ce", "soft_error"]


def query_loss(
    output: Tensor, target: Tensor, kind: TaskKind, objective: Objective = "ce"
) -> Tensor:
    """The meta-objective on the query set (mean over the query rows).

    Args:
        output: Logits ``[B, C]`` or predictions ``[B]``.
        target: Class indices or regression targets.
        kind: Task kind; regression always uses MSE.
        objective: ``"ce"``: cross-entropy (ML3's task loss). ``"soft_error"``: ``1 - p_y``, the
            expected error of a prediction drawn from the model's probabilities; a smooth proxy
            of accuracy that does not reward confidence the way CE does, which matters when the
            score is accuracy and the losses compared differ in calibration (bounded losses such
            as GCE are under-confident but accurate under label noise).
    """
    if kind is TaskKind.CLASSIFICATION:
        if objective == "soft_error":
            p_y = F.softmax(output, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
            return (1.0 - p_y).mean()
        return F.cross_entropy(output, target)
    return F.mse_loss(output, target.to(output.dtype))


def meta_objective(
    model: nn.Module,
    params: Mapping[str, Tensor],
    loss_fn: LossFn,
    batches: Sequence[tuple[Tensor, Tensor]],
    query: tuple[Tensor, Tensor],
    config: InnerConfig,
    kind: TaskKind,
    objective: Objective = "ce",
) -> Tensor:
    """Query loss after unrolled inner training on ``batches`` (one episode of the meta-loss)."""
    trained = unrolled_train(model, params, loss_fn, batches, config)
    out = functional_call(model, trained, (query[0],))
    return query_loss(out, query[1], kind, objective)
