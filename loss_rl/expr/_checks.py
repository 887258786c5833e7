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

#: Adam steps and learning rate of the descent check, on the probe outputs themselves.
DESCENT_STEPS = 30
DESCENT_LR = 0.1
#: Progress the descent check asks for (see :func:`descent_progress`).
DESCENT_MIN_PROGRESS = 1e-3
#: The probes' first rows are saturated (see :func:`~loss_rl.expr.probes`); the descent check
#: leaves them out.
SATURATED_PROBES = 4
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


def check(expr: Expr, kind: TaskKind | str | None = None, *, descent: bool = True) -> CheckResult:
    """Check that ``expr`` is a usable training loss for ``kind`` tasks.

    Checks, in order (later checks run only if the earlier ones pass):

    1. ``kind``: leaves of one task kind, matching ``kind``; a per-sample scalar root;
    2. ``no_prediction`` / ``no_target``: depends on both the model output and the target
       (structurally, and numerically: ``no_target`` also if changing targets changes nothing);
    3. ``not_finite``: finite value and gradient on the probes, saturated ones included;
    4. ``zero_gradient``: the gradient is not identically zero;
    5. ``wrong_direction``: minimising it raises the true-class probability (classification) or
       shrinks the absolute residual (regression).

    Args:
        expr: The candidate loss.
        kind: Task kind (inferred from the leaves when ``None``).
        descent: Run check 5 (the descent check, the costly one). ``False`` stops after check
            4, for a caller that runs the descent check of many candidates at once
            (:func:`loss_rl.training.check_batch`).
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

    if not descent:
        return CheckResult(True)
    return _descent_check(fn, kind)


def descent_probes(kind: TaskKind) -> tuple[torch.Tensor, torch.Tensor]:
    """The probes the descent check starts from: the saturated rows left out.

    A bounded loss legitimately has no gradient on a saturated row.
    """
    x0, y = probes(kind)
    return x0[SATURATED_PROBES:], y[SATURATED_PROBES:]


def descent_progress(x: torch.Tensor, y: torch.Tensor, kind: TaskKind) -> torch.Tensor:
    """What the descent check must raise: the mean true-class probability (classification) or
    ``-mean |residual|`` (regression), over the last axis of probes (one value per leading row).
    """
    if kind is TaskKind.CLASSIFICATION:
        return torch.softmax(x, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(-1)
    return -(x - y).abs().mean(-1)


def descent_verdict(kind: TaskKind, before: float, after: float, finite: bool) -> CheckResult:
    """The descent check's verdict from its progress measure before and after minimising.

    Args:
        kind: Task kind.
        before: :func:`descent_progress` at the probes.
        after: The same after :data:`DESCENT_STEPS` Adam steps on the loss.
        finite: Whether the loss stayed finite at every step.
    """
    if not finite:
        return _fail("not_finite", "the loss became non-finite while minimising it")
    if not after > before + DESCENT_MIN_PROGRESS:
        what = "true-class probability" if kind is TaskKind.CLASSIFICATION else "-|residual|"
        return _fail(
            "wrong_direction",
            f"minimising the loss does not improve the {what} on the probes "
            f"({before:.3f} -> {after:.3f})",
        )
    return CheckResult(True)


def _descent_check(fn: CompiledLoss, kind: TaskKind) -> CheckResult:
    x0, yy = descent_probes(kind)
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=DESCENT_LR)
    with torch.no_grad():
        before = float(descent_progress(x, yy, kind))
    with torch.enable_grad():
        for _ in range(DESCENT_STEPS):
            opt.zero_grad()
            loss = fn(x, yy).mean()
            if not torch.isfinite(loss):
                return descent_verdict(kind, before, before, finite=False)
            loss.backward()
            opt.step()
    with torch.no_grad():
        after = float(descent_progress(x, yy, kind))
    return descent_verdict(kind, before, after, finite=True)
