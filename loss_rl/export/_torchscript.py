"""The TorchScript export: the generated ``DiscoveredLoss`` compiled with ``torch.jit.script``.

The file is saved with ``torch.jit.save``; the JSON spec rides along as the extra file
:data:`EXTRA_FILE`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch

from loss_rl.export._module import module_source
from loss_rl.export._spec import LossSpec

#: Name of the extra file of a TorchScript export that holds the JSON spec.
EXTRA_FILE = "loss_rl.json"


def script_module(spec: LossSpec) -> torch.jit.ScriptModule:
    """The generated ``DiscoveredLoss`` of ``spec``, compiled with ``torch.jit.script``."""
    with _generated_module(module_source(spec)) as module:
        return torch.jit.script(module.DiscoveredLoss(spec.reduction))


@contextmanager
def _generated_module(source: str) -> Iterator[ModuleType]:
    """Import generated module source while its file exists.

    TorchScript reads a class's source through ``inspect``, which needs the file and the module
    in ``sys.modules``, so the source goes to a temporary file imported with :mod:`importlib`.
    The source is generated from a parsed tree, never taken from user text.
    """
    name = "_loss_rl_generated_" + hashlib.sha1(source.encode()).hexdigest()[:16]
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / f"{name}.py"
        file.write_text(source, encoding="utf-8")
        found = importlib.util.spec_from_file_location(name, file)
        assert found is not None and found.loader is not None
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        try:
            found.loader.exec_module(module)
            yield module
        finally:
            del sys.modules[name]
