"""loss_rl: discover training loss functions with reinforcement learning.

The public API is re-exported here; everything else lives in private modules or subpackages.
Importing :mod:`loss_rl` loads the loss language (torch) but not the RL stack (gymnasium,
stable-baselines3), which the search imports when it runs.

Example:
    >>> import loss_rl
    >>> focal = loss_rl.parse("-(1 - p_y)^2 * log_p_y")
    >>> loss_rl.check(focal).ok
    True
    >>> criterion = loss_rl.ExprLoss(focal)  # a torch.nn.Module: criterion(logits, targets)
"""

from loss_rl._version import __version__
from loss_rl.errors import ConfigError, LossRLError, LossSpecError, LossSyntaxError
from loss_rl.export import export, load_loss
from loss_rl.expr import KNOWN_LOSSES, Expr, ExprLoss, check, compile_loss, known_loss, parse

__all__ = [
    "KNOWN_LOSSES",
    "ConfigError",
    "Expr",
    "ExprLoss",
    "LossRLError",
    "LossSpecError",
    "LossSyntaxError",
    "__version__",
    "check",
    "compile_loss",
    "export",
    "known_loss",
    "load_loss",
    "parse",
]
