"""The functional inner loop reproduces plain torch training and differentiates correctly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loss_rl.expr import compile_loss, known_loss, parse
from loss_rl.meta import InnerConfig, SymbolicLoss, meta_objective, unrolled_train
from loss_rl.meta._unroll import model_params
from loss_rl.tasks import ModelConfig, build_model


def _problem(dtype: torch.dtype = torch.float32, n: int = 16, d: int = 5, c: int = 3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    model = build_model(ModelConfig(kind="mlp", widths=(7,)), d, c, seed=3).to(dtype)
    return model, x, y


@pytest.mark.parametrize(
    "cfg",
    [
        InnerConfig(steps=6, optimizer="sgd", lr=0.3),
        InnerConfig(steps=6, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3),
        InnerConfig(steps=6, optimizer="adam", lr=0.05),
        InnerConfig(steps=6, unroll=2, optimizer="adam", lr=0.05),
    ],
    ids=["sgd", "sgd_momentum_wd", "adam", "adam_truncated"],
)
def test_unrolled_matches_plain_torch_loop(cfg: InnerConfig) -> None:
    model, x, y = _problem()
    loss_expr = known_loss("focal", gamma=2.0)
    fn = compile_loss(loss_expr)
    batches = [(x[i::3], y[i::3]) for i in range(3)] * 2
    result = unrolled_train(model, model_params(model), fn, batches, cfg)

    plain = build_model(ModelConfig(kind="mlp", widths=(7,)), 5, 3, seed=3)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(plain.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)  # fmt: skip
    else:
        opt = torch.optim.Adam(plain.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                               eps=cfg.eps)  # fmt: skip
    for bx, by in batches:
        opt.zero_grad()
        fn(plain(bx), by).mean().backward()
        opt.step()
    for name, p in plain.named_parameters():
        torch.testing.assert_close(result[name].detach(), p.detach(), rtol=1e-5, atol=1e-6)


def test_meta_gradient_matches_finite_differences() -> None:
    model, x, y = _problem(torch.float64)
    qx, qy = _problem(torch.float64, n=12)[1:]
    loss = SymbolicLoss(parse("(1 - p_y^0.5) / 0.8 - 0.3 * mean_c(log_p)"))
    assert len(loss.learnable) == 4
    batches = [(x[:8], y[:8]), (x[8:], y[8:]), (x, y)]
    params = model_params(model, torch.float64)
    cfg = InnerConfig(steps=3, optimizer="sgd", lr=0.5)

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return meta_objective(model, params, lambda z, t: loss.per_sample(z, t, theta),
                              batches, (qx, qy), cfg, loss.kind)  # fmt: skip

    theta = loss.values().detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(theta), theta)
    eps = 1e-6
    fd = torch.zeros_like(theta)
    for i in range(len(theta)):
        e = torch.zeros_like(theta)
        e[i] = eps
        fd[i] = (objective(theta.detach() + e) - objective(theta.detach() - e)).detach() / (2 * eps)
    assert grad[0].abs() < 1e-12  # the additive 1 changes nothing
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-8)


def test_truncation_keeps_only_the_last_steps_in_the_graph() -> None:
    model, x, y = _problem()
    loss = SymbolicLoss(parse("-1.5 * log_p_y"))
    batches = [(x, y)] * 5
    for unroll in (1, 5):
        cfg = InnerConfig(steps=5, unroll=unroll, optimizer="sgd", lr=0.1)
        value = meta_objective(model, model_params(model), loss.per_sample, batches, (x, y), cfg,
                               loss.kind)  # fmt: skip
        (g,) = torch.autograd.grad(value, loss.u)
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_adam_meta_gradient_is_finite_with_dead_units() -> None:
    # A parameter with an exactly zero gradient (dead ReLU unit) must not turn sqrt(v) into NaN.
    model, x, y = _problem()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every hidden unit dead
    loss = SymbolicLoss(parse("-1.5 * log_p_y"))
    cfg = InnerConfig(steps=3, optimizer="adam", lr=0.01)
    value = meta_objective(model, model_params(model), loss.per_sample, [(x, y)] * 3, (x, y),
                           cfg, loss.kind)  # fmt: skip
    (g,) = torch.autograd.grad(value, loss.u, allow_unused=True)
    assert g is None or torch.isfinite(g).all()


def test_model_is_not_modified() -> None:
    model, x, y = _problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    unrolled_train(model, model_params(model), compile_loss(known_loss("ce")), [(x, y)] * 2,
                   InnerConfig(steps=2))  # fmt: skip
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert isinstance(model, nn.Module)
