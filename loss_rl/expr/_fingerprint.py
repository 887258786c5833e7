"""Numeric fingerprints: detect losses that look different but train identically."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from loss_rl.expr._compile import compile_loss
from loss_rl.expr._nodes import Expr, TaskKind, task_kind
from loss_rl.expr._probes import probes

FINGERPRINT_DIGITS = 4


def fingerprint(expr: Expr, kind: TaskKind | str | None = None) -> str | None:
    """Hash of the loss's per-sample gradient with respect to the model output on fixed probes.

    Training depends on a loss only through this gradient, so two losses with equal fingerprints
    (e.g. ``L`` and ``L + 1``, or ``2 * L / 2``) train identically; the evaluator reuses one's
    result for the other. Gradients are rounded to :data:`FINGERPRINT_DIGITS` significant digits.

    Returns:
        A 16-character hex string, or ``None`` if the loss cannot be evaluated to finite
        gradients on the probes.
    """
    try:
        kind = TaskKind(kind) if kind is not None else (task_kind(expr) or TaskKind.CLASSIFICATION)
        fn = compile_loss(expr, kind)
    except ValueError:  # LossSpecError too: mixed leaves, wrong kind, vector root
        return None
    x, y = probes(kind)
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = fn(x, y)
        if not torch.isfinite(loss).all():
            return None
        (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
    g = np.zeros(tuple(x.shape)) if grad is None else grad.detach().numpy()
    if not np.isfinite(g).all():
        return None
    rounded = np.array([float(f"{v:.{FINGERPRINT_DIGITS}g}") for v in g.ravel()]) + 0.0
    return hashlib.sha1(rounded.tobytes()).hexdigest()[:16]
