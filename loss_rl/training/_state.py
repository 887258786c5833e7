"""The saved training state of one model, so that a later :func:`~loss_rl.training.train` call can
continue it (multi-fidelity evaluation promotes a candidate from one rung to the next this way).

A :class:`ModelState` holds plain tensors and numbers only. :func:`states_to_bytes` writes a list
of them with ``torch.save`` of a ``dict[str, Tensor]`` and :func:`states_from_bytes` reads it with
``weights_only=True``: a saved state can never carry code.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from loss_rl.errors import ConfigError


@dataclass(frozen=True)
class ModelState:
    """Everything the batched trainer needs to continue training one (candidate, seed) model.

    Attributes:
        step: Optimiser steps taken so far.
        params: The model's parameters after its last step (not its selected checkpoint).
        optimizer: The optimiser's per-model state (Adam: first then second moments, one tensor
            per parameter; SGD with momentum: the momentum buffers; otherwise empty).
        loss_bound: The divergence bound fixed by the model's first step (``None`` before it).
        best_score: Best validation score among the checkpoint checks so far (``-inf`` if none;
            ``select: best`` only).
        best_step: Step of that checkpoint (``-1`` if none).
        waits: Checks since the last improvement (for ``patience``).
        best_params: Parameters of that checkpoint (empty for ``select: last``).
        stopped_at: Step at which early stopping froze the model (``None`` while it trains).
    """

    step: int
    params: tuple[Tensor, ...]
    optimizer: tuple[Tensor, ...] = ()
    loss_bound: float | None = None
    best_score: float = -math.inf
    best_step: int = -1
    waits: int = 0
    best_params: tuple[Tensor, ...] = ()
    stopped_at: int | None = None


_GROUPS = ("params", "optimizer", "best_params")


def states_to_bytes(states: Sequence[ModelState]) -> bytes:
    """Serialise states: ``torch.save`` of plain tensors (read by :func:`states_from_bytes`)."""
    flat: dict[str, Tensor] = {"count": torch.tensor(len(states))}
    for i, s in enumerate(states):
        bound = math.nan if s.loss_bound is None else s.loss_bound
        stopped = -1 if s.stopped_at is None else s.stopped_at
        flat[f"{i}.numbers"] = torch.tensor(
            [s.step, bound, s.best_score, s.best_step, s.waits, stopped], dtype=torch.float64
        )
        for group in _GROUPS:
            for k, t in enumerate(getattr(s, group)):
                flat[f"{i}.{group}.{k}"] = t.detach().contiguous()
    buf = io.BytesIO()
    torch.save(flat, buf)
    return buf.getvalue()


def states_from_bytes(data: bytes) -> list[ModelState]:
    """Read states written by :func:`states_to_bytes` (``weights_only``: tensors, never code).

    Raises:
        ConfigError: if ``data`` is not a saved list of states.
    """
    try:
        flat = torch.load(io.BytesIO(data), weights_only=True)
        count = int(flat["count"])
        out = []
        for i in range(count):
            step, bound, best, best_step, waits, stopped = flat[f"{i}.numbers"].tolist()
            groups = {
                g: tuple(flat[f"{i}.{g}.{k}"] for k in range(_group_size(flat, i, g)))
                for g in _GROUPS
            }
            out.append(
                ModelState(
                    step=int(step),
                    loss_bound=None if math.isnan(bound) else bound,
                    best_score=best,
                    best_step=int(best_step),
                    waits=int(waits),
                    stopped_at=None if stopped < 0 else int(stopped),
                    **groups,
                )
            )
    except Exception as err:  # a damaged blob: one clear error, not a torch traceback
        raise ConfigError(f"not a saved training state ({err})", field="state") from None
    return out


def _group_size(flat: dict[str, Tensor], i: int, group: str) -> int:
    k = 0
    while f"{i}.{group}.{k}" in flat:
        k += 1
    return k
