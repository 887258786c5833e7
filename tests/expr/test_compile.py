"""Compiled losses: shapes, population dimensions and the numeric guards of every primitive."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from loss_rl.errors import LossSpecError
from loss_rl.expr import KNOWN_LOSSES, ExprLoss, TaskKind, compile_loss, known_loss, parse

C = 4


def _saturated(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Logits at +-100: probabilities of exactly 0 and 1 in float32, with int targets."""
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    x = torch.zeros(6, C, dtype=dtype)
    x[0, 0] = 100.0  # true class certain: p_y = 1
    x[1, 1] = -100.0  # true class hopeless: p_y -> 0
    x[2, 3] = 100.0  # another class certain: p_y = 0
    x[3] = torch.tensor([-100.0, 100.0, -100.0, 100.0])
    x[4] = torch.tensor([100.0, -100.0, -100.0, -100.0])
    x[5] = torch.randn(C, dtype=dtype)
    return x, y


def _finite_value_and_grad(text_or_expr: object, x: Tensor, y: Tensor, kind: TaskKind) -> Tensor:
    expr = parse(text_or_expr) if isinstance(text_or_expr, str) else text_or_expr
    x = x.clone().requires_grad_(True)
    value = compile_loss(expr, kind)(x, y)
    (grad,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
    assert torch.isfinite(value).all(), value
    assert grad is None or torch.isfinite(grad).all(), grad
    return torch.zeros_like(x) if grad is None else grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "name", sorted(n for n, s in KNOWN_LOSSES.items() if s.kind is TaskKind.CLASSIFICATION)
)
def test_known_classification_losses_stay_finite_when_saturated(
    name: str, dtype: torch.dtype
) -> None:
    x, y = _saturated(dtype)
    _finite_value_and_grad(known_loss(name), x, y, TaskKind.CLASSIFICATION)
    soft = torch.zeros(6, C, dtype=dtype)
    soft[:, 0] = 1.0  # soft targets at the corners too
    _finite_value_and_grad(known_loss(name), x, soft, TaskKind.CLASSIFICATION)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "name", sorted(n for n, s in KNOWN_LOSSES.items() if s.kind is TaskKind.REGRESSION)
)
def test_known_regression_losses_stay_finite_at_extremes(name: str, dtype: torch.dtype) -> None:
    pred = torch.tensor([0.0, 1e-9, 1e4, -1e4, 3.0], dtype=dtype)
    target = torch.tensor([0.0, 0.0, -1e4, 1e4, 3.0], dtype=dtype)
    _finite_value_and_grad(known_loss(name), pred, target, TaskKind.REGRESSION)


# Protected primitives applied where they are undefined or overflow at saturated probabilities.
_PROTECTED = [
    "log(1 - p_y)",
    "log(p_y - p_y)",
    "log(p_y)",
    "sum_c(t * log(p))",
    "log(p_y^2)",
    "1 / p_y",
    "1 / (1 - p_y)",
    "sum_c(t / p)",
    "recip(p_y)",
    "recip(1 - p_y)",
    "sqrt(p_y)",
    "sqrt(1 - p_y)",
    "sqrt(-p_y)",
    "p_y^0.5",
    "(1 - p_y)^0.3",
    "p_y^-0.5",
    "(1 - p_y)^-2",
    "p_y^-3",
    "(-p_y)^1.5",
    "p_y^p_y",
    "(1 - p_y)^(1 - p_y)",
    "exp(-log_p_y)",
    "exp(sum_c(z))",
    "exp(mean_c(-log_p))",
    "softplus(-log_p_y)",
    "sigmoid(log_p_y)",
    "tanh(-log_p_y)",
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("text", _PROTECTED)
def test_protected_primitives_stay_finite(text: str, dtype: torch.dtype) -> None:
    x, y = _saturated(dtype)
    _finite_value_and_grad(text, x, y, TaskKind.CLASSIFICATION)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("text", _PROTECTED)
def test_zero_weighted_terms_do_not_poison_gradients(text: str, dtype: torch.dtype) -> None:
    # 0 * (term with an infinite derivative) would turn the whole gradient into NaN.
    x, y = _saturated(dtype)
    ce = _finite_value_and_grad("-log_p_y", x, y, TaskKind.CLASSIFICATION)
    got = _finite_value_and_grad(f"0 * {text} - log_p_y", x, y, TaskKind.CLASSIFICATION)
    torch.testing.assert_close(got, ce)


@pytest.mark.parametrize(
    "text",
    [
        "log(residual)",
        "1 / residual",
        "sqrt(residual)",
        "residual^-2",
        "abs(residual)^0.5",
        "exp(residual)",
    ],
)
def test_protected_primitives_in_regression(text: str) -> None:
    pred = torch.tensor([0.0, 1e-12, -1e-12, 100.0, -100.0], dtype=torch.float32)
    target = torch.zeros(5)
    _finite_value_and_grad(text, pred, target, TaskKind.REGRESSION)


def test_population_dims_match_a_loop_over_models() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, C, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (8,), generator=g)
    for text in ("-(1 - p_y)^2 * log_p_y", "sum_c(abs(p - t))", "p_y + mean_c(z * t)", "2"):
        fn = compile_loss(parse(text), TaskKind.CLASSIFICATION)
        batched = fn(x, y)
        assert batched.shape == (3, 8)
        for n in range(3):
            torch.testing.assert_close(batched[n], fn(x[n], y))


def test_regression_broadcasts_population_against_one_target() -> None:
    pred = torch.randn(3, 8, dtype=torch.float64)
    target = torch.randn(8, dtype=torch.float64)
    out = compile_loss(parse("residual^2"))(pred, target)
    torch.testing.assert_close(out, (pred - target) ** 2)
    # A target-only loss still has one value per (model, sample).
    assert compile_loss(parse("target"))(pred, target).shape == (3, 8)


def test_scalar_meets_vector_broadcasting() -> None:
    x = torch.randn(5, C, dtype=torch.float64)
    y = torch.randint(0, C, (5,))
    got = compile_loss(parse("sum_c(p * p_y - t)"))(x, y)
    p = x.softmax(-1)
    p_y = p.gather(-1, y[:, None])
    torch.testing.assert_close(got, (p * p_y).sum(-1) - 1)
    # A reduction of a per-sample value: sum_c multiplies by C, mean_c is the identity.
    torch.testing.assert_close(compile_loss(parse("sum_c(p_y)"))(x, y), p_y[:, 0] * C)


@pytest.mark.parametrize(
    ("text", "kind", "match"),
    [
        ("p", None, "per-class vector"),
        ("p_y + residual", None, "mixes"),
        ("residual^2", "classification", "regression leaves"),
        ("p_y", "ranking", "ranking"),
    ],
)
def test_compile_rejects_bad_losses(text: str, kind: str | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compile_loss(parse(text), kind)


def test_module_is_a_torch_module_with_a_readable_repr() -> None:
    m = ExprLoss(parse("-log_p_y"))
    assert isinstance(m, torch.nn.Module)
    assert "-log_p_y" in repr(m)
    assert m.kind is TaskKind.CLASSIFICATION
    with pytest.raises(LossSpecError):
        ExprLoss(parse("p"))


def test_compiled_losses_pickle_by_their_expression() -> None:
    import pickle

    module = ExprLoss(known_loss("gce"), reduction="sum")
    again = pickle.loads(pickle.dumps(module))
    x, y = torch.randn(4, 3), torch.randint(0, 3, (4,))
    torch.testing.assert_close(again(x, y), module(x, y))
    assert again.expr == module.expr and again.reduction == "sum"


def test_nodes_are_hashable_whatever_sequence_builds_them() -> None:
    from loss_rl.expr import Leaf, Op

    node = Op("add", [Leaf("p_y"), Leaf("log_p_y")])  # type: ignore[arg-type]
    assert node == Op("add", (Leaf("p_y"), Leaf("log_p_y")))
    assert hash(node) == hash(parse("p_y + log_p_y"))
