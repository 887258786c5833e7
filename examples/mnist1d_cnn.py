"""A small 1-D ConvNet for MNIST-1D, as a ``module`` model factory for loss_rl.

The architecture is the MNIST-1D authors' ``ConvBase`` (Greydanus & Kobak, "Scaling *down* deep
learning with MNIST-1D", 2024; github.com/greydanus/mnist1d): three ``Conv1d`` + ReLU layers
with stride 2 over the 40-long signal read as a one-channel sequence, then a linear head on the
flattened feature maps. Use it from a task config::

    model: {kind: module, factory: "mnist1d_cnn.py:make_model", kwargs: {channels: 32}}

(a ``.py`` path is taken from the current directory, or, in ``examples/mnist1d_cnn.yaml``,
from the preset's folder once the preset loader resolves it: see
:meth:`loss_rl.tasks.ModelConfig.resolved`).
"""

from __future__ import annotations

from torch import Tensor, nn

#: (kernel size, padding) of each convolution; every convolution has stride 2.
LAYERS: tuple[tuple[int, int], ...] = ((5, 1), (3, 1), (3, 1))
STRIDE = 2


class ConvNet1d(nn.Module):
    """``[B, L]`` signals -> ``[B, num_outputs]`` logits: 3 × (Conv1d, ReLU), then Linear.

    Args:
        num_features: Length ``L`` of the signal (40 for MNIST-1D).
        num_outputs: Classes (10 for MNIST-1D).
        channels: Channels of every convolution.
    """

    def __init__(self, num_features: int, num_outputs: int, channels: int = 32) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        c_in, length = 1, num_features
        for kernel, padding in LAYERS:
            convs += [nn.Conv1d(c_in, channels, kernel, stride=STRIDE, padding=padding), nn.ReLU()]
            c_in, length = channels, (length + 2 * padding - kernel) // STRIDE + 1
        if length < 1:
            raise ValueError(f"a signal of length {num_features} is too short for 3 convolutions")
        self.features = nn.Sequential(*convs)
        self.head = nn.Linear(channels * length, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of a batch of signals ``[B, L]``."""
        return self.head(self.features(x.unsqueeze(-2)).flatten(-2))


def make_model(num_features: int, num_outputs: int, channels: int = 32) -> nn.Module:
    """The factory loss_rl calls: a freshly initialised :class:`ConvNet1d`.

    Args:
        num_features: Length of the signal (40 for MNIST-1D).
        num_outputs: Classes (10 for MNIST-1D).
        channels: Channels of every convolution (the paper uses 25; 32 gives ~8,000
            parameters on MNIST-1D).

    Returns:
        The module (PyTorch's default initialisation, drawn from the RNG loss_rl seeds).
    """
    return ConvNet1d(num_features, num_outputs, channels)
