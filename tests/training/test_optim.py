"""Stacked optimisers = N independent torch.optim optimisers."""

from __future__ import annotations

import pytest
import torch

from loss_rl.training import StackedAdam, StackedSGD


def _grads(step: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(step))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_matches_torch_adam_per_model(fused: bool, weight_decay: float) -> None:
    shapes = [(4, 3, 5), (4, 5)]
    init = [torch.randn(s, generator=torch.Generator().manual_seed(9)) for s in shapes]
    stacked = [p.clone() for p in init]
    opt = StackedAdam(
        stacked, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay, fused=fused
    )
    singles = [[torch.nn.Parameter(p[i].clone()) for p in init] for i in range(4)]
    torch_opts = [
        torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
        for ps in singles
    ]
    for step in range(20):
        grads = [_grads(step * 10 + k, s) for k, s in enumerate(shapes)]
        opt.step(stacked, grads)
        for i, (ps, o) in enumerate(zip(singles, torch_opts, strict=True)):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g[i].clone()
            o.step()
    for i, ps in enumerate(singles):
        for p, s in zip(ps, stacked, strict=True):
            if fused:
                assert torch.allclose(s[i], p.detach(), rtol=1e-6, atol=1e-7)
            else:  # the same op sequence as torch's default (single-tensor) Adam
                assert torch.equal(s[i], p.detach())


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_torch_sgd_per_model(momentum: float, nesterov: bool) -> None:
    init = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    stacked = init.clone()
    opt = StackedSGD([stacked], lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=0.01)
    singles = [torch.nn.Parameter(init[i].clone()) for i in range(3)]
    torch_opts = [
        torch.optim.SGD([p], lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=0.01)
        for p in singles
    ]
    for step in range(10):
        g = _grads(step, (3, 6))
        opt.step([stacked], [g])
        for i, (p, o) in enumerate(zip(singles, torch_opts, strict=True)):
            p.grad = g[i].clone()
            o.step()
    for i, p in enumerate(singles):
        assert torch.equal(stacked[i], p.detach())
