"""The loss language: primitives, expression trees, parsing, canonical keys, compilation,
code generation, numeric fingerprints, validity checks, simplified display, the library of known
losses and the novelty check against it.

This package imports nothing else of loss_rl (but :mod:`loss_rl.errors`).
"""

from loss_rl.expr._canonical import canonical, integer_exponent, round_constant
from loss_rl.expr._checks import CheckResult, check
from loss_rl.expr._codegen import GUARD_NOTES, HELPERS, TorchCode, latex, torch_code
from loss_rl.expr._compile import (
    BINARY_FUNCTIONS,
    UNARY_FUNCTIONS,
    CompiledLoss,
    ExprLoss,
    LeafContext,
    Reduction,
    compile_loss,
    reduce,
    safe_denominator,
    safe_log,
)
from loss_rl.expr._fingerprint import fingerprint
from loss_rl.expr._nodes import (
    BINARY_OPS,
    EPS,
    EXP_MAX,
    LEAVES,
    OPS,
    REDUCTIONS,
    SQRT_EPS,
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
from loss_rl.expr._novelty import GRADIENT_RTOL, KnownMatch, known_equivalent
from loss_rl.expr._parse import parse
from loss_rl.expr._probes import probes
from loss_rl.expr._simplify import simplified_size, simplify
from loss_rl.expr.library import KNOWN_LOSSES, KnownLoss, format_params, known_loss

__all__ = [
    "BINARY_FUNCTIONS",
    "BINARY_OPS",
    "EPS",
    "EXP_MAX",
    "GRADIENT_RTOL",
    "GUARD_NOTES",
    "HELPERS",
    "KNOWN_LOSSES",
    "LEAVES",
    "OPS",
    "REDUCTIONS",
    "SQRT_EPS",
    "UNARY_FUNCTIONS",
    "UNARY_OPS",
    "CheckResult",
    "CompiledLoss",
    "Const",
    "Expr",
    "ExprLoss",
    "KnownLoss",
    "KnownMatch",
    "Leaf",
    "LeafContext",
    "LeafSpec",
    "Op",
    "OpSpec",
    "Reduction",
    "TaskKind",
    "TorchCode",
    "canonical",
    "check",
    "compile_loss",
    "const",
    "fingerprint",
    "format_params",
    "integer_exponent",
    "is_vector",
    "known_equivalent",
    "known_loss",
    "latex",
    "leaf",
    "op",
    "parse",
    "probes",
    "reduce",
    "round_constant",
    "safe_denominator",
    "safe_log",
    "simplified_size",
    "simplify",
    "task_kind",
    "torch_code",
]
