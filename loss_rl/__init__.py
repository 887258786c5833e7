"""loss_rl: discover training loss functions with reinforcement learning.

The public API is re-exported here; everything else lives in private modules or subpackages.
Importing :mod:`loss_rl` loads the loss language (torch) and registers the gymnasium ids
``loss_rl/LossDesign-v0`` and ``loss_rl/<preset>-v0`` (``gymnasium.make`` works right after
``import loss_rl``), but not the RL stack (the envs themselves, stable-baselines3), which is
imported when an env is made or a search runs.

Example:
    >>> import loss_rl
    >>> focal = loss_rl.parse("-(1 - p_y)^2 * log_p_y")
    >>> loss_rl.check(focal).ok
    True
    >>> criterion = loss_rl.ExprLoss(focal)  # a torch.nn.Module: criterion(logits, targets)
"""

from typing import Any

from loss_rl._version import __version__
from loss_rl.errors import ConfigError, LossRLError, LossSpecError, LossSyntaxError, RunError
from loss_rl.export import export, load_loss
from loss_rl.expr import KNOWN_LOSSES, Expr, ExprLoss, check, compile_loss, known_loss, parse
from loss_rl.presets import register_envs

register_envs()

# Loaded on first use: the search pulls in gymnasium and stable-baselines3, meta-learning its own
# machinery; `import loss_rl` for exporting or loading a loss should not wait for them.
_LAZY = {
    "search": "loss_rl._search",
    "resume": "loss_rl._search",
    "Search": "loss_rl._search",
    "DataSpec": "loss_rl._search",
    "list_runs": "loss_rl._search",
    "load_run": "loss_rl.store",
    "refine": "loss_rl._refine",
    "meta_train": "loss_rl._refine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'loss_rl' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "KNOWN_LOSSES",
    "ConfigError",
    "DataSpec",
    "Expr",
    "ExprLoss",
    "LossRLError",
    "LossSpecError",
    "LossSyntaxError",
    "RunError",
    "Search",
    "__version__",
    "check",
    "compile_loss",
    "export",
    "known_loss",
    "list_runs",
    "load_loss",
    "load_run",
    "meta_train",
    "parse",
    "refine",
    "resume",
    "search",
]
