"""Model specs as plain single-model ``torch.nn`` modules.

These modules are the reference semantics: the batched trainer stacks the parameters of exactly
these modules (built with the same seed) and must reproduce their training.

Initialisation follows PyTorch's defaults for ``nn.Linear`` / ``nn.Conv1d`` (weights and biases
uniform in ``±1/sqrt(fan_in)``) but draws from a private generator seeded by ``seed``, so building
a model never touches the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from loss_rl.errors import ConfigError
from loss_rl.tasks._config import ModelConfig

#: Activation name -> module factory (``leaky_relu`` uses torch's default slope 0.01).
ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}


class _ToSequence(nn.Module):
    """``[B, L]`` features -> ``[B, 1, L]`` one-channel sequence."""

    def forward(self, x: Tensor) -> Tensor:
        return x.unsqueeze(-2)


class _Squeeze(nn.Module):
    """``[B, 1]`` regression output -> ``[B]`` prediction."""

    def forward(self, x: Tensor) -> Tensor:
        return x.squeeze(-1)


def conv_lengths(spec: ModelConfig, length: int) -> list[int]:
    """Sequence length after each convolution of a ``cnn1d`` spec, starting with ``length``.

    Raises:
        ConfigError: if a convolution would produce an empty sequence.
    """
    out = [length]
    for i, k in enumerate(spec.kernel_sizes):
        nxt = (out[-1] + 2 * spec.padding - k) // spec.stride + 1
        if nxt < 1:
            raise ConfigError(
                f"convolution {i} (kernel {k}, stride {spec.stride}, padding {spec.padding}) "
                f"gets a sequence of length {out[-1]} and leaves nothing; use fewer or smaller "
                "convolutions",
                field=f"task.model.kernel_sizes[{i}]",
            )
        out.append(nxt)
    return out


def build_model(
    spec: ModelConfig, num_features: int, num_outputs: int, seed: int | None = None
) -> nn.Module:
    """Build the single model described by ``spec``.

    Args:
        spec: Model configuration.
        num_features: Input features (the sequence length for ``cnn1d``).
        num_outputs: Classes, or 1 for regression (the output is then squeezed to ``[B]``).
        seed: Initialisation seed; ``None`` draws from the global torch RNG.

    Returns:
        An ``nn.Sequential`` mapping ``[B, num_features]`` to logits ``[B, num_outputs]``
        (or predictions ``[B]`` when ``num_outputs == 1``).

    Raises:
        ConfigError: for impossible sizes.
    """
    if num_features < 1 or num_outputs < 1:
        raise ConfigError(
            f"a model needs at least one input and one output (got {num_features}, "
            f"{num_outputs})",
            field="task.model",
        )
    # nn.Linear / nn.Conv1d initialise themselves from the global RNG on construction: build
    # inside a fork so that building a model never moves the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        model = _layers(spec, num_features, num_outputs)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                m.weight.uniform_(-bound, bound, generator=generator)
                m.bias.uniform_(-bound, bound, generator=generator)
    return model


def _layers(spec: ModelConfig, num_features: int, num_outputs: int) -> nn.Sequential:
    act = ACTIVATION_MODULES[spec.activation]
    layers: list[nn.Module] = []
    if spec.kind == "cnn1d":
        lengths = conv_lengths(spec, num_features)
        layers.append(_ToSequence())
        c_in = 1
        for c_out, k in zip(spec.channels, spec.kernel_sizes, strict=True):
            layers += [nn.Conv1d(c_in, c_out, k, stride=spec.stride, padding=spec.padding), act()]
            c_in = c_out
        layers += [nn.Flatten(), nn.Linear(c_in * lengths[-1], num_outputs)]
    else:
        width = num_features
        for h in spec.hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        layers.append(nn.Linear(width, num_outputs))
    if num_outputs == 1:
        layers.append(_Squeeze())
    return nn.Sequential(*layers)
