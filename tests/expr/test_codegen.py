"""Generated torch code computes exactly what the compiled loss computes, for any tree."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from loss_rl.export import LossSpec, module_source
from loss_rl.export._torchscript import _generated_module
from loss_rl.expr import KNOWN_LOSSES, Expr, Op, TaskKind, compile_loss, is_vector, known_loss
from loss_rl.expr._codegen import latex
from tests.expr.strategies import exprs

C = 4


def _inputs(kind: TaskKind, soft: bool) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    if kind is TaskKind.CLASSIFICATION:
        x = torch.randn(2, 6, C, generator=g, dtype=torch.float64) * 3
        x[0, 0, 0], x[1, 1, 2] = 100.0, -100.0  # saturated probabilities
        if soft:
            return x, torch.randn(6, C, generator=g, dtype=torch.float64).softmax(-1)
        return x, torch.randint(0, C, (6,), generator=g)
    x = torch.randn(2, 6, generator=g, dtype=torch.float64) * 3
    x[0, 0] = 0.0
    return x, torch.cat(
        [torch.zeros(1, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
    )


def _value_and_grad(
    fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor
) -> tuple[Tensor, Tensor]:
    x = x.clone().requires_grad_(True)
    value = fn(x, y)
    if not value.requires_grad:  # a constant loss
        return value, torch.zeros_like(x)
    (grad,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
    return value.detach(), torch.zeros_like(x) if grad is None else grad


def assert_generated_matches(expr: Expr, kind: TaskKind, script: bool = False) -> None:
    spec = LossSpec.of(expr, kind, "none")
    with _generated_module(module_source(spec)) as module:
        generated = module.DiscoveredLoss("none")
        if script:
            generated = torch.jit.script(generated)
    compiled = compile_loss(expr, kind)
    for soft in (False, True) if kind is TaskKind.CLASSIFICATION else (False,):
        x, y = _inputs(kind, soft)
        want_v, want_g = _value_and_grad(compiled, x, y)
        got_v, got_g = _value_and_grad(generated, x, y)
        # Absolute tolerance follows the loss's scale: a guarded denominator (1e-7) amplifies
        # float rounding, e.g. the ~1e-17 gradient of p_y / p_y becomes ~1e-10 in (p_y / p_y) / 0.
        finite = torch.cat([want_v[torch.isfinite(want_v)].flatten(),
                            want_g[torch.isfinite(want_g)].flatten()])  # fmt: skip
        scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
        atol = 1e-12 * scale
        torch.testing.assert_close(got_v, want_v, rtol=1e-9, atol=atol, equal_nan=True)
        if torch.isfinite(want_v).all():
            torch.testing.assert_close(got_g, want_g, rtol=1e-9, atol=atol, equal_nan=True)


def _root(e: Expr) -> Expr:
    return Op("sum_c", (e,)) if is_vector(e) else e


_KINDS = st.sampled_from([TaskKind.CLASSIFICATION, TaskKind.REGRESSION])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_python_matches_compiled(data: st.DataObject) -> None:
    kind = data.draw(_KINDS)
    expr = _root(data.draw(exprs(kind, max_leaves=12)))
    assert_generated_matches(expr, kind)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_torchscript_matches_compiled(data: st.DataObject) -> None:
    kind = data.draw(_KINDS)
    expr = _root(data.draw(exprs(kind, moderate=True, max_leaves=10)))
    assert_generated_matches(expr, kind, script=True)


@pytest.mark.parametrize(
    "text",
    [
        "2",
        "min(2, 3) + p_y",
        "exp(2) * log_p_y",
        "sum_c(2) * p_y",
        "mean_c(p * 2)",
        "sum_c(p * sum_c(2))",
        "2 / p_y",
        "p_y / 0",
        "p_y / -1e-9",
        "sum_c(p^z)",
        "p_y^sum_c(p)",
        "sum_c(p_y^p)",
        "(-2)^p_y",
        "square(1 - p_y)",
        "square(2)",
        "-(-p_y)",
        "-(2)",
        "sum_c(t) * -log_p_y",
        "z^-3 * 0 + sum_c(z)",
        "1 - 2 - p_y",
        "p_y - (1 - p_y)",
        "p_y / (2 / p_y)",
        "(p_y / 2) / p_y",
        "p_y^2^3",
        "(p_y^2)^3",
        "sqrt(-(p_y))",
    ],
)
def test_generated_edge_cases(text: str) -> None:
    from loss_rl.expr import parse

    assert_generated_matches(_root(parse(text)), TaskKind.CLASSIFICATION, script=True)


@pytest.mark.parametrize("name", sorted(KNOWN_LOSSES))
def test_latex_of_known_losses_is_balanced(name: str) -> None:
    text = latex(known_loss(name))
    assert text.count("{") == text.count("}")
    assert text.count(r"\left") == text.count(r"\right")
