"""Optimisers over stacked parameters (dim 0 = model) that behave exactly like ``N``
independent ``torch.optim`` optimisers.

Adam and SGD update every element independently, so applying torch's single-tensor update
(``torch.optim.adam._single_tensor_adam``, ``torch.optim.sgd._single_tensor_sgd``) op for op to
the stacked tensor performs each model's own update. Models are frozen by the caller (their
gradients zeroed and parameters restored), which cannot leak into other rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from loss_rl.tasks import TrainingConfig


def _fused_available(name: str) -> bool:
    fn = getattr(torch, name, None)
    if fn is None:
        return False
    try:  # CPU fused kernels arrived in torch 2.4
        p, g = torch.zeros(2), torch.ones(2)
        if name == "_fused_adam_":
            fn(
                [p],
                [g],
                [torch.zeros(2)],
                [torch.zeros(2)],
                [],
                [torch.ones(())],
                amsgrad=False,
                lr=0.1,
                beta1=0.9,
                beta2=0.999,
                weight_decay=0.0,
                eps=1e-8,
                maximize=False,
            )
        return True
    except (RuntimeError, NotImplementedError, TypeError):
        return False


_FUSED_ADAM = _fused_available("_fused_adam_")


class StackedOptimizer:
    """Base class: ``step(params, grads)`` updates the stacked tensors in place."""

    def step(self, params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:  # pragma: no cover
        """Apply one update."""
        raise NotImplementedError

    def row_state(self, m: int) -> tuple[Tensor, ...]:  # pragma: no cover
        """Copies of model ``m``'s optimiser state (to continue it later)."""
        raise NotImplementedError

    def load_rows(
        self, params: Sequence[Tensor], rows: Sequence[Sequence[Tensor]], step: int
    ) -> None:  # pragma: no cover
        """Set every model's state from :meth:`row_state` copies, ``step`` updates in.

        Args:
            params: The stacked parameters (shapes of the state).
            rows: One :meth:`row_state` result per model, in model order.
            step: Updates every model has taken (the same for all).
        """
        raise NotImplementedError


class StackedAdam(StackedOptimizer):
    """``torch.optim.Adam`` (L2 ``weight_decay``, no amsgrad) on every model of the stack.

    By default the update runs torch's fused Adam kernel (``Adam(fused=True)``, on the CPU or
    the parameters' GPU): one pass over memory instead of seven. ``fused=False`` replays the
    single-tensor implementation (torch's default) op for op. Both are elementwise, hence
    exactly per-model.

    Args:
        params: The stacked parameters (defines the state's shapes).
        lr: Learning rate.
        betas: ``(β1, β2)``.
        eps: ε.
        weight_decay: L2 penalty added to the gradient.
        fused: Use the fused kernel when torch has it.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        fused: bool = True,
    ) -> None:
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.fused = fused and _FUSED_ADAM
        self.exp_avg = [torch.zeros_like(p, requires_grad=False) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p, requires_grad=False) for p in params]
        # The fused kernel wants its step counters on the parameters' device (as torch.optim
        # keeps them for ``fused=True``). Every tensor takes every update, so one counter serves
        # them all: one ``add_`` a step instead of a ``_foreach_add_`` over 0-dim tensors, which
        # falls back to one op per tensor (~40 µs a step, 4 % of a small population's step).
        self._step_count = torch.zeros((), dtype=torch.float32, device=params[0].device)
        self.state_steps = [self._step_count] * len(params)
        self.steps = 0

    @torch.no_grad()
    def step(self, params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
        """One Adam update of every model."""
        beta1, beta2 = self.betas
        self.steps += 1
        if self.fused:
            self._step_count.add_(1)
            torch._fused_adam_(  # type: ignore[attr-defined]
                list(params),
                list(grads),
                self.exp_avg,
                self.exp_avg_sq,
                [],
                self.state_steps,
                amsgrad=False,
                lr=self.lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=self.weight_decay,
                eps=self.eps,
                maximize=False,
            )
            return
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2 = 1 - beta2**self.steps
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        for p, g, m, v in zip(params, grads, self.exp_avg, self.exp_avg_sq, strict=True):
            grad = g if self.weight_decay == 0 else g.add(p, alpha=self.weight_decay)
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)

    def row_state(self, m: int) -> tuple[Tensor, ...]:
        """Model ``m``'s first moments, then its second moments (copies)."""
        return tuple(t[m].clone() for t in [*self.exp_avg, *self.exp_avg_sq])

    @torch.no_grad()
    def load_rows(
        self, params: Sequence[Tensor], rows: Sequence[Sequence[Tensor]], step: int
    ) -> None:
        """See :meth:`StackedOptimizer.load_rows`."""
        k = len(self.exp_avg)
        for m, row in enumerate(rows):
            for j in range(k):
                self.exp_avg[j][m] = row[j]
                self.exp_avg_sq[j][m] = row[k + j]
        # Bias correction depends on the update count: both the fused kernel's shared counter
        # and the single-tensor path's count continue from ``step``.
        self._step_count.fill_(float(step))
        self.steps = step


class StackedSGD(StackedOptimizer):
    """``torch.optim.SGD`` (momentum, dampening 0, Nesterov, L2 decay) on every model.

    Replays torch's single-tensor SGD op for op (elementwise, hence exactly per-model).

    Args:
        params: The stacked parameters.
        lr: Learning rate.
        momentum: Momentum factor.
        nesterov: Nesterov momentum.
        weight_decay: L2 penalty added to the gradient.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.weight_decay = weight_decay
        self.buf: list[Tensor] | None = None

    @torch.no_grad()
    def step(self, params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
        """One SGD update of every model."""
        first = self.buf is None
        if first and self.momentum != 0:
            self.buf = []
        for k, (p, g) in enumerate(zip(params, grads, strict=True)):
            grad = g if self.weight_decay == 0 else g.add(p, alpha=self.weight_decay)
            if self.momentum != 0:
                assert self.buf is not None
                if first:
                    self.buf.append(grad.detach().clone())
                else:
                    self.buf[k].mul_(self.momentum).add_(grad, alpha=1.0)
                buf = self.buf[k]
                grad = grad.add(buf, alpha=self.momentum) if self.nesterov else buf
            p.add_(grad, alpha=-self.lr)

    def row_state(self, m: int) -> tuple[Tensor, ...]:
        """Model ``m``'s momentum buffers (copies; empty before the first update or without)."""
        return () if self.buf is None else tuple(b[m].clone() for b in self.buf)

    @torch.no_grad()
    def load_rows(
        self, params: Sequence[Tensor], rows: Sequence[Sequence[Tensor]], step: int
    ) -> None:
        """See :meth:`StackedOptimizer.load_rows`."""
        if self.momentum == 0 or step == 0:
            return  # no buffers yet: the next update is a first one, as in a fresh run
        self.buf = [torch.zeros_like(p, requires_grad=False) for p in params]
        for m, row in enumerate(rows):
            for b, value in zip(self.buf, row, strict=True):
                b[m] = value


def make_optimizer(params: Sequence[Tensor], cfg: TrainingConfig) -> StackedOptimizer:
    """The stacked optimiser described by ``cfg``."""
    if cfg.optimizer == "adam":
        return StackedAdam(params, cfg.lr, (cfg.beta1, cfg.beta2), cfg.eps, cfg.weight_decay)
    return StackedSGD(params, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay)


def make_torch_optimizer(
    parameters: list[torch.nn.Parameter], cfg: TrainingConfig
) -> torch.optim.Optimizer:
    """The plain ``torch.optim`` optimiser described by ``cfg`` (for the reference loop)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(
            parameters,
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.SGD(
        parameters,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )
