"""Which device the batched trainer runs on, and getting tensors back to the host.

The trainer runs on the CPU by default, its population split over worker processes (see
:mod:`loss_rl.training._workers`). On a CUDA device it trains the whole population in the calling
process instead: one GPU holds every model, and worker processes would only contend for it.
Everything that leaves :func:`~loss_rl.training.train` (metrics, saved states) is on the CPU
whatever the device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from loss_rl.errors import ConfigError

_FIELD = "device"
_CPU = torch.device("cpu")


def _no_cuda() -> ConfigError:
    build = (
        f"torch {torch.__version__} is built without CUDA"
        if torch.version.cuda is None
        else f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU"
    )
    return ConfigError(
        f"CUDA is not available on this machine ({build}); use device: cpu or auto",
        field=_FIELD,
    )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device a ``device`` setting names, checked against this machine.

    Args:
        device: ``None`` or ``"cpu"`` (the CPU, the default); ``"cuda"`` or ``"cuda:N"`` (that
            GPU, which must exist); ``"auto"`` (``"cuda"`` when a GPU is available, else the
            CPU); or a :class:`torch.device` of type ``cpu`` or ``cuda``.

    Returns:
        The device. A bare ``"cuda"`` stays index-less (torch's current GPU), so that resolving
        it never initialises CUDA.

    Raises:
        ConfigError: (field ``device``) for any other value, or for a CUDA device on a machine
            without CUDA or without that GPU.
    """
    if device is None:
        return _CPU
    if isinstance(device, str):
        if device == "auto":
            return torch.device("cuda") if torch.cuda.is_available() else _CPU
        try:
            parsed = torch.device(device)
        except (RuntimeError, ValueError):
            parsed = None
    elif isinstance(device, torch.device):
        parsed = device
    else:  # an int would be read by torch as a CUDA index: refuse rather than guess
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"unknown device {device!r}; use cpu, cuda, cuda:N (N a GPU index) or auto",
            field=_FIELD,
        )
    if parsed.type == "cpu":
        return _CPU
    if not torch.cuda.is_available():
        raise _no_cuda()
    if parsed.index is not None:
        count = torch.cuda.device_count()
        if parsed.index >= count:
            raise ConfigError(
                f"no GPU cuda:{parsed.index} on this machine ({count} visible: cuda:0 to "
                f"cuda:{count - 1}); use cuda, a smaller index, or cpu",
                field=_FIELD,
            )
    return parsed


def host_copy(t: Tensor) -> Tensor:
    """A detached copy of ``t`` on the CPU (``clone()`` there, so CPU results stay identical)."""
    t = t.detach()
    return t.clone() if t.device.type == "cpu" else t.cpu()
