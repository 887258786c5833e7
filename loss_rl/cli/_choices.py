"""The CLI's choice types (task kinds, export formats, reductions, executors) and option ranges.

They mirror :class:`loss_rl.expr.TaskKind`, :data:`loss_rl.export.FORMATS`, the reductions and
:data:`loss_rl.executors.EXECUTORS`: importing those would import torch, and ``loss-rl --help``
should not wait for it. ``tests/test_cli.py`` keeps them equal.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

DEFAULT_ENV = "synthetic_noisy"
"""The env preset of ``loss-rl search`` and ``evaluate``: :data:`loss_rl.presets.DEFAULT_ENV`."""

TrustCode = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="Import the model factory the run folder names (task.model.factory): it runs "
        "that code. Only for folders whose author you trust.",
    ),
]
"""``--trust-code`` of the commands that open a run folder (the trust gate of model code)."""

MAX_SEED = 2**32 - 1
"""Largest ``--seed``: numpy and SB3 take unsigned 32-bit seeds (the library checks it too)."""

MAX_VERIFY_SEEDS = 1000
"""Largest ``--seeds`` of a verification (``evaluate``, ``refine``, ``meta-train``).

The verification lists its fresh seeds up front: ``--seeds 4294967296`` ran out of memory
before training anything. Equal to ``loss_rl._refine.MAX_VERIFY_SEEDS`` (``tests/``).
"""


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
