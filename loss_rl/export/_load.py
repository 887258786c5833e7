"""Loading exported losses: :func:`read_spec` for a JSON spec, :func:`load_loss` for any export.

A JSON spec is parsed by the loss language's own parser into an :class:`~loss_rl.expr.ExprLoss`
and a neural-loss spec is rebuilt from its weights as data, so nothing is ever executed; a
TorchScript file is loaded with ``torch.jit.load``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from loss_rl.errors import LossSpecError
from loss_rl.export._spec import LossSpec, spec_from_text
from loss_rl.neural_loss import SCHEMA as NEURAL_SCHEMA
from loss_rl.neural_loss import load_neural_loss

_MAX_SPEC_BYTES = 1 << 20


def read_spec(path: str | Path) -> LossSpec:
    """Read and validate a JSON spec file.

    Raises:
        LossSpecError: if the file is missing, too large, not UTF-8 JSON, or not a valid spec.
    """
    path = Path(path)
    if not path.is_file():
        raise LossSpecError(f"no loss spec file at {path}", field="path")
    if path.stat().st_size > _MAX_SPEC_BYTES:
        raise LossSpecError(
            f"{path} is larger than {_MAX_SPEC_BYTES} bytes; a loss spec is a small JSON file",
            field="path",
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise LossSpecError(f"{path}: not UTF-8 text; a loss spec is JSON", field="json") from None
    return spec_from_text(text, str(path))


def load_loss(path: str | Path) -> torch.nn.Module:
    """Load an exported loss as a ``torch.nn.Module`` (``forward(input, target)``).

    Args:
        path: A JSON spec (read as data and compiled by the library into an
            :class:`~loss_rl.expr.ExprLoss`), a neural-loss JSON spec (``"schema":
            "loss_rl.neural_loss"``, weights as data, rebuilt by
            :func:`loss_rl.neural_loss.load_neural_loss`) or a TorchScript ``.pt`` file
            (``torch.jit.load``: code, so only a ``.pt`` file is taken for one).

    Raises:
        LossSpecError: if the file is missing, is Python source (never executed: import it
            yourself), or is not a valid spec or TorchScript archive.
    """
    path = Path(path)
    if not path.is_file():
        raise LossSpecError(f"no loss file at {path}", field="path")
    if path.suffix == ".py":
        raise LossSpecError(
            f"{path} is Python source, and load_loss never executes code; import it yourself "
            "(it defines DiscoveredLoss) or load the .json/TorchScript export instead",
            field="path",
        )
    if zipfile.is_zipfile(path):
        # TorchScript is code: it runs only when the file says it is TorchScript (``.pt``), never
        # because some zip (an agent.zip, a renamed archive) happened to be passed.
        if path.suffix != ".pt":
            raise LossSpecError(
                f"{path} is a zip archive, not a loss spec; load_loss runs TorchScript (code) only "
                "from a .pt file: rename it if you trust it, or load it with torch.jit.load",
                field="path",
            )
        try:
            return torch.jit.load(str(path))
        except (RuntimeError, ValueError, OSError) as err:
            raise LossSpecError(
                f"{path} is not a TorchScript module saved by torch.jit.save ({err})", field="path"
            ) from None
    if _is_neural_spec(path):
        return load_neural_loss(path)
    return read_spec(path).module()


def _is_neural_spec(path: Path) -> bool:
    """Whether ``path`` is a JSON neural-loss spec (:mod:`loss_rl.neural_loss`), by its schema."""
    # Weights make neural specs larger than expression specs; still bounded, still data only.
    if path.stat().st_size > 64 * _MAX_SPEC_BYTES:
        return False
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("schema") == NEURAL_SCHEMA
