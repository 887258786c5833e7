"""Constants as parameters: values as compiled, rebuilt expressions, dead constants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from loss_rl.errors import LossSpecError
from loss_rl.expr import KNOWN_LOSSES, TaskKind, compile_loss, parse
from loss_rl.expr._probes import probes
from loss_rl.meta import SymbolicLoss, constants_of, dead_constants
from tests.expr.strategies import exprs


@pytest.mark.parametrize("name", sorted(KNOWN_LOSSES))
def test_known_losses_match_compiled(name: str) -> None:
    spec = KNOWN_LOSSES[name]
    expr = spec.expr()
    loss = SymbolicLoss(expr, spec.kind)
    x, y = probes(spec.kind)
    x = x.clone().requires_grad_(True)
    ours = loss.per_sample(x, y)
    ref = compile_loss(expr, spec.kind)(x, y)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    (g1,) = torch.autograd.grad(ours.sum(), x, allow_unused=True)
    (g2,) = torch.autograd.grad(ref.sum(), x, allow_unused=True)
    if g2 is not None:
        torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    assert loss.expr(digits=False) == expr


@pytest.mark.parametrize("kind", list(TaskKind))
def test_random_trees_match_compiled(kind: TaskKind) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(exprs(kind, max_leaves=8))
    def check(expr) -> None:  # type: ignore[no-untyped-def]
        try:
            ref_fn = compile_loss(expr, kind)
        except LossSpecError:
            return
        x, y = probes(kind)
        loss = SymbolicLoss(expr, kind)
        torch.testing.assert_close(loss.per_sample(x, y), ref_fn(x, y), rtol=0, atol=0,
                                   equal_nan=True)  # fmt: skip
        assert loss.expr(digits=False) == expr

    check()


def test_folded_integer_exponents_are_plain_powers() -> None:
    # "residual^(3 - 1)" compiles as the plain power 2 (defined for negative residuals).
    expr = parse("residual^(3 - 1)")
    assert not any(c.learnable for c in constants_of(expr))
    x, y = probes(TaskKind.REGRESSION)
    torch.testing.assert_close(SymbolicLoss(expr).per_sample(x, y), compile_loss(expr)(x, y))


def test_rebuilt_expression_uses_learned_values() -> None:
    loss = SymbolicLoss(parse("(1 - p_y^0.7) / 0.7"))
    with torch.no_grad():
        loss.u.copy_(torch.tensor([0.0, 0.123456, -0.5]))
    assert str(loss.expr()) == "(1 - p_y^0.7864) / 0.35"


def test_integer_exponents_stay_fixed_unless_asked() -> None:
    expr = parse("-(1 - p_y)^2 * log_p_y")
    assert [c.learnable for c in constants_of(expr)] == [True, False]
    loss = SymbolicLoss(expr, learn_integer_exponents=True)
    assert len(loss.learnable) == 2
    x, y = probes(TaskKind.CLASSIFICATION)
    torch.testing.assert_close(loss.per_sample(x, y), compile_loss(expr)(x, y))


@pytest.mark.parametrize(
    ("text", "dead", "reason"),
    [
        ("max(-log_p_y, -1)", [0], "no_gradient"),  # CE >= 0: the -1 side never wins
        ("min(p_y, 2) * 0.5 - log_p_y", [0], "no_gradient"),  # p_y <= 1 < 2
        ("-log_p_y + 3", [0], "no_effect_on_updates"),  # additive: same updates
        ("-0.5 * log_p_y", [], ""),
    ],
)
def test_plateau_constants_are_reported(text: str, dead: list[int], reason: str) -> None:
    found = dead_constants(SymbolicLoss(parse(text)))
    assert [d.constant.index for d in found] == dead
    for d in found:
        assert d.reason == reason
        assert str(d.constant.value if d.constant.value % 1 else int(d.constant.value)) in (
            d.describe()
        )


def test_kind_mismatch_is_an_error() -> None:
    with pytest.raises(LossSpecError):
        SymbolicLoss(parse("residual^2 * 0.5"), TaskKind.CLASSIFICATION)
