"""Validity checks run before a candidate loss is trained (cheap, on fixed probes).

Each failed check gives a stable *code* (recorded in the run ledger) and a readable message. The
descent check follows EvoMAL's and AutoLoss-Zero's filters: optimise the raw model outputs under the
candidate for a few steps and reject it if that does not move them towards the targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from loss_rl.errors import LossSpecError
from loss_rl.expr._compile import CompiledLoss, compile_loss
from loss_rl.expr._nodes import LEAVES, Expr, TaskKind, task_kind
from loss_rl.expr._probes import PROBE_CLASSES, probes

DESCENT_STEPS = 30
DESCENT_LR = 0.1
GRAD_ZERO_TOL = 1e-10


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`check`.

    Attributes:
        ok: All checks passed.
        reasons: ``(code, message)`` for every failed check; codes are stable identifiers such as
            ``"no_target"``, ``"not_finite"``, ``"zero_gradient"``, ``"wrong_direction"``.
    """

    ok: bool
    reasons: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def codes(self) -> tuple[str, ...]:
        """The failed checks' codes."""
        return tuple(c for c, _ in self.reasons)

    def __str__(self) -> str:
        if self.ok:
            return "ok"
        return "; ".join(f"{c}: {m}" for c, m in self.reasons)


def _fail(code: str, message: str) -> CheckResult:
    return CheckResult(False, ((code, message),))


def check(expr: Expr, kind: TaskKind | str | None = None) -> CheckResult:
    """Check that ``expr`` is a usable training loss for ``kind`` tasks.

    Checks, in order (later checks run only if the earlier ones pass):

    1. ``kind``: leaves of one task kind, matching ``kind``; a per-sample scalar root;
    2. ``no_prediction`` / ``no_target``: depends on both the model output and the target
       (structurally, and numerically: ``no_target`` also if changing targets changes nothing);
    3. ``not_finite``: finite value and gradient on the probes, saturated ones included;
    4. ``zero_gradient``: the gradient is not identically zero;
    5. ``wrong_direction``: minimising it raises the true-class probability (classification) or
       shrinks the absolute residual (regression).
    """
    try:
        inferred = task_kind(expr)
        kind = TaskKind(kind) if kind is not None else (inferred or TaskKind.CLASSIFICATION)
        fn = compile_loss(expr, kind)
    except (LossSpecError, ValueError) as err:
        return _fail("kind", str(err))
    leaves = [LEAVES[n] for n in expr.leaves()]
    reasons: list[tuple[str, str]] = []
    if not any(s.uses_prediction for s in leaves):
        reasons.append(("no_prediction", "the loss does not depend on the model output"))
    if not any(s.uses_target for s in leaves):
        reasons.append(("no_target", "the loss does not depend on the target"))
    if reasons:
        return CheckResult(False, tuple(reasons))

    x0, y = probes(kind)
    x = x0.clone().requires_grad_(True)
    with torch.enable_grad():
        value = fn(x, y)
        if not torch.isfinite(value).all():
            return _fail("not_finite", "the loss is not finite on some probe inputs")
        (grad,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
    if grad is None or not torch.isfinite(grad).all():
        if grad is not None:
            return _fail("not_finite", "the gradient is not finite on some probe inputs")
        return _fail("zero_gradient", "the gradient is identically zero")
    if grad.abs().max() <= GRAD_ZERO_TOL:
        return _fail("zero_gradient", "the gradient is identically zero on the probes")

    # Numerical target dependence: e.g. `p_y - p_y` uses the target only formally.
    with torch.no_grad():
        if kind is TaskKind.CLASSIFICATION:
            other = fn(x0, (y + 1) % PROBE_CLASSES)
        else:
            other = fn(x0, y + 1.0)
        if torch.allclose(other, value.detach(), rtol=1e-9, atol=1e-12):
            return _fail("no_target", "changing the targets does not change the loss")

    return _descent_check(fn, kind, x0, y)


def _descent_check(
    fn: CompiledLoss, kind: TaskKind, x0: torch.Tensor, y: torch.Tensor
) -> CheckResult:
    # Skip the saturated rows: a bounded loss legitimately has no gradient there.
    x = x0[4:].clone().requires_grad_(True)
    yy = y[4:]
    opt = torch.optim.Adam([x], lr=DESCENT_LR)

    def progress() -> float:
        with torch.no_grad():
            if kind is TaskKind.CLASSIFICATION:
                return torch.softmax(x, -1).gather(-1, yy[:, None]).mean().item()
            return -(x - yy).abs().mean().item()

    before = progress()
    with torch.enable_grad():
        for _ in range(DESCENT_STEPS):
            opt.zero_grad()
            loss = fn(x, yy).mean()
            if not torch.isfinite(loss):
                return _fail("not_finite", "the loss became non-finite while minimising it")
            loss.backward()
            opt.step()
    after = progress()
    if not after > before + 1e-3:
        what = "true-class probability" if kind is TaskKind.CLASSIFICATION else "-|residual|"
        return _fail(
            "wrong_direction",
            f"minimising the loss does not improve the {what} on the probes "
            f"({before:.3f} -> {after:.3f})",
        )
    return CheckResult(True)
