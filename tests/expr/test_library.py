"""Every known loss, compiled from the loss language, against torch or the paper's formula."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from loss_rl.errors import LossSpecError
from loss_rl.expr import KNOWN_LOSSES, Expr, ExprLoss, TaskKind, compile_loss, known_loss
from loss_rl.expr import library as lib
from tests.expr import references as ref

B, C, N = 16, 5, 3


def _inputs(kind: TaskKind, soft: bool, population: bool, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    lead = (N, B) if population else (B,)
    if kind is TaskKind.CLASSIFICATION:
        x = torch.randn(*lead, C, generator=g, dtype=torch.float64) * 2
        if soft:
            y = torch.randn(B, C, generator=g, dtype=torch.float64).softmax(-1)
        else:
            y = torch.randint(0, C, (B,), generator=g)
        return x, y
    x = torch.randn(*lead, generator=g, dtype=torch.float64) * 2
    return x, torch.randn(B, generator=g, dtype=torch.float64) * 2


def _value_and_grad(fn: ref.Reference, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x = x.clone().requires_grad_(True)
    value = fn(x, y)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def assert_matches(
    expr: Expr, kind: TaskKind, reference: ref.Reference, x: Tensor, y: Tensor
) -> None:
    got_v, got_g = _value_and_grad(compile_loss(expr, kind), x, y)
    want_v, want_g = _value_and_grad(reference, x, y)
    assert got_v.shape == want_v.shape == x.shape[: x.dim() - (kind is TaskKind.CLASSIFICATION)]
    torch.testing.assert_close(got_v, want_v, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(got_g, want_g, rtol=1e-7, atol=1e-9)


_CASES = [
    pytest.param(
        name,
        soft,
        population,
        id=f"{name}-{'soft' if soft else 'hard'}-{'NBC' if population else 'BC'}",
    )
    for name, (_, soft_ok) in ref.DEFAULTS.items()
    for soft in ((False, True) if soft_ok else (False,))
    for population in (False, True)
]


def test_every_known_loss_has_a_reference() -> None:
    assert set(ref.DEFAULTS) == set(KNOWN_LOSSES)


@pytest.mark.parametrize(("name", "soft", "population"), _CASES)
def test_known_loss_matches_reference(name: str, soft: bool, population: bool) -> None:
    spec = KNOWN_LOSSES[name]
    x, y = _inputs(spec.kind, soft, population)
    assert_matches(known_loss(name), spec.kind, ref.DEFAULTS[name][0], x, y)


@pytest.mark.parametrize(
    ("expr", "kind", "reference", "soft"),
    [
        (lib.nll(), TaskKind.CLASSIFICATION, ref.nll, False),
        (lib.label_smoothing(0.25), TaskKind.CLASSIFICATION, ref.label_smoothing(0.25), True),
        (lib.focal(0.5), TaskKind.CLASSIFICATION, ref.focal(0.5), False),
        (lib.focal(3.0), TaskKind.CLASSIFICATION, ref.focal(3.0), False),
        (lib.gce(0.3), TaskKind.CLASSIFICATION, ref.gce(0.3), False),
        (lib.gce(1.0), TaskKind.CLASSIFICATION, ref.gce(1.0), False),
        (lib.sce(0.5, 2.0), TaskKind.CLASSIFICATION, ref.sce(0.5, 2.0), False),
        (lib.nce_rce(2.0, 0.5), TaskKind.CLASSIFICATION, ref.nce_rce(2.0, 0.5), False),
        (lib.poly1(-0.5), TaskKind.CLASSIFICATION, ref.poly1(-0.5), False),
        (
            lib.taylor_glo((0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8)),
            TaskKind.CLASSIFICATION,
            ref.taylor_glo((0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8)),
            True,
        ),
        (lib.huber(0.5), TaskKind.REGRESSION, ref.huber(0.5), False),
        (lib.huber(3.0), TaskKind.REGRESSION, ref.huber(3.0), False),
        (lib.quantile(0.9), TaskKind.REGRESSION, ref.quantile(0.9), False),
        (lib.quantile(0.1), TaskKind.REGRESSION, ref.quantile(0.1), False),
    ],
    ids=lambda v: str(v) if isinstance(v, (float, bool)) else None,
)
def test_known_loss_with_parameters(
    expr: Expr, kind: TaskKind, reference: ref.Reference, soft: bool
) -> None:
    for population in (False, True):
        x, y = _inputs(kind, soft, population, seed=1)
        assert_matches(expr, kind, reference, x, y)


def test_nll_and_ce_share_a_key() -> None:
    assert lib.nll().key == lib.cross_entropy().key


@pytest.mark.parametrize("name", sorted(KNOWN_LOSSES))
def test_module_reductions_match_torch_style(name: str) -> None:
    spec = KNOWN_LOSSES[name]
    x, y = _inputs(spec.kind, False, False)
    per_sample = ref.DEFAULTS[name][0](x, y)
    for reduction, want in (
        ("mean", per_sample.mean()),
        ("sum", per_sample.sum()),
        ("none", per_sample),
    ):
        got = ExprLoss(known_loss(name), spec.kind, reduction)(x, y)
        torch.testing.assert_close(got, want)


def test_module_rejects_unknown_reduction() -> None:
    with pytest.raises(LossSpecError, match="reduction"):
        ExprLoss(known_loss("ce"), reduction="avg")  # type: ignore[arg-type]


def test_known_loss_errors() -> None:
    with pytest.raises(LossSpecError, match="unknown known loss"):
        known_loss("nope")
    with pytest.raises(LossSpecError, match="no parameter"):
        known_loss("gce", gamma=2.0)
    assert known_loss("gce", q=0.5) == lib.gce(0.5)


def test_float32_matches_float64() -> None:
    x, y = _inputs(TaskKind.CLASSIFICATION, False, True)
    for name in ("ce", "focal", "gce", "baikal"):
        fn = compile_loss(known_loss(name))
        torch.testing.assert_close(fn(x.float(), y), fn(x, y).float(), rtol=1e-4, atol=1e-5)
