"""Canonical keys: idempotent, and shared by losses that are equal by algebra."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings

from loss_rl.expr import (
    Const,
    Expr,
    Leaf,
    TaskKind,
    canonical,
    compile_loss,
    op,
    parse,
    round_constant,
)
from tests.expr.strategies import exprs

_PROPS = settings(max_examples=300, deadline=None)


@_PROPS
@given(exprs())
def test_canonical_is_idempotent_and_parses_back(e: Expr) -> None:
    c = canonical(e)
    assert canonical(c) == c
    assert parse(str(c)) == c
    assert e.key == str(c)


@_PROPS
@given(exprs(), exprs())
def test_commutativity_and_subtraction_share_keys(a: Expr, b: Expr) -> None:
    assert op("add", a, b).key == op("add", b, a).key
    assert op("mul", a, b).key == op("mul", b, a).key
    assert op("min", a, b).key == op("min", b, a).key
    assert op("sub", a, b).key == op("add", op("neg", b), a).key


@settings(max_examples=300, deadline=None)
@given(exprs(with_constants=False))
def test_scaling_by_two_and_back_is_identity(a: Expr) -> None:
    # Without constants in `a` no rounding intervenes, so 2 * a / 2 is exactly a.
    assert op("div", op("mul", 2.0, a), 2.0).key == a.key
    assert op("neg", op("neg", a)).key == a.key
    assert op("add", a, 0.0).key == a.key
    assert op("mul", 1.0, a).key == a.key


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("p_y + log_p_y", "log_p_y + p_y"),
        ("sum_c(p * t) * mean_c(z)", "mean_c(z) * sum_c(t * p)"),
        ("p_y - log_p_y", "-log_p_y + p_y"),
        ("2 * p_y / 2", "p_y"),
        ("log(p_y)", "log_p_y"),
        ("mean_c(log(p))", "mean_c(log_p)"),
        ("-(-p_y)", "p_y"),
        ("p_y * 1 + 0", "p_y"),
        ("square(p_y)", "p_y^2"),
        ("p_y^1", "p_y"),
        ("min(p_y, p_y)", "p_y"),
        ("max(1 - p_y, p_y)", "max(p_y, 1 - p_y)"),
        ("(1 - p_y) * 3 + 2 * (1 - p_y) * 0", "3 * (1 - p_y)"),
        ("0.5 * p_y", "p_y / 2"),
        ("mean_c(p_y)", "p_y"),
        ("p_y + 1 + 2", "3 + p_y"),
        ("1.00001 * p_y", "p_y"),  # constants are rounded to 4 significant digits
    ],
)
def test_equal_by_algebra(left: str, right: str) -> None:
    assert parse(left).key == parse(right).key


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("p_y - log_p_y", "log_p_y - p_y"),
        ("p_y / log_p_y", "log_p_y / p_y"),
        ("p_y^2", "2^p_y"),
        ("sum_c(p)", "mean_c(p)"),
        ("p_y * 1.001", "p_y"),
    ],
)
def test_different_losses_keep_different_keys(left: str, right: str) -> None:
    assert parse(left).key != parse(right).key


@pytest.mark.parametrize(
    "text",
    [
        "1e200 * 1e200 * p_y",
        "1.7976931348623157e308 * p_y",
        "1e308 + 1e308 + p_y",
        "0 * 1e300 * 1e300 * p_y",
        "(1e300)^2 * p_y",
        "-1 * 1e300 * 1e10 * 1e-5 * p_y",
    ],
)
def test_overflowing_constants_still_have_a_key(text: str) -> None:
    e = parse(text)
    c = canonical(e)
    assert canonical(c) == c
    assert all(math.isfinite(n.value) for n in c.nodes() if isinstance(n, Const))


@pytest.mark.parametrize(
    "text",
    [
        "2^-3",
        "0^-2",
        "(1e-5)^-2",
        "(-8)^0.333",
        "0^0.5",
        "log(0)",
        "sqrt(-4)",
        "recip(0)",
        "1 / -0",
        "exp(100)",
        "sigmoid(-800)",
        "softplus(40)",
        "min(2, -3)",
        "(-2)^3",
    ],
)
def test_constant_folding_matches_the_compiled_value(text: str) -> None:
    # Folding must follow the compiled guards, or the key would merge losses that train apart.
    e = parse(text + " + p_y")
    folded = canonical(e)
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))
    want = compile_loss(e, TaskKind.CLASSIFICATION)(x, y)
    got = compile_loss(folded, TaskKind.CLASSIFICATION)(x, y)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6)


def test_round_constant() -> None:
    assert round_constant(0.123456) == 0.1235
    assert round_constant(-0.0) == 0.0
    assert round_constant(1.7976931348623157e308) == 1.7976931348623157e308
    assert round_constant(round_constant(3.14159)) == round_constant(3.14159)


def test_canonical_leaves_and_constants() -> None:
    assert canonical(Leaf("p_y")) == Leaf("p_y")
    assert canonical(Const(2.000001)) == Const(2.0)


def test_overflowing_products_are_canonical_after_one_pass() -> None:
    e = op("sub", Leaf("p_y"), op("mul", 6.9515e16, 2.5855e291))
    c = canonical(e)
    assert canonical(c) == c


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("residual^(2 - 1)", "residual"),
        ("residual^min(2, 1)", "residual"),
        ("residual^(1 + 2)", "residual^3"),
        ("(1 - p_y)^(4 / 2) * log_p_y", "(1 - p_y)^2 * log_p_y"),
    ],
)
def test_constant_exponent_subtrees_compile_like_their_key(a: str, b: str) -> None:
    """Equal keys must mean equal losses: a folded exponent compiles as the folded constant."""
    import torch

    from loss_rl.expr import compile_loss

    ea, eb = parse(a), parse(b)
    assert ea.key == eb.key
    kind = "regression" if "residual" in a else "classification"
    x = torch.tensor([[-2.0, 0.5, 1.0]]) if kind == "classification" else torch.tensor([-2.0, 3])
    y = torch.tensor([1]) if kind == "classification" else torch.tensor([0.0, 0.0])
    assert torch.allclose(compile_loss(ea, kind)(x, y), compile_loss(eb, kind)(x, y))


def test_rounding_never_makes_a_non_integer_exponent_integral() -> None:
    assert parse("residual^3.00001").key != parse("residual^3").key
