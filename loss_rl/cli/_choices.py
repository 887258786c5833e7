"""The CLI's choice types: task kinds, export formats, reductions and executors.

They mirror :class:`loss_rl.expr.TaskKind`, :data:`loss_rl.export.FORMATS`, the reductions and
:data:`loss_rl.executors.EXECUTORS`: importing those would import torch, and ``loss-rl --help``
should not wait for it. ``tests/test_cli.py`` keeps them equal.
"""

from __future__ import annotations

from enum import Enum


class Kind(str, Enum):
    """Task kinds, as CLI choices."""

    classification = "classification"
    regression = "regression"


class Format(str, Enum):
    """Export formats, as CLI choices."""

    json = "json"
    py = "py"
    torchscript = "torchscript"


class Reduction(str, Enum):
    """Batch reductions, as CLI choices."""

    mean = "mean"
    sum = "sum"
    none = "none"


class ExecutorName(str, Enum):
    """Executors (loss_rl.executors.EXECUTORS), as CLI choices."""

    inprocess = "inprocess"
    ray = "ray"
