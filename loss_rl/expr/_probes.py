"""Fixed probe inputs shared by the fingerprint and the validity checks."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from loss_rl.expr._nodes import TaskKind

PROBE_CLASSES = 5
PROBE_SAMPLES = 64


@lru_cache(maxsize=4)
def probes(kind: TaskKind) -> tuple[Tensor, Tensor]:
    """Deterministic ``(input, target)`` probes in float64.

    Classification probes mix moderate logits with saturated ones (probabilities at 0 and 1), so
    that numeric guards are exercised. Regression probes mix small and large residuals.
    """
    g = torch.Generator().manual_seed(20240611)
    n = PROBE_SAMPLES
    if kind is TaskKind.CLASSIFICATION:
        z = torch.randn(n, PROBE_CLASSES, generator=g, dtype=torch.float64) * 2.0
        y = torch.randint(0, PROBE_CLASSES, (n,), generator=g)
        # Saturated rows: the true class certain (p_y -> 1) and hopeless (p_y -> 0).
        z[:4] = 0.0
        z[0, y[0]] = 60.0
        z[1, y[1]] = -60.0
        z[2, (y[2] + 1) % PROBE_CLASSES] = 60.0
        return z, y
    pred = torch.randn(n, generator=g, dtype=torch.float64)
    target = torch.randn(n, generator=g, dtype=torch.float64)
    pred[:4] = torch.tensor([0.0, 50.0, -50.0, 1e-9], dtype=torch.float64)
    target[:4] = torch.tensor([0.0, -50.0, 50.0, 0.0], dtype=torch.float64)
    return pred, target
