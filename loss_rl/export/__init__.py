"""Export discovered losses, and load them back.

Three formats:

- ``json``: a versioned spec, data only::

      {"schema": "loss_rl.loss", "schema_version": 1, "expression": "-(1 - p_y)^2 * log_p_y",
       "kind": "classification", "reduction": "mean", "metadata": {"score": 0.83}}

- ``py``: a standalone Python module that imports only torch and defines
  ``class DiscoveredLoss(torch.nn.Module)``, documented like the losses of ``torch.nn``; its code is
  generated from the expression tree with the library's numeric guards, so it matches the
  library's loss in values and gradients, and it compiles with ``torch.jit.script``;
- ``torchscript``: that module scripted and saved with ``torch.jit.save`` (the JSON spec rides along
  as the extra file ``loss_rl.json``).

:func:`load_loss` reads a JSON spec (parsed by the loss language's own parser into an
:class:`~loss_rl.expr.ExprLoss`, never executing anything), a neural-loss spec
(:mod:`loss_rl.neural_loss`) or a TorchScript file.

One concept per private module: ``_spec`` (the JSON spec: :class:`LossSpec`, parsing and
validation), ``_load`` (:func:`read_spec`, :func:`load_loss`), ``_module`` (the standalone
``.py`` template, :func:`module_source`), ``_torchscript`` (:func:`script_module`) and ``_write``
(:func:`export`).
"""

from loss_rl.export._load import load_loss, read_spec
from loss_rl.export._module import module_source
from loss_rl.export._spec import (
    REDUCTIONS,
    SCHEMA,
    SCHEMA_VERSION,
    LossSpec,
    spec_from_json,
    spec_from_text,
)
from loss_rl.export._torchscript import EXTRA_FILE, script_module
from loss_rl.export._write import FORMATS, ExportFormat, export

__all__ = [
    "EXTRA_FILE",
    "FORMATS",
    "REDUCTIONS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "ExportFormat",
    "LossSpec",
    "export",
    "load_loss",
    "module_source",
    "read_spec",
    "script_module",
    "spec_from_json",
    "spec_from_text",
]
