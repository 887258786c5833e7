"""Reference implementations of the known losses, written directly in torch from the papers.

Each reference maps ``(input, target)`` to the per-sample loss, like a compiled expression:
classification ``input`` are logits ``[..., B, C]`` and ``target`` int64 ``[..., B]`` or soft
``[..., B, C]``; regression ``input`` and ``target`` have the same shape. Where torch has the loss
(``F.cross_entropy``, ``F.mse_loss``, ...) the reference *is* torch's function.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Reference = Callable[[Tensor, Tensor], Tensor]


def _flat(fn: Callable[[Tensor, Tensor], Tensor]) -> Reference:
    # torch's functional losses want (B, C) logits: fold any population dims into the batch.
    def ref(x: Tensor, y: Tensor) -> Tensor:
        lead = x.shape[:-1]
        if y.is_floating_point():
            y = y.expand(*lead, x.shape[-1]).reshape(-1, x.shape[-1])
        else:
            y = y.expand(lead).reshape(-1)
        return fn(x.reshape(-1, x.shape[-1]), y).reshape(lead)

    return ref


def _onehot(x: Tensor, y: Tensor) -> Tensor:
    if y.is_floating_point():
        return y.expand_as(x)
    return F.one_hot(y, x.shape[-1]).to(x.dtype).expand_as(x)


def _p_y(x: Tensor, y: Tensor) -> Tensor:
    return (_onehot(x, y) * x.softmax(-1)).sum(-1)


def cross_entropy(x: Tensor, y: Tensor) -> Tensor:
    return _flat(lambda a, b: F.cross_entropy(a, b, reduction="none"))(x, y)


def nll(x: Tensor, y: Tensor) -> Tensor:
    return _flat(lambda a, b: F.nll_loss(F.log_softmax(a, -1), b, reduction="none"))(x, y)


def label_smoothing(alpha: float) -> Reference:
    return _flat(lambda a, b: F.cross_entropy(a, b, reduction="none", label_smoothing=alpha))


def focal(gamma: float) -> Reference:
    # Lin et al. 2017: FL(p_y) = -(1 - p_y)^gamma log p_y.
    return lambda x, y: -((1 - _p_y(x, y)) ** gamma) * -cross_entropy(x, y)


def mae(x: Tensor, y: Tensor) -> Tensor:
    # Ghosh et al. 2017: ||p - t||_1, which is 2 (1 - p_y) for a one-hot t.
    if y.is_floating_point():
        return (x.softmax(-1) - y).abs().sum(-1)
    return 2 * (1 - _p_y(x, y))


def gce(q: float) -> Reference:
    # Zhang & Sabuncu 2018: (1 - p_y^q) / q.
    return lambda x, y: (1 - _p_y(x, y) ** q) / q


def _rce(x: Tensor, y: Tensor) -> Tensor:
    # Wang et al. 2019: -sum_c p_c log t_c with log 0 := A = -4.
    t = _onehot(x, y).clamp(min=math.exp(-4.0), max=1.0)
    return -(x.softmax(-1) * t.log()).sum(-1)


def sce(alpha: float, beta: float) -> Reference:
    return lambda x, y: alpha * cross_entropy(x, y) + beta * _rce(x, y)


def nce_rce(alpha: float, beta: float) -> Reference:
    # Ma et al. 2020: NCE = -log p_y / sum_c -log p_c.
    def ref(x: Tensor, y: Tensor) -> Tensor:
        nce = cross_entropy(x, y) / -x.log_softmax(-1).sum(-1)
        return alpha * nce + beta * _rce(x, y)

    return ref


def poly1(epsilon: float) -> Reference:
    # Leng et al. 2022: CE + epsilon (1 - p_y).
    return lambda x, y: cross_entropy(x, y) + epsilon * (1 - _p_y(x, y))


def baikal(x: Tensor, y: Tensor) -> Tensor:
    # Gonzalez & Miikkulainen 2020: -1/C sum_c (log p_c - t_c / p_c).
    p = x.softmax(-1)
    return -(p.log() - _onehot(x, y) / p).mean(-1)


def taylor_glo(theta: tuple[float, ...]) -> Reference:
    # Gonzalez & Miikkulainen 2021, third-order expansion around (theta0, theta1).
    def ref(x: Tensor, y: Tensor) -> Tensor:
        u = x.softmax(-1) - theta[0]
        v = _onehot(x, y) - theta[1]
        terms = (
            theta[2] * u
            + 0.5 * theta[3] * u**2
            + theta[4] / 6 * u**3
            + theta[5] * u * v
            + 0.5 * theta[6] * u * v**2
            + 0.5 * theta[7] * u**2 * v
        )
        return -terms.mean(-1)

    return ref


def mse(x: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(x, y.expand_as(x), reduction="none")


def l1(x: Tensor, y: Tensor) -> Tensor:
    return F.l1_loss(x, y.expand_as(x), reduction="none")


def huber(delta: float) -> Reference:
    return lambda x, y: F.huber_loss(x, y.expand_as(x), reduction="none", delta=delta)


def log_cosh(x: Tensor, y: Tensor) -> Tensor:
    return torch.log(torch.cosh(x - y))


def quantile(tau: float) -> Reference:
    # Koenker & Bassett 1978: max(tau (y - yhat), (tau - 1)(y - yhat)).
    return lambda x, y: torch.maximum(tau * (y - x), (tau - 1) * (y - x))


#: name -> (reference at the library's default parameters, soft targets meaningful)
DEFAULTS: dict[str, tuple[Reference, bool]] = {
    "ce": (cross_entropy, True),
    "label_smoothing": (label_smoothing(0.1), True),
    "focal": (focal(2.0), False),
    "mae": (mae, True),
    "gce": (gce(0.7), False),
    "sce": (sce(0.1, 1.0), False),
    "nce_rce": (nce_rce(1.0, 1.0), False),
    "poly1": (poly1(1.0), False),
    "baikal": (baikal, True),
    "taylor_glo": (taylor_glo((0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0)), True),
    "mse": (mse, False),
    "l1": (l1, False),
    "huber": (huber(1.0), False),
    "log_cosh": (log_cosh, False),
    "quantile": (quantile(0.5), False),
}
