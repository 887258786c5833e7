"""A cheap, deterministic evaluator for tests and demos (as SB3 ships tiny test envs).

:class:`CheapEvaluator` scores a loss in milliseconds: it runs the validity checks, then trains a
*linear* model for a few full-batch normalised gradient steps on a fixed synthetic problem with
corrupted training targets, and returns a smooth score on clean validation data:

- classification: 4 Gaussian classes in 6 dimensions, 40 % symmetric training-label noise;
  score = mean probability of the true class on clean validation data (accuracy in ``metrics``);
- regression: a linear target with 20 % gross outliers in the training targets;
  score = ``1 / (1 + MSE)`` on clean validation data.

It records every call (batch sizes and contexts) so tests can assert how the env batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from loss_rl.errors import LossSpecError
from loss_rl.evaluation import EvalResult, Status
from loss_rl.expr import LEAVES, Expr, TaskKind, check, compile_loss, known_loss

_CLASSES, _FEATURES, _SAMPLES = 4, 6, 96


class CheapEvaluator:
    """Deterministic evaluator of loss expressions on a tiny synthetic task.

    Args:
        kind: Task kind of the candidates.
        steps: Full-batch normalised gradient-descent steps of the linear model.
        lr: Length of every step in weight space.
        noise: Fraction of corrupted training targets.
        seed: Seed of the synthetic data.
        cache: Reuse results by canonical key (a hit has ``source="cache_key"``, so
            ``result.trained`` is ``False``), like the real evaluator's store.
        full_check: Run :func:`loss_rl.expr.check` (about 20 ms); ``False`` runs only the
            structural and finiteness checks (about 1 ms) and lets training judge the rest.

    Attributes:
        calls: Batch size of every :meth:`evaluate` call.
        contexts: The context passed with every call.
        n_trainings: Evaluations that trained (not cached, not rejected).
    """

    def __init__(
        self,
        kind: TaskKind | str = TaskKind.CLASSIFICATION,
        *,
        steps: int = 15,
        lr: float = 0.3,
        noise: float = 0.4,
        seed: int = 0,
        cache: bool = True,
        full_check: bool = True,
    ) -> None:
        self.kind = TaskKind(kind)
        self.steps = steps
        self.lr = lr
        self.cache = cache
        self.full_check = full_check
        self.seed = seed
        self.calls: list[int] = []
        self.contexts: list[list[dict[str, Any]]] = []
        self.n_trainings = 0
        self._results: dict[str, EvalResult] = {}
        self._reference: float | None = None
        self._data = _make_data(self.kind, noise, seed)

    @property
    def n_calls(self) -> int:
        """Number of :meth:`evaluate` calls so far."""
        return len(self.calls)

    @property
    def reference_score(self) -> float:
        """Score of the reference loss (CE, or MSE for regression); not counted as a call."""
        if self._reference is None:
            name = "ce" if self.kind is TaskKind.CLASSIFICATION else "mse"
            result = self._evaluate_one(known_loss(name))
            assert result.score is not None
            self._reference = result.score
        return self._reference

    def evaluate(
        self, candidates: Sequence[Expr], context: Sequence[dict[str, Any]] | None = None
    ) -> list[EvalResult]:
        """Evaluate candidates in order; never raises for a bad candidate."""
        self.calls.append(len(candidates))
        self.contexts.append([dict(c) for c in context] if context is not None else [])
        out = []
        for expr in candidates:
            key = expr.key
            hit = self._results.get(key) if self.cache else None
            if hit is not None:
                source = hit.source if hit.source == "check" else "cache_key"
                out.append(dataclasses.replace(hit, expression=str(expr), source=source))
                continue
            result = self._evaluate_one(expr)
            self.n_trainings += int(result.trained)
            self._results[key] = result
            out.append(result)
        return out

    # -----------------------------------------------------------------------------------------
    def _evaluate_one(self, expr: Expr) -> EvalResult:
        # One torch thread: tiny tensors, and two threads collapse on a shared machine.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._score(expr)
        finally:
            torch.set_num_threads(threads)

    def _score(self, expr: Expr) -> EvalResult:
        key, text = expr.key, str(expr)
        base = {"key": key, "expression": text, "fidelity": self.steps, "seeds": (self.seed,)}
        reason = self._check(expr)
        if reason:
            return EvalResult(
                score=None, status=Status.REJECTED, source="check", reason=reason, **base
            )
        fn = compile_loss(expr, self.kind)
        x, y, xv, yv = self._data
        n_out = _CLASSES if self.kind is TaskKind.CLASSIFICATION else 1
        w = torch.zeros(x.shape[1], n_out, requires_grad=True)
        b = torch.zeros(n_out, requires_grad=True)
        with torch.enable_grad():
            for _ in range(self.steps):
                out = x @ w + b
                loss = fn(out if n_out > 1 else out[:, 0], y).mean()
                if not torch.isfinite(loss):
                    return self._diverged("the loss became non-finite", base)
                gw, gb = torch.autograd.grad(loss, (w, b))
                norm = torch.sqrt(gw.square().sum() + gb.square().sum())
                if not torch.isfinite(norm):
                    return self._diverged("the gradient became non-finite", base)
                # Normalised gradient descent: every step moves the weights by `lr`, so a loss
                # and its multiples train alike (as the real evaluator's fingerprint assumes).
                with torch.no_grad():
                    scale = self.lr / (norm + 1e-12)
                    w -= scale * gw
                    b -= scale * gb
        with torch.no_grad():
            out = xv @ w + b
            if not torch.isfinite(out).all():
                return self._diverged("the outputs became non-finite", base)
            if self.kind is TaskKind.CLASSIFICATION:
                p = torch.softmax(out, -1)
                p_y = p.gather(-1, yv[:, None]).mean().item()
                acc = (out.argmax(-1) == yv).float().mean().item()
                score, metrics = p_y, {"p_y": p_y, "accuracy": acc}
            else:
                mse = ((out[:, 0] - yv) ** 2).mean().item()
                score, metrics = 1.0 / (1.0 + mse), {"mse": mse}
        return EvalResult(score=float(score), status=Status.OK, metrics=metrics, **base)

    @staticmethod
    def _diverged(reason: str, base: dict[str, Any]) -> EvalResult:
        return EvalResult(score=None, status=Status.DIVERGED, reason=reason, **base)

    def _check(self, expr: Expr) -> str:
        if self.full_check:
            result = check(expr, self.kind)
            return "" if result.ok else str(result)
        try:
            fn = compile_loss(expr, self.kind)
        except LossSpecError as err:
            return f"kind: {err}"
        leaves = [LEAVES[n] for n in expr.leaves()]
        if not any(s.uses_prediction for s in leaves) or not any(s.uses_target for s in leaves):
            return "no_target: the loss must depend on the model output and the target"
        x, y, _, _ = self._data
        if self.kind is TaskKind.CLASSIFICATION:
            out = x[:8] @ torch.ones(x.shape[1], _CLASSES)
        else:
            out = x[:8].sum(-1)
        out.requires_grad_(True)
        with torch.enable_grad():
            value = fn(out, y[:8])
            if not torch.isfinite(value).all():
                return "not_finite: the loss is not finite"
            (grad,) = torch.autograd.grad(value.sum(), out, allow_unused=True)
        if grad is None or not torch.isfinite(grad).all() or grad.abs().max() == 0:
            return "zero_gradient: no finite, nonzero gradient"
        return ""


def _make_data(
    kind: TaskKind, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = _SAMPLES
    if kind is TaskKind.CLASSIFICATION:
        centers = torch.randn(_CLASSES, _FEATURES, generator=g) * 1.2
        y = torch.randint(0, _CLASSES, (2 * n,), generator=g)
        x = centers[y] + torch.randn(2 * n, _FEATURES, generator=g)
        noisy = y[:n].clone()
        flip = torch.rand(n, generator=g) < noise
        shift = torch.randint(1, _CLASSES, (n,), generator=g)
        noisy[flip] = (noisy[flip] + shift[flip]) % _CLASSES
        return x[:n], noisy, x[n:], y[n:]
    beta = torch.randn(_FEATURES, generator=g)
    x = torch.randn(2 * n, _FEATURES, generator=g)
    y = x @ beta + 0.1 * torch.randn(2 * n, generator=g)
    noisy = y[:n].clone()
    flip = torch.rand(n, generator=g) < noise / 2
    noisy[flip] += 10.0 * torch.sign(torch.randn(int(flip.sum()), generator=g))
    return x[:n], noisy, x[n:], y[n:]
