"""Canonical form of loss expressions, so that equal losses share one evaluation.

Rules (applied bottom-up until nothing changes):

- constants are folded (an operator on constants becomes its value) and rounded to
  :data:`SIGNIFICANT_DIGITS` significant digits;
- ``log(p_y)`` becomes ``log_p_y`` and ``log(p)`` becomes ``log_p`` (the compiled values agree);
- ``-a`` becomes ``-1 * a`` and ``a - b`` becomes ``a + -1 * b``;
- chains of the commutative ``+`` and ``*`` are flattened, their constants combined, their
  arguments sorted, and rebuilt left-associatively; ``min``/``max`` arguments are sorted;
- trivial identities are removed: ``a + 0``, ``a * 1``, ``a * 0 → 0``, ``a / 1``, ``a ^ 1``,
  ``a ^ 0 → 1``, ``square(a) → a ^ 2``, ``min(a, a) → a``, ``max(a, a) → a``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import combinations

from loss_rl.expr._nodes import (
    EPS,
    EXP_MAX,
    OPS,
    SQRT_EPS,
    Const,
    Expr,
    Leaf,
    Op,
    is_vector,
    register_canonical_form,
)

SIGNIFICANT_DIGITS = 4


def round_constant(value: float) -> float:
    """Round to :data:`SIGNIFICANT_DIGITS` significant digits (``0`` stays ``0``)."""
    if value == 0 or not math.isfinite(value):
        return 0.0 if value == 0 else value
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    # Near the float maximum, rounding up overflows to inf; such a constant stays as it is.
    return rounded if math.isfinite(rounded) else value


def _fold(name: str, vals: list[float]) -> float | None:
    """Value of an operator on constants, following the compiled guards; None if not finite."""
    a = vals[0]
    b = vals[1] if len(vals) > 1 else 0.0
    try:
        out = {
            "neg": lambda: -a,
            "log": lambda: math.log(max(abs(a), EPS)),
            "exp": lambda: math.exp(min(a, EXP_MAX)),
            "sqrt": lambda: math.sqrt(max(abs(a), SQRT_EPS)),
            "square": lambda: a * a,
            "abs": lambda: abs(a),
            "tanh": lambda: math.tanh(a),
            "sigmoid": lambda: 1.0 / (1.0 + math.exp(-a)) if a > -700 else 0.0,
            "softplus": lambda: math.log1p(math.exp(a)) if a < 30 else a,
            "recip": lambda: 1.0 / _den(a),
            "add": lambda: a + b,
            "sub": lambda: a - b,
            "mul": lambda: a * b,
            "div": lambda: a / _den(b),
            "min": lambda: min(a, b),
            "max": lambda: max(a, b),
            "pow": lambda: _fold_pow(a, b),
        }[name]()
    except (OverflowError, ZeroDivisionError, KeyError):
        return None
    if isinstance(out, complex) or not math.isfinite(out):
        return None
    return float(out)


def _fold_pow(a: float, b: float) -> float:
    # Mirrors the compiled power: an integer exponent up to 64 is a plain power (a negative one
    # goes through the protected reciprocal), anything else is exp(b * log|a|), clamped.
    if b == int(b) and abs(b) <= 64:
        n = int(b)
        if n >= 0:
            return a**n
        return 1.0 / _den(a ** (-n))
    return math.exp(min(b * math.log(max(abs(a), EPS)), EXP_MAX))


def _den(x: float) -> float:
    """Protected denominator, as compiled: magnitude raised to at least ``EPS``, sign kept."""
    return math.copysign(max(abs(x), EPS), -1.0 if x < 0 else 1.0)


def constant_value(expr: Expr) -> float | None:
    """Exact value of a leaf-free subtree under the compiled guards (no rounding).

    ``None`` if the subtree has a leaf or a class reduction (its value depends on the number of
    classes), or is not finite. The compiler, the code generator and the canonical key all decide
    "is this exponent an integer constant?" through this one function, so that a key never joins
    losses that compile differently (e.g. ``r^(2 - 1)`` is ``r``, not ``|r|^1``).
    """
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Leaf) or not isinstance(expr, Op) or OPS[expr.op].reduces:
        return None
    vals = [constant_value(a) for a in expr.args]
    if any(v is None for v in vals):
        return None
    return _fold(expr.op, vals)  # type: ignore[arg-type]


def integer_exponent(expo: Expr) -> int | None:
    """The exponent as a plain integer power (|n| <= 64), or ``None`` for ``exp(b log|a|)``."""
    v = constant_value(expo)
    if v is not None and v == int(v) and abs(v) <= 64:
        return int(v)
    return None


def _flatten(name: str, e: Expr) -> list[Expr]:
    if isinstance(e, Op) and e.op == name:
        return _flatten(name, e.args[0]) + _flatten(name, e.args[1])
    return [e]


def _chain(name: str, args: list[Expr]) -> Expr:
    out = args[0]
    for a in args[1:]:
        out = Op(name, (out, a))
    return out


def _fold_constants(name: str, values: list[float]) -> list[float]:
    """The constants of a ``+`` or ``*`` chain, combined and rounded.

    Normally one value. If they overflow together (such a loss fails the checks, but its key must
    still exist), pairs are combined while some pair stays finite; the pairs left all overflow,
    so no sub-chain of the result folds further and the result is canonical itself. Values are
    combined in sorted order, so the outcome does not depend on the order of the terms.
    """
    out = sorted(values)
    total = 0.0 if name == "add" else 1.0
    for v in out:
        total = total + v if name == "add" else total * v
    if math.isfinite(total):
        return [round_constant(total)]
    merged = True
    while merged:
        merged = False
        for i, j in combinations(range(len(out)), 2):
            v = out[i] + out[j] if name == "add" else out[i] * out[j]
            if math.isfinite(v):
                others = [x for k, x in enumerate(out) if k not in (i, j)]
                out = sorted([*others, round_constant(v)])
                merged = True
                break
    return out


def _assoc(name: str, a: Expr, b: Expr) -> Expr:
    """Canonical ``a + b`` or ``a * b`` over already-canonical arguments."""
    unit = 0.0 if name == "add" else 1.0
    terms = _flatten(name, a) + _flatten(name, b)
    rest = sorted(t for t in terms if not isinstance(t, Const))
    values = _fold_constants(name, [t.value for t in terms if isinstance(t, Const)])
    if name == "mul" and 0.0 in values:
        return Const(0.0)
    consts = [Const(v) for v in values if v != unit]
    if not rest:
        return _chain(name, sorted(consts)) if consts else Const(unit)
    if len(consts) > 1:  # constants that overflow together stay apart
        return _chain(name, sorted([*consts, *rest]))
    # The constant goes first in a product (2 * x) and last in a sum (x + 1): reads naturally.
    return _chain(name, [*consts, *rest] if name == "mul" else [*rest, *consts])


@lru_cache(maxsize=65536)
def canonical(expr: Expr) -> Expr:
    """Return the canonical form of ``expr`` (see the module docstring)."""
    if isinstance(expr, Const):
        return Const(round_constant(expr.value))
    if isinstance(expr, Leaf):
        return expr
    assert isinstance(expr, Op)
    args = [canonical(a) for a in expr.args]
    name = expr.op
    if all(isinstance(a, Const) for a in args) and not OPS[name].reduces:
        v = _fold(name, [a.value for a in args])  # type: ignore[attr-defined]
        if v is not None:
            return Const(round_constant(v))
    if name == "log" and isinstance(args[0], Leaf) and args[0].name in ("p_y", "p"):
        return Leaf("log_" + args[0].name)
    if name == "neg":
        # -a is -1 * a, so that negation merges with the constants of a product.
        return _assoc("mul", Const(-1.0), args[0])
    if name == "sub":
        return canonical(Op("add", (args[0], Op("neg", (args[1],)))))
    if name in ("add", "mul"):
        return _assoc(name, args[0], args[1])
    if name == "square":
        return canonical(Op("pow", (args[0], Const(2.0))))
    if name == "div":
        if isinstance(args[1], Const) and args[1].value == 1.0:
            return args[0]
        if isinstance(args[1], Const) and abs(args[1].value) >= 1e-7:
            return canonical(Op("mul", (Const(1.0 / args[1].value), args[0])))
    if name == "pow" and isinstance(args[1], Const):
        exact = constant_value(expr.args[1])
        if (
            exact is not None
            and integer_exponent(expr.args[1]) is None
            and (args[1].value == int(args[1].value))
        ):
            # Rounding made a non-integer exponent look integral; the compiled power differs
            # (|a|^b vs a^n), so keep the exact value in the key.
            return Op("pow", (args[0], Const(exact)))
        if args[1].value == 1.0:
            return args[0]
        if args[1].value == 0.0:
            return Const(1.0)
    if name in ("min", "max"):
        if args[0] == args[1]:
            return args[0]
        args = sorted(args)
    if name == "mean_c" and not is_vector(args[0]):
        return args[0]
    return Op(name, tuple(args))


register_canonical_form(canonical)
