"""A population of ``N`` independent models of one spec, with parameters stacked along dim 0.

Every layer runs as one batched op for the whole population: ``baddbmm`` for dense layers, a
grouped ``conv1d`` for convolutions. Dense networks (``mlp``, ``linear``) are differentiated by
hand into preallocated gradient buffers — on CPU the population's step is bound by memory traffic
and per-op overhead, and autograd's fresh allocations and bookkeeping cost more than the matmuls
themselves; ``cnn1d`` uses autograd. Parameter ``k`` of model ``i`` is ``params[k][i]``, exactly
the parameters of the plain module :func:`loss_rl.tasks.build_model` builds (dense weights
transposed to ``[in, out]``). The population lives on one device (``device``, the CPU by
default): the plain modules are built on the CPU and their stacked parameters moved there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loss_rl.tasks import ModelConfig, build_model, conv_lengths
from loss_rl.training._device import host_copy

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "silu": F.silu,
    "elu": F.elu,
    "leaky_relu": F.leaky_relu,
    "sigmoid": torch.sigmoid,
}
_aten = torch.ops.aten

#: Dense layers with fewer output columns than this (the output layer: 1 to 10 classes) run
#: their batched matmuls transposed. Measured on the 2-core CPU (one thread, 17 models, batch
#: 128, 64 inputs): ``bmm`` with 10 output columns took 283 µs forward and 354 µs for the weight
#: gradient, the transposed products 82 µs and 75 µs; at 16 columns and more the plain layout is
#: as fast or faster.
_NARROW_OUTPUT = 16


def _dense(h: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``h @ w + b`` for every model (``h`` ``[N, B, in]``, ``w`` ``[N, in, out]``)."""
    if w.shape[-1] < _NARROW_OUTPUT:
        # (w^T h^T)^T: the same products, in the layout the CPU kernels handle fast. Made
        # contiguous so that what follows sees one layout whatever the population holds (a
        # kernel's rounding may depend on its inputs' strides: rows must never mix, bit for bit).
        out = torch.baddbmm(b.unsqueeze(-1), w.transpose(1, 2), h.transpose(1, 2))
        return out.transpose(1, 2).contiguous()
    return torch.baddbmm(b.unsqueeze(1), h, w)


def _weight_grad(h_in: Tensor, g: Tensor, out: Tensor) -> None:
    """``h_in^T @ g`` for every model, written to ``out`` ``[N, in, out]``."""
    if out.shape[-1] < _NARROW_OUTPUT:
        out.copy_(torch.bmm(g.transpose(1, 2), h_in).transpose(1, 2))
    else:
        torch.bmm(h_in.transpose(1, 2), g, out=out)


def _activation_backward(name: str, grad: Tensor, pre: Tensor, post: Tensor) -> Tensor:
    """``dL/dpre`` from ``dL/dpost`` (the ops autograd would call; ``relu`` works in place)."""
    if name == "relu":
        return _aten.threshold_backward.grad_input(grad, post, 0.0, grad_input=grad)
    if name == "tanh":
        return _aten.tanh_backward(grad, post)
    if name == "sigmoid":
        return _aten.sigmoid_backward(grad, post)
    if name == "gelu":
        return _aten.gelu_backward(grad, pre)
    if name == "silu":
        return _aten.silu_backward(grad, pre)
    if name == "elu":
        return _aten.elu_backward(grad, 1.0, 1.0, 1.0, False, pre)
    if name == "leaky_relu":
        return _aten.leaky_relu_backward(grad, pre, 0.01, False)
    raise AssertionError(f"unhandled activation {name}")  # pragma: no cover


class PopulationModel(Protocol):
    """What the trainer needs of a population of ``N`` models trained together.

    Two implementations: :class:`StackedModel` (the built-in kinds, differentiated by hand) and
    :class:`~loss_rl.training._functional.FunctionalModel` (any ``torch.nn.Module``, with
    ``torch.func``). Parameter ``k`` of model ``i`` is ``params[k][i]``; the trainer's optimiser
    updates :attr:`params` in place, and freezes or restores models row by row.
    """

    n: int
    num_params: int
    params: list[Tensor]

    def forward(self, x: Tensor, params: Sequence[Tensor] | None = None) -> Tensor:
        """Evaluation outputs ``[N, B, C]`` (``[N, B]`` for one output) of inputs ``[N, B, F]``."""
        ...

    def train_forward(self, x: Tensor) -> Tensor:
        """Training outputs (detached) of each model's minibatch; keeps what the backward needs."""
        ...

    def train_backward(self, dz: Tensor) -> list[Tensor]:
        """Per-model parameter gradients, in the order of ``params``, for ``dz = dL/dZ``."""
        ...

    def state_dict(self, i: int) -> dict[str, Tensor]:
        """Model ``i`` in the layout of the plain module's ``state_dict``."""
        ...

    def module(self, i: int) -> nn.Module:
        """Model ``i`` as a plain module."""
        ...


class StackedModel:
    """``N`` models of one spec trained together.

    Args:
        spec: The model spec.
        num_features: Inputs per sample.
        num_outputs: Classes, or 1 for regression (outputs are then ``[N, B]``).
        inits: Initialised plain modules (see :func:`loss_rl.tasks.build_model`), on the CPU.
        init_of_model: For each of the ``N`` models, the index of its module in ``inits``.
        device: Where the stacked parameters and gradients live (``None``: the CPU); inputs
            must be there too.
    """

    def __init__(
        self,
        spec: ModelConfig,
        num_features: int,
        num_outputs: int,
        inits: Sequence[nn.Module],
        init_of_model: Sequence[int],
        device: torch.device | None = None,
    ) -> None:
        self.spec = spec
        self.device = torch.device("cpu") if device is None else device
        self.num_features = num_features
        self.num_outputs = num_outputs
        self.n = len(init_of_model)
        self.act_name = spec.activation
        self.act = _ACTIVATIONS[spec.activation]
        self.manual = spec.kind != "cnn1d"
        # (kind, module name in the plain model); weights then biases, layer by layer
        self.layers: list[tuple[str, str]] = []
        for name, mod in inits[0].named_modules():
            if isinstance(mod, nn.Linear):
                self.layers.append(("linear", name))
            elif isinstance(mod, nn.Conv1d):
                self.layers.append(("conv", name))
        if spec.kind == "cnn1d":
            self.lengths = conv_lengths(spec, num_features)
        index = torch.as_tensor(list(init_of_model), dtype=torch.long)
        per_init = [self._tensors(m) for m in inits]
        # Stacked on the CPU where the modules were built, then moved (``.to`` is a no-op on
        # the CPU). Moved before requires_grad_ so that autograd's leaves are the device tensors.
        self.params: list[Tensor] = [
            torch.stack([t[k] for t in per_init])
            .index_select(0, index)
            .contiguous()
            .to(self.device)
            for k in range(len(per_init[0]))
        ]
        if not self.manual:
            for p in self.params:
                p.requires_grad_(True)
        self.grads: list[Tensor] = [torch.zeros_like(p) for p in self.params]
        self.num_params = sum(p[0].numel() for p in self.params)
        self._saved: list[tuple[Tensor, Tensor]] = []  # (pre, post) per hidden layer
        self._input: Tensor | None = None
        self._z: Tensor | None = None

    def _tensors(self, module: nn.Module) -> list[Tensor]:
        mods = dict(module.named_modules())
        out = []
        for kind, name in self.layers:
            m = mods[name]
            w = m.weight.detach()
            out += [w.t() if kind == "linear" else w, m.bias.detach()]
        return out

    def state_dict(self, i: int) -> dict[str, Tensor]:
        """Parameters of model ``i`` in the layout of the plain module's ``state_dict`` (copies,
        on the CPU whatever the population's device)."""
        out: dict[str, Tensor] = {}
        for k, (kind, name) in enumerate(self.layers):
            w, b = self.params[2 * k].detach()[i], self.params[2 * k + 1].detach()[i]
            out[f"{name}.weight"] = host_copy(w.t() if kind == "linear" else w)
            out[f"{name}.bias"] = host_copy(b)
        return out

    def module(self, i: int) -> nn.Module:
        """Model ``i`` as a plain module (e.g. to export or inspect it)."""
        m = build_model(self.spec, self.num_features, self.num_outputs, seed=0)
        m.load_state_dict(self.state_dict(i))
        return m

    # ------------------------------------------------------------------ forward
    def _conv_stack(self, x: Tensor, ps: Sequence[Tensor]) -> tuple[Tensor, int]:
        n, b = x.shape[0], x.shape[1]
        h = x.transpose(0, 1).reshape(b, n, -1)  # [B, N·C_in, L] with C_in = 1
        k = 0
        for kind, _ in self.layers:
            if kind != "conv":
                break
            w, bias = ps[k], ps[k + 1]
            c_out, c_in, ks = w.shape[1:]
            h = F.conv1d(
                h,
                w.reshape(n * c_out, c_in, ks),
                bias.reshape(n * c_out),
                stride=self.spec.stride,
                padding=self.spec.padding,
                groups=n,
            )
            h = self.act(h)
            k += 2
        return h.reshape(b, n, -1).transpose(0, 1), k  # [N, B, C_last·L_last]

    def forward(self, x: Tensor, params: Sequence[Tensor] | None = None) -> Tensor:
        """Outputs of all models (differentiable for ``cnn1d``; use under ``no_grad`` to
        evaluate).

        Args:
            x: Inputs ``[N, B, F]`` (an expanded view is fine when all models share them).
            params: Parameter tensors to use instead of the live ones.

        Returns:
            Logits ``[N, B, C]``, or predictions ``[N, B]`` for one output.
        """
        ps = self.params if params is None else params
        h, k = self._conv_stack(x, ps) if self.spec.kind == "cnn1d" else (x, 0)
        n_dense = (len(ps) - k) // 2
        for j in range(n_dense):
            h = _dense(h, ps[k], ps[k + 1])
            if j < n_dense - 1:
                h = self.act(h)
            k += 2
        return h.squeeze(-1) if self.num_outputs == 1 else h

    def train_forward(self, x: Tensor) -> Tensor:
        """Forward pass that keeps what :meth:`train_backward` needs; returns detached outputs."""
        if not self.manual:
            with torch.enable_grad():
                z = self.forward(x)
            self._z = z
            return z.detach()
        self._input = x
        self._saved = []
        h = x
        n_dense = len(self.params) // 2
        for j in range(n_dense):
            w, b = self.params[2 * j], self.params[2 * j + 1]
            pre = _dense(h, w, b)
            if j < n_dense - 1:
                post = pre.relu_() if self.act_name == "relu" else self.act(pre)
                self._saved.append((pre, post))
                h = post
            else:
                h = pre
        return h.squeeze(-1) if self.num_outputs == 1 else h

    def train_backward(self, dz: Tensor) -> list[Tensor]:
        """Gradients of every parameter for output gradient ``dz`` (written to :attr:`grads`)."""
        if not self.manual:
            assert self._z is not None
            grads = torch.autograd.grad(self._z, self.params, dz)
            for buf, g in zip(self.grads, grads, strict=True):
                buf.copy_(g)
            self._z = None
            return self.grads
        assert self._input is not None
        g = dz.unsqueeze(-1) if self.num_outputs == 1 else dz
        n_dense = len(self.params) // 2
        for j in reversed(range(n_dense)):
            h_in = self._input if j == 0 else self._saved[j - 1][1]
            _weight_grad(h_in, g, self.grads[2 * j])
            torch.sum(g, 1, out=self.grads[2 * j + 1])
            if j > 0:
                gh = torch.bmm(g, self.params[2 * j].transpose(1, 2))
                pre, post = self._saved[j - 1]
                g = _activation_backward(self.act_name, gh, pre, post)
        self._saved = []
        self._input = None
        return self.grads
