"""Simplified display of losses: algebra combines, guards stay, and the text parses back to an
equal loss."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loss_rl.expr._simplify as simplify_module
from loss_rl.expr import (
    Expr,
    Op,
    TaskKind,
    compile_loss,
    is_vector,
    parse,
    simplified_size,
    simplified_size_lower_bound,
    simplify,
    task_kind,
)
from loss_rl.expr.library import KNOWN_LOSSES, known_loss
from tests.expr.strategies import exprs


def _values(expr: Expr, kind: TaskKind, soft: bool = False) -> torch.Tensor:
    """The per-sample loss on fixed random inputs (float64; hard or soft targets)."""
    g = torch.Generator().manual_seed(0)
    if kind is TaskKind.CLASSIFICATION:
        logits = 4 * torch.randn(3, 32, 5, generator=g, dtype=torch.float64)
        if soft:
            target = torch.softmax(torch.randn(32, 5, generator=g, dtype=torch.float64), -1)
        else:
            target = torch.randint(0, 5, (32,), generator=g)
        return compile_loss(expr, kind)(logits, target)
    pred = 3 * torch.randn(3, 32, generator=g, dtype=torch.float64)
    target = torch.randn(32, generator=g, dtype=torch.float64)
    return compile_loss(expr, kind)(pred, target)


def _assert_same_loss(original: Expr, text: str) -> None:
    kind = task_kind(original) or TaskKind.CLASSIFICATION
    back = parse(text)
    for soft in (False, True) if kind is TaskKind.CLASSIFICATION else (False,):
        a, b = _values(original, kind, soft), _values(back, kind, soft)
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("p_y + p_y", "2 * p_y"),
        ("-1 * -1 * p_y", "p_y"),
        ("-(-(p_y))", "p_y"),
        ("p_y * p_y", "p_y^2"),
        ("0.5 * p_y + 0.5 * p_y", "p_y"),
        ("0.1 * p_y + 0.2 * p_y", "0.3 * p_y"),
        ("-1 * -1 * (p_y * p_y) + 0.5 * p_y + 0.5 * p_y", "p_y^2 + p_y"),
        ("p_y - p_y", "0"),
        ("-log_p_y + 0 * p_y", "-log_p_y"),
        ("2 * -log_p_y", "-2 * log_p_y"),
        ("log(p_y)", "log_p_y"),
        ("sum_c(t * log_p) + sum_c(t * log_p)", "2 * sum_c(t * log_p)"),
        ("residual^2 - 2 * residual * residual", "-residual^2"),
        ("(p_y + 1)^4 - (p_y + 1)^4", "0"),
        # x / y is x * recip(y) under the guard, so terms over one denominator combine.
        ("p_y / (1 - p_y) + 2 * p_y / (1 - p_y)", "3 * p_y / (1 - p_y)"),
        ("-(2 * p_y) / 3", "-2 * p_y / 3"),
    ],
)
def test_like_terms_and_constants_combine(text: str, expected: str) -> None:
    expr = parse(text)
    assert simplify(expr) == expected
    assert simplified_size(expr) == parse(expected).size() <= expr.size()
    _assert_same_loss(expr, expected)


@pytest.mark.parametrize(
    "text",
    [
        # exp is clamped at 30: log(exp(x)) is not x for x > 30.
        "log(exp(p_y))",
        "exp(log(residual))",
        # sqrt takes |x|: sqrt(x)^2 is |x|, and p_y * sqrt(p_y) is not p_y^1.5 under the floor.
        "sqrt(residual)^2",
        "p_y * sqrt(p_y) - p_y",
        # Clamped exp: exp(a) * exp(b) is not exp(a + b).
        "exp(z_sum) * exp(z_sum)".replace("z_sum", "sum_c(z)"),
        # recip(recip(x)) is x only where |x| >= 1e-7.
        "recip(recip(residual))",
        # log(x^2) is not 2 log(x) for the protected log (and x < 0).
        "log(residual * residual)",
        # A non-integer power is exp(b * log|a|), clamped: never merged with other powers.
        "p_y^0.7 * p_y^0.3",
        "residual / residual",
        # The protected log of p_y is not log-softmax (soft targets, underflow): log(p_y * 1)
        # must not turn into log_p_y, nor (p_y * 1)^0.5 into p_y^0.5.
        "log(p_y * 1) + log_p_y",
        "(p_y * 1)^0.5",
        "p_y^0.5 + p_y^(0.25 + 0.25)",
    ],
)
def test_guarded_functions_stay_intact(text: str) -> None:
    expr = parse(text)
    shown = simplify(expr)
    for name in ("log", "exp", "sqrt", "recip", "^0.7", "/"):
        assert (name in text) == (name in shown), (text, shown)
    _assert_same_loss(expr, shown)


def test_guarded_function_arguments_are_simplified() -> None:
    assert simplify(parse("log(p_y + p_y)")) == "log(2 * p_y)"
    assert simplify(parse("exp(-1 * -1 * residual)")) == "exp(residual)"
    assert simplify(parse("sqrt(p_y * p_y) + sqrt(p_y * p_y)")) == "2 * sqrt(p_y^2)"


def test_a_power_whose_exponent_folds_to_an_integer_keeps_its_guarded_meaning() -> None:
    # The exponent (0.3 + 0.7) * x only becomes 1 after simplification; the original compiles
    # as exp(e * log|residual|) (so |residual| where e = 1), and the display must too.
    expr = parse("residual^(0.3 * target + 0.7 * target - target + 1)")
    shown = simplify(expr)
    assert shown != "residual"
    _assert_same_loss(expr, shown)


@pytest.mark.parametrize(
    "text",
    [
        "-(1 - p_y)^2 * log_p_y",
        "0.5 * sum_c(abs(p - t)) + 0.5 * ((1 - p_y^0.5) / 0.5)",
        "sum_c(abs(p - t)) + 0.1 * ((1 - p_y^0.7) / 0.7)",
        "max(p_y, 0.5) * min(log_p_y, -1) + tanh(p_y) - sigmoid(p_y) * softplus(log_p_y)",
        "mean_c(p * p) - mean_c(p^2) + sum_c(t * -log_p)",
        "sum_c(abs(p - t) * 0) + sum_c(abs(p - t))",
        "0.5 * residual^2 + 0.5 * residual * residual",
        "recip(residual^-2) + residual^-2",
    ],
)
def test_round_trip_parses_to_an_equal_loss(text: str) -> None:
    expr = parse(text)
    shown = simplify(expr)
    assert parse(shown).size() == simplified_size(expr) <= expr.size()
    _assert_same_loss(expr, shown)


def _scalar_trees() -> st.SearchStrategy[Expr]:
    def close(e: Expr) -> Expr:
        return Op("sum_c", (e,)) if is_vector(e) else e

    kinds = st.sampled_from([TaskKind.CLASSIFICATION, TaskKind.REGRESSION])
    return kinds.flatmap(lambda k: exprs(k, moderate=True, max_leaves=8)).map(close)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scalar_trees())
def test_random_trees_simplify_to_equal_losses(expr: Expr) -> None:
    shown = simplify(expr)
    back = parse(shown)
    assert back.size() <= expr.size()
    kind = task_kind(expr) or TaskKind.CLASSIFICATION
    a, b = _values(expr, kind), _values(back, kind)
    # Overflowing intermediates may become inf in one form and be cancelled in the other.
    finite = torch.isfinite(a) & torch.isfinite(b) & (a.abs() < 1e8)
    torch.testing.assert_close(b[finite], a[finite], rtol=1e-6, atol=1e-9)


def test_falls_back_to_the_expression_and_logs_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(expr: Expr) -> Expr:
        raise RuntimeError("sympy exploded")

    monkeypatch.setattr(simplify_module, "_best_form", broken)
    simplify_module._simplified.cache_clear()
    expr = parse("p_y + p_y")
    with caplog.at_level(logging.INFO, logger=simplify_module.__name__):
        assert simplify(expr) == str(expr)
    assert "sympy exploded" in caplog.text
    simplify_module._simplified.cache_clear()


def test_a_tree_over_the_size_limit_is_shown_as_it_is(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(simplify_module, "MAX_SIMPLIFY_SIZE", 2)
    simplify_module._simplified.cache_clear()
    expr = parse("p_y + p_y")
    with caplog.at_level(logging.INFO, logger=simplify_module.__name__):
        assert simplify(expr) == "p_y + p_y"
    assert "not simplifying" in caplog.text
    simplify_module._simplified.cache_clear()


def test_importing_loss_rl_does_not_import_sympy() -> None:
    code = "import sys, loss_rl; assert 'sympy' not in sys.modules, 'sympy imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(
    ("text", "bound"),
    [
        ("sigmoid(sqrt(log_p_y))", 3),  # a leaf and two opaque functions: nothing can go
        ("sum_c(abs(p - t)) - 0.25 * log_p_y", 6),  # three single leaves, two joins, sum_c
        ("sum_c(t * log(p))", 4),  # log(p) is the leaf log_p
        # Factors that may simplify to zero take the leaves below them along.
        ("p_y * (0.1 + 0.2 - 0.3)", 1),  # exactly 0 to sympy, 5.6e-17 in floats
        ("(p_y - p_y) * sigmoid(log_p)", 1),
        ("p_y^0 * t", 1),
        ("log(p_y) - log_p_y + z", 1),  # p_y's family twice: it cancels
        ("min(p_y, p_y)", 1),  # a repeated leaf is not counted
    ],
)
def test_size_lower_bound_on_hand_picked_losses(text: str, bound: int) -> None:
    expr = parse(text)
    assert simplified_size_lower_bound(expr) == bound
    assert bound <= simplified_size(expr)


def test_size_lower_bound_holds_for_the_library() -> None:
    for name in KNOWN_LOSSES:
        expr = known_loss(name)
        assert 1 <= simplified_size_lower_bound(expr) <= simplified_size(expr), name


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_scalar_trees(), exprs(TaskKind.CLASSIFICATION, max_leaves=10)))
def test_size_lower_bound_never_exceeds_the_simplified_size(expr: Expr) -> None:
    # Any constants (zeros, subnormals, huge ones) and repeated leaves: the bound must hold.
    assert 1 <= simplified_size_lower_bound(expr) <= simplified_size(expr)
