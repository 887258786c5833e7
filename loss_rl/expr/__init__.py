"""The loss language: primitives, expression trees, parsing, canonical keys, compilation,
numeric fingerprints, validity checks and the library of known losses.

This package imports nothing else of loss_rl (but :mod:`loss_rl.errors`).
"""

from loss_rl.expr._canonical import canonical, round_constant
from loss_rl.expr._checks import CheckResult, check
from loss_rl.expr._compile import CompiledLoss, ExprLoss, compile_loss, reduce
from loss_rl.expr._fingerprint import fingerprint
from loss_rl.expr._nodes import (
    BINARY_OPS,
    LEAVES,
    OPS,
    REDUCTIONS,
    UNARY_OPS,
    Const,
    Expr,
    Leaf,
    LeafSpec,
    Op,
    OpSpec,
    TaskKind,
    const,
    is_vector,
    leaf,
    op,
    task_kind,
)
from loss_rl.expr._parse import parse
from loss_rl.expr.library import KNOWN_LOSSES, KnownLoss, known_loss

__all__ = [
    "BINARY_OPS",
    "KNOWN_LOSSES",
    "LEAVES",
    "OPS",
    "REDUCTIONS",
    "UNARY_OPS",
    "CheckResult",
    "CompiledLoss",
    "Const",
    "Expr",
    "ExprLoss",
    "KnownLoss",
    "Leaf",
    "LeafSpec",
    "Op",
    "OpSpec",
    "TaskKind",
    "canonical",
    "check",
    "compile_loss",
    "const",
    "fingerprint",
    "is_vector",
    "known_loss",
    "leaf",
    "op",
    "parse",
    "reduce",
    "round_constant",
    "task_kind",
]
