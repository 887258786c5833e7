"""Expression trees of the loss language: leaves, constants and operator nodes.

A loss expression is an immutable tree that describes the *per-sample* loss. The batch
reduction (``mean`` by default) is applied outside the tree by the compiled module, exactly as
``torch.nn.modules.loss`` separates the elementwise loss from ``reduction``.

Two value shapes exist inside a tree: *per-sample scalars* (shape ``[..., B]``) and *per-class
vectors* (shape ``[..., B, C]``, classification only). Elementwise operators broadcast a scalar
against a vector; ``sum_c``/``mean_c`` reduce a vector over classes. The root must be a scalar.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from loss_rl.errors import LossSpecError


class TaskKind(str, Enum):
    """Which kind of supervised task a loss is written for."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


@dataclass(frozen=True)
class LeafSpec:
    """A named input of the loss language.

    Attributes:
        name: Token used in expressions.
        kind: Task kind the leaf belongs to.
        vector: ``True`` for per-class vectors ``[..., B, C]``, ``False`` for per-sample scalars.
        uses_prediction: The leaf's value depends on the model output.
        uses_target: The leaf's value depends on the target.
        doc: One-line meaning.
    """

    name: str
    kind: TaskKind
    vector: bool
    uses_prediction: bool
    uses_target: bool
    doc: str


_C = TaskKind.CLASSIFICATION
_R = TaskKind.REGRESSION

LEAVES: dict[str, LeafSpec] = {
    s.name: s
    for s in (
        LeafSpec("p_y", _C, False, True, True, "softmax probability of the true class"),
        LeafSpec("log_p_y", _C, False, True, True, "log-softmax of the true class"),
        LeafSpec("p", _C, True, True, False, "per-class softmax probabilities"),
        LeafSpec("log_p", _C, True, True, False, "per-class log-softmax"),
        LeafSpec("t", _C, True, False, True, "one-hot (or soft) target"),
        LeafSpec("z", _C, True, True, False, "per-class logits"),
        LeafSpec("pred", _R, False, True, False, "regression prediction"),
        LeafSpec("target", _R, False, False, True, "regression target"),
        LeafSpec("residual", _R, False, True, True, "pred - target"),
    )
}


@dataclass(frozen=True)
class OpSpec:
    """An operator of the loss language.

    Attributes:
        name: Token used in expressions (function name, or the infix symbol's name).
        arity: Number of arguments.
        symbol: Infix symbol for binary arithmetic (``+ - * / ^``), else ``None``.
        commutative: Argument order does not matter (used by the canonical key).
        reduces: Reduces a per-class vector to a per-sample scalar.
        guard: How the operator is protected against undefined inputs (documentation).
    """

    name: str
    arity: int
    symbol: str | None = None
    commutative: bool = False
    reduces: bool = False
    guard: str = ""


# Guards keep every loss finite for any probability in [0, 1]; the compiled torch code and
# the exported standalone module implement exactly these definitions.
EPS = 1e-7
EXP_MAX = 30.0
#: Floor of ``|x|`` under ``sqrt`` (its gradient stays finite at 0).
SQRT_EPS = 1e-12

OPS: dict[str, OpSpec] = {
    s.name: s
    for s in (
        OpSpec("neg", 1),
        OpSpec("log", 1, guard="log(max(|x|, 1e-7)); log(p_y) and log(p) use log-softmax"),
        OpSpec("exp", 1, guard="exp(min(x, 30))"),
        OpSpec("sqrt", 1, guard="sqrt(max(|x|, 1e-12))"),
        OpSpec("square", 1),
        OpSpec("abs", 1),
        OpSpec("tanh", 1),
        OpSpec("sigmoid", 1),
        OpSpec("softplus", 1),
        OpSpec("recip", 1, guard="1 / x with |x| raised to at least 1e-7, sign kept"),
        OpSpec("sum_c", 1, reduces=True),
        OpSpec("mean_c", 1, reduces=True),
        OpSpec("add", 2, "+", commutative=True),
        OpSpec("sub", 2, "-"),
        OpSpec("mul", 2, "*", commutative=True),
        OpSpec("div", 2, "/", guard="denominator magnitude raised to at least 1e-7, sign kept"),
        OpSpec(
            "pow",
            2,
            "^",
            guard="integer constant exponent: plain power; otherwise exp(b * log(max(|a|, 1e-7)))",
        ),
        OpSpec("min", 2, commutative=True),
        OpSpec("max", 2, commutative=True),
    )
}

UNARY_OPS: tuple[str, ...] = tuple(n for n, s in OPS.items() if s.arity == 1 and not s.reduces)
BINARY_OPS: tuple[str, ...] = tuple(n for n, s in OPS.items() if s.arity == 2)
REDUCTIONS: tuple[str, ...] = tuple(n for n, s in OPS.items() if s.reduces)
INFIX: dict[str, str] = {s.symbol: n for n, s in OPS.items() if s.symbol}

# The canonical form behind :attr:`Expr.key` rewrites trees of the classes defined below, so its
# module (``_canonical``) imports this one and this one cannot import it back: it registers
# itself here when imported, and ``loss_rl.expr`` imports it before any key can be read.
_canonical_form: Callable[[Expr], Expr] | None = None


def register_canonical_form(fn: Callable[[Expr], Expr]) -> None:
    """Make ``fn`` the canonical form :attr:`Expr.key` is computed with (``_canonical`` does)."""
    global _canonical_form
    _canonical_form = fn


# Precedence used by the formatter and the parser (higher binds tighter).
_PREC_ADD, _PREC_MUL, _PREC_NEG, _PREC_POW, _PREC_ATOM = 1, 2, 3, 4, 5
_INFIX_PREC = {"add": _PREC_ADD, "sub": _PREC_ADD, "mul": _PREC_MUL, "div": _PREC_MUL}


class Expr:
    """Base class of loss expression nodes (immutable, hashable, ordered by ``str``)."""

    __slots__ = ()
    _prec: ClassVar[int] = _PREC_ATOM

    @property
    def children(self) -> tuple[Expr, ...]:
        """Direct sub-expressions."""
        return ()

    def __str__(self) -> str:
        return _format(self)

    @property
    def key(self) -> str:
        """Canonical key: equal losses (up to algebraic identities) share one key."""
        if _canonical_form is None:  # pragma: no cover - importing loss_rl.expr registers it
            raise RuntimeError("no canonical form registered (import loss_rl.expr)")
        return str(_canonical_form(self))

    def size(self) -> int:
        """Number of nodes in the tree."""
        return 1 + sum(c.size() for c in self.children)

    def depth(self) -> int:
        """Length of the longest root-to-leaf path (a leaf has depth 1)."""
        return 1 + max((c.depth() for c in self.children), default=0)

    def nodes(self) -> list[Expr]:
        """All nodes in prefix (pre-order) order; indices are node *positions*."""
        out: list[Expr] = [self]
        for c in self.children:
            out.extend(c.nodes())
        return out

    def leaves(self) -> set[str]:
        """Names of the leaves used."""
        return {n.name for n in self.nodes() if isinstance(n, Leaf)}

    def replace_at(self, position: int, new: Expr) -> Expr:
        """Return a copy with the node at prefix ``position`` replaced by ``new``."""
        if position == 0:
            return new
        pos = position - 1
        kids = list(self.children)
        for i, c in enumerate(kids):
            n = c.size()
            if pos < n:
                kids[i] = c.replace_at(pos, new)
                assert isinstance(self, Op)
                return Op(self.op, tuple(kids))
            pos -= n
        raise IndexError(f"position {position} is outside a tree of size {self.size()}")

    def __lt__(self, other: Expr) -> bool:
        return str(self) < str(other)


@dataclass(frozen=True, eq=True, slots=True)
class Leaf(Expr):
    """An input of the loss (see :data:`LEAVES`)."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in LEAVES:
            raise LossSpecError(
                f"unknown leaf {self.name!r}; known leaves: {', '.join(LEAVES)}", field="leaf"
            )


@dataclass(frozen=True, eq=True, slots=True)
class Const(Expr):
    """A finite numeric constant."""

    value: float

    def __post_init__(self) -> None:
        try:
            v = float(self.value)
        except (TypeError, ValueError):
            raise LossSpecError(
                f"constant {self.value!r} is not a number", field="constant"
            ) from None
        if not math.isfinite(v):
            raise LossSpecError(f"constant {self.value!r} is not finite", field="constant")
        object.__setattr__(self, "value", v + 0.0)  # normalise -0.0 to 0.0


@dataclass(frozen=True, eq=True, slots=True)
class Op(Expr):
    """An operator applied to sub-expressions (see :data:`OPS`)."""

    op: str
    args: tuple[Expr, ...]

    def __post_init__(self) -> None:
        spec = OPS.get(self.op)
        if spec is None:
            raise LossSpecError(
                f"unknown operator {self.op!r}; known operators: {', '.join(OPS)}",
                field="operator",
            )
        # A list would make the node unhashable (and so unusable as a cache key).
        object.__setattr__(self, "args", tuple(self.args))
        if len(self.args) != spec.arity:
            raise LossSpecError(
                f"operator {self.op!r} takes {spec.arity} argument(s), got {len(self.args)}",
                field="arity",
            )
        if not all(isinstance(a, Expr) for a in self.args):
            raise LossSpecError(f"arguments of {self.op!r} must be expressions", field="args")

    @property
    def children(self) -> tuple[Expr, ...]:
        return self.args


# ---------------------------------------------------------------------------------------------
# Convenience constructors (used by the known-loss library and tests)


def leaf(name: str) -> Leaf:
    """Return the leaf called ``name``."""
    return Leaf(name)


def const(value: float) -> Const:
    """Return a constant node."""
    return Const(value)


def op(name: str, *args: Expr | float) -> Op:
    """Return ``name(*args)``; bare numbers become constants."""
    return Op(name, tuple(a if isinstance(a, Expr) else Const(a) for a in args))


# ---------------------------------------------------------------------------------------------
# Shape / kind inference


def is_vector(expr: Expr) -> bool:
    """Whether ``expr`` evaluates to a per-class vector (``[..., B, C]``)."""
    if isinstance(expr, Leaf):
        return LEAVES[expr.name].vector
    if isinstance(expr, Const):
        return False
    assert isinstance(expr, Op)
    if OPS[expr.op].reduces:
        return False
    return any(is_vector(a) for a in expr.args)


def task_kind(expr: Expr) -> TaskKind | None:
    """The task kind implied by the leaves, ``None`` for a constant-only tree.

    Raises:
        LossSpecError: if classification and regression leaves are mixed.
    """
    kinds = {LEAVES[n].kind for n in expr.leaves()}
    if len(kinds) > 1:
        raise LossSpecError(
            "expression mixes classification leaves (p_y, p, t, z, ...) with regression leaves "
            "(pred, target, residual)",
            field="leaves",
        )
    return kinds.pop() if kinds else None


# ---------------------------------------------------------------------------------------------
# Formatting: readable infix math that `parse` reads back to the identical tree.


def _fmt_const(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _prec(expr: Expr) -> int:
    if isinstance(expr, Const):
        return _PREC_NEG if expr.value < 0 else _PREC_ATOM
    if isinstance(expr, Op):
        if expr.op in _INFIX_PREC:
            return _INFIX_PREC[expr.op]
        if expr.op == "neg":
            return _PREC_NEG
        if expr.op == "pow":
            return _PREC_POW
    return _PREC_ATOM


def _wrap(expr: Expr, need: int) -> str:
    s = _format(expr)
    return f"({s})" if _prec(expr) < need else s


def _format(expr: Expr) -> str:
    if isinstance(expr, Leaf):
        return expr.name
    if isinstance(expr, Const):
        return _fmt_const(expr.value)
    assert isinstance(expr, Op)
    a = expr.args
    if expr.op in _INFIX_PREC:
        p = _INFIX_PREC[expr.op]
        # Right operand needs strictly higher precedence so that the tree shape round-trips.
        return f"{_wrap(a[0], p)} {OPS[expr.op].symbol} {_wrap(a[1], p + 1)}"
    if expr.op == "pow":
        return f"{_wrap(a[0], _PREC_ATOM)}^{_wrap(a[1], _PREC_NEG)}"
    if expr.op == "neg":
        inner = a[0]
        # "-2" would read back as the constant -2, so a negated constant keeps its parentheses.
        if isinstance(inner, Const):
            return f"-({_format(inner)})"
        return f"-{_wrap(inner, _PREC_NEG)}"
    return f"{expr.op}({', '.join(_format(x) for x in a)})"
