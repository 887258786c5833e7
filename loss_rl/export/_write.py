"""Writing a loss: :func:`export` as a JSON spec, a standalone ``.py`` module or TorchScript."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from loss_rl.errors import LossSpecError
from loss_rl.export._module import module_source
from loss_rl.export._spec import LossSpec
from loss_rl.export._torchscript import EXTRA_FILE, script_module
from loss_rl.expr import Expr, Reduction, TaskKind, parse

ExportFormat = Literal["json", "py", "torchscript"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)


def export(
    expr: Expr | str,
    path: str | Path,
    format: ExportFormat = "json",
    *,
    kind: TaskKind | str | None = None,
    reduction: Reduction = "mean",
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Export a loss as a JSON spec, a standalone ``.py`` module, or TorchScript.

    Args:
        expr: The per-sample loss expression (or its text in the loss language).
        path: File to write; parent folders are created.
        format: ``"json"``, ``"py"`` or ``"torchscript"`` (see :mod:`loss_rl.export`).
        kind: ``"classification"`` or ``"regression"``; inferred from the leaves when omitted.
        reduction: Default batch reduction of the exported loss.
        metadata: JSON-serialisable facts to keep with the loss (e.g. ``{"score": 0.83}``).

    Returns:
        The path written.

    Raises:
        LossSpecError: for an unknown format, an expression that does not compile for ``kind``,
            or invalid ``reduction``/``metadata``.

    Example:
        >>> from loss_rl import export, load_loss, known_loss
        >>> path = export(known_loss("gce"), "gce.json")  # doctest: +SKIP
        >>> criterion = load_loss(path)  # doctest: +SKIP
    """
    if format not in FORMATS:
        raise LossSpecError(
            f"unknown export format {format!r}; use one of {', '.join(FORMATS)}", field="format"
        )
    spec = LossSpec.of(parse(expr) if isinstance(expr, str) else expr, kind, reduction, metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "json":
        path.write_text(json.dumps(spec.to_json(), indent=2) + "\n", encoding="utf-8")
    elif format == "py":
        path.write_text(module_source(spec), encoding="utf-8")
    else:
        scripted = script_module(spec)
        extra = {EXTRA_FILE: json.dumps(spec.to_json())}
        torch.jit.save(scripted, str(path), _extra_files=extra)
    return path
