"""PopulationLoss reproduces compile_loss: per-model values and dL/dZ of autograd."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loss_rl.expr import KNOWN_LOSSES, Expr, TaskKind, compile_loss, parse
from loss_rl.training import PopulationLoss, structure
from tests.expr.strategies import exprs

C, B = 5, 12
# Every operator, guard and special case of the compiler appears at least once.
EXTRA = [
    "(1 - p_y^0.5) / 0.5",
    "-(1 - p_y)^0.5 * log_p_y",
    "sqrt(sum_c(square(p - t)))",
    "tanh(-log_p_y)",
    "min(-log_p_y, 2)",
    "max(-log_p_y, 1 - p_y)",
    "recip(p_y + 0.1)",
    "sum_c(sigmoid(z) * t)",
    "-mean_c(t * log(sigmoid(z)))",
    "softplus(-log_p_y) - log(2)",
    "exp(-p_y)",
    "(1 - p_y)^-2",
    "p_y^p_y",
    "sum_c(p^1.5)",
    "-log(1 - p_y + 0.5)",
    "sum_c(abs(z - t) / (1 + p))",
    "mean_c(max(z, t))",
    "2^(-log_p_y)",
    "sum_c(p) * 3",
    "exp(3) * p_y",
    "log(p_y) * 2 + sum_c(log(p) * t)",
    "exp(50 * p_y)",
    "log(p_y - 1)",
    "sqrt(p_y - p_y)",
    "recip(1 - p_y - (1 - p_y))",
    "p_y / (p_y - p_y)",
    "sum_c(t^3)",
    "mean_c(z)^2",
    "sum_c(z^-1)",
    "min(p_y, p_y)",
    "max(sum_c(t), 1)",
    "sum_c(exp(z * 40))",
    "p_y^0",
    "(p_y + 1)^(sum_c(p * z))",
    "-log_p_y",
    "-log(p_y)",
]
REGRESSION = [
    "square(pred) - 2 * pred * target",
    "abs(residual)^1.5",
    "log(1 + square(residual))",
    "max(residual, 0) + min(residual, 0)^2",
    "sqrt(abs(residual))",
    "recip(1 + abs(residual))",
]


def _reference(
    exprs_: list[Expr], kind: TaskKind, z: torch.Tensor, y: torch.Tensor, reps: int
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Per-model loss and dL/dZ from compile_loss + autograd, in PopulationLoss's layout."""
    pl = PopulationLoss(exprs_, reps, kind, C if kind is TaskKind.CLASSIFICATION else None, z.dtype)
    losses, grads = [], []
    for pos, cand in enumerate(pl.order):
        fn = compile_loss(exprs_[cand], kind)
        for r in range(reps):
            zz = z[pos * reps + r].clone().requires_grad_(True)
            value = fn(zz, y[pos * reps + r]).mean()
            if value.requires_grad:
                (g,) = torch.autograd.grad(value, zz, allow_unused=True)
            else:  # the loss ignores the model output
                g = None
            g = torch.zeros_like(zz) if g is None else g
            losses.append(value.detach())
            grads.append(g)
    return torch.stack(losses), torch.stack(grads), pl.order


def _close(a: torch.Tensor, b: torch.Tensor, scale: float = 1.0) -> bool:
    # Rounding noise grows with the loss's magnitude (e.g. cancellations in sum_c(p) = 1); the
    # comparisons run in float64 so that amplified rounding (x^700) stays far below the bar.
    return bool(torch.allclose(a, b, rtol=1e-6, atol=1e-9 * scale, equal_nan=True))


def _check(exprs_: list[Expr], kind: TaskKind, z: torch.Tensor, y: torch.Tensor, reps: int) -> None:
    z = z.double()
    if kind is TaskKind.REGRESSION:
        y = y.double()
    pl = PopulationLoss(
        exprs_, reps, kind, C if kind is TaskKind.CLASSIFICATION else None, torch.float64
    )
    got = pl(z, y)
    assert pl.fused_failures == 0 and not pl.broken  # the fast path ran
    want_loss, want_grad, _ = _reference(exprs_, kind, z, y, reps)
    for m in range(z.shape[0]):
        label = str(exprs_[pl.order[m // reps]])
        assert _close(got.loss[m], want_loss[m]), (label, got.loss[m], want_loss[m])
        if torch.isfinite(want_grad[m]).all() and torch.isfinite(want_loss[m]):
            scale = 1 + float(want_loss[m].abs()) + float(want_grad[m].abs().max()) * B
            assert _close(got.grad[m], want_grad[m], scale), label


def _inputs(n: int, scale: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, B, C, generator=g) * scale
    z[0, 0] = torch.tensor([40.0, -40.0, 0.0, 0.0, 0.0])  # p_y underflows: guards become active
    y = torch.randint(0, C, (n, B), generator=g)
    return z, y


def test_known_and_extra_classification_losses_with_shared_groups() -> None:
    cls = [k.expr() for k in KNOWN_LOSSES.values() if k.kind is TaskKind.CLASSIFICATION]
    extra = [parse(s) for s in EXTRA]
    variants = [KNOWN_LOSSES["gce"].expr(q=q) for q in (0.3, 0.9)] + [
        KNOWN_LOSSES["focal"].expr(gamma=g) for g in (0.5, 3.0)
    ]
    exprs_ = cls + extra + variants
    reps = 2
    z, y = _inputs(len(exprs_) * reps)
    pl = PopulationLoss(exprs_, reps, TaskKind.CLASSIFICATION, C)
    assert pl.num_groups < len(exprs_)  # constant-only differences share a pass
    _check(exprs_, TaskKind.CLASSIFICATION, z, y, reps)


def test_expanded_targets_shared_by_all_models() -> None:
    exprs_ = [parse(s) for s in ("sum_c(square(p - t))", "-log_p_y", "sum_c(t * z)")]
    z, _ = _inputs(3)
    y = torch.randint(0, C, (B,)).expand(3, B)
    _check(exprs_, TaskKind.CLASSIFICATION, z, y, 1)


def test_regression_losses() -> None:
    exprs_ = [k.expr() for k in KNOWN_LOSSES.values() if k.kind is TaskKind.REGRESSION]
    exprs_ += [parse(s) for s in REGRESSION]
    reps = 2
    g = torch.Generator().manual_seed(1)
    z = torch.randn(len(exprs_) * reps, B, generator=g) * 2
    y = torch.randn(B, generator=g).expand(len(exprs_) * reps, B)
    _check(exprs_, TaskKind.REGRESSION, z, y, reps)


def test_structure_abstracts_constants_but_not_integer_exponents() -> None:
    assert structure(parse("(1 - p_y^0.7) / 0.7")) == structure(parse("(1 - p_y^0.3) / 0.3"))
    assert structure(parse("(1 - p_y)^2")) != structure(parse("(1 - p_y)^3"))
    assert structure(parse("(1 - p_y)^2")) != structure(parse("(1 - p_y)^2.5"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expr=exprs(TaskKind.CLASSIFICATION, moderate=True, max_leaves=10), seed=st.integers(0, 2**16)
)
def test_random_classification_expressions(expr: Expr, seed: int) -> None:
    try:
        compile_loss(expr, TaskKind.CLASSIFICATION)
    except Exception:
        return  # not a valid loss (e.g. a per-class vector); the trainer rejects it earlier
    z, y = _inputs(2, seed=seed)
    _check([expr], TaskKind.CLASSIFICATION, z, y, 2)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=exprs(TaskKind.REGRESSION, moderate=True, max_leaves=10), seed=st.integers(0, 2**16))
def test_random_regression_expressions(expr: Expr, seed: int) -> None:
    try:
        compile_loss(expr, TaskKind.REGRESSION)
    except Exception:
        return
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, B, generator=g) * 2
    y = torch.randn(2, B, generator=g)
    _check([expr], TaskKind.REGRESSION, z, y, 2)


def test_group_by_group_path_matches_the_fused_function_and_isolates_failures() -> None:
    exprs_ = [parse(s) for s in ("-log_p_y", "sum_c(square(p - t))", "(1 - p_y^0.5) / 0.5")]
    z, y = _inputs(6)
    pl = PopulationLoss(exprs_, 2, TaskKind.CLASSIFICATION, C)
    fused = pl(z, y)
    assert pl.source.startswith("def _population(")
    # Leaves read by several groups are split once; each group's rows are a view of the split.
    assert pl.source.count(".split(SIZES)") == len(
        [n for n in pl.leaves if sum(n in prog.leaf_vars for _, prog in pl.programs) > 1]
    )
    assert ".split(SIZES)" in pl.source
    # The groups' own functions (the fallback below) are compiled only when first needed.
    assert all(prog.fn._fn is None for _, prog in pl.programs)  # type: ignore[attr-defined]
    one = PopulationLoss(exprs_[:1], 2, TaskKind.CLASSIFICATION, C)  # one group: no slicing
    one(z[:2], y[:2])
    assert ".split(" not in one.source and ".narrow(" not in one.source

    def boom(*args: object) -> None:
        raise RuntimeError("fused path unavailable")

    pl._fused[B] = boom  # type: ignore[assignment]
    slow = pl(z, y)
    assert pl.fused_failures == 1
    assert all(prog.fn._fn is not None for _, prog in pl.programs)  # type: ignore[attr-defined]
    assert torch.allclose(slow.loss, fused.loss) and torch.allclose(slow.grad, fused.grad)
    # A group whose code raises gets NaN losses and zero gradients; the others are untouched.
    start, prog = pl.programs[1]
    prog.fn = boom  # type: ignore[assignment]
    broken = pl(z, y)
    rows = slice(start, start + prog.size)
    assert torch.isnan(broken.loss[rows]).all() and (broken.grad[rows] == 0).all()
    keep = torch.ones(6, dtype=torch.bool)
    keep[rows] = False
    assert torch.equal(broken.loss[keep], slow.loss[keep])
    assert torch.equal(broken.grad[keep], slow.grad[keep])
    assert pl.broken == {1}
