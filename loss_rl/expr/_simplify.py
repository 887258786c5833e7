"""Readable forms of loss expressions: algebra done by sympy, guards kept.

A discovered loss often reads like ``-1 * -1 * (p_y * p_y) + 0.5 * p_y + 0.5 * p_y``;
:func:`simplify` shows it as ``p_y^2 + p_y``. Only identities that hold for the *compiled*
(guarded) operators are used:

- ``+ - *`` and integer powers are plain arithmetic: like terms combine, constants fold,
  ``x * x`` becomes ``x^2``, ``-1 * -1 * x`` becomes ``x``;
- guarded operators (``log``, ``exp``, ``sqrt``, ``recip``, ``div`` by a non-constant,
  non-integer ``pow``) and the rest of the functions (``tanh``, ``sigmoid``, ``softplus``,
  ``min``, ``max``, ``sum_c``, ``mean_c``) are opaque functions to sympy: their arguments are
  simplified, but ``log(exp(x))`` stays as it is (``exp`` is clamped at 30, so it is not ``x``),
  and so does ``sqrt(x)^2`` (``sqrt`` takes ``|x|``);
- ``a / b`` is ``a * recip(b)`` (what the compiler computes), so ``a / y + b / y`` may combine
  to ``(a + b) / y``; division by a constant of magnitude at least ``EPS`` is exact;
- ``log(p_y)`` and ``log(p)`` are the leaves ``log_p_y`` and ``log_p``, as compiled (log-softmax);
  an argument that only *simplifies* to ``p_y`` (``log(p_y * 1)``) keeps the protected log, so
  such a form is not shown.

The result is built back as an expression tree of the loss language and printed with its own
formatter, so ``parse(simplify(e))`` always reads back, and compiles to the same loss as ``e``
(up to float rounding). The shortest of a few sympy forms is shown, never one longer than the
original. sympy is imported on first use (it costs about a second) and any failure, or an
expression too big for the time budget, falls back to ``str(expr)`` with the reason logged.
"""

from __future__ import annotations

import logging
import math
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from loss_rl.expr._canonical import constant_value, integer_exponent
from loss_rl.expr._nodes import EPS, OPS, Const, Expr, Leaf, Op

if TYPE_CHECKING:
    import sympy

logger = logging.getLogger(__name__)

#: Expressions with more nodes than this are shown as they are (sympy's time grows fast).
MAX_SIMPLIFY_SIZE = 120
#: Seconds after which no further (costlier) sympy form is tried for one expression.
TIME_BUDGET = 2.0
# Expanding `(a + b)^n` yields O(n^k) terms: only for small integer powers.
_EXPAND_MAX_POWER = 4
# A rational coefficient p/q is written as a division by q when its decimal form is long.
_MAX_DENOMINATOR = 1000

# Leaves whose sign the compiler guarantees: softmax probabilities and their logs. `p_y` and
# `log_p_y` are left unsigned: with soft targets they are sums over the user's target vector.
_NONNEGATIVE = frozenset({"p"})
_NONPOSITIVE = frozenset({"log_p"})
_LOG_LEAVES = {"p_y": "log_p_y", "p": "log_p"}
# sympy's name of a non-integer power of the leaf p_y or p itself (see `_to_sympy`).
_POW_OF_LEAF = "pow_of_leaf"


class _Unsupported(Exception):
    """A sympy form this module cannot write back in the loss language exactly."""


def simplify(expr: Expr) -> str:
    """A readable, algebraically simplified form of ``expr`` in the loss language's notation.

    Guarded operators stay intact (see the module docstring); ``parse`` reads the result back to
    a loss that computes the same values as ``expr``.

    Args:
        expr: The loss expression.

    Returns:
        The simplified text, or ``str(expr)`` when sympy fails, the expression is larger than
        :data:`MAX_SIMPLIFY_SIZE`, or nothing shorter is found.

    Example:
        >>> from loss_rl.expr import parse, simplify
        >>> simplify(parse("-1 * -1 * (p_y * p_y) + 0.5 * p_y + 0.5 * p_y"))  # doctest: +SKIP
        'p_y^2 + p_y'
    """
    return str(_simplified(expr))


def simplified_size(expr: Expr) -> int:
    """Number of nodes of the simplified form of ``expr`` (see :func:`simplify`).

    Never larger than ``expr.size()``.
    """
    return _simplified(expr).size()


# Functions sympy sees as opaque (see `_to_sympy`) that take one argument: the one node of the
# loss language each becomes survives simplification whenever its argument keeps a leaf.
_OPAQUE_UNARY = frozenset({"log", "exp", "sqrt", "tanh", "sigmoid", "softplus", "sum_c", "mean_c"})


def simplified_size_lower_bound(expr: Expr) -> int:
    """A lower bound on :func:`simplified_size`, computed without sympy (microseconds).

    Sympy sees each leaf as a free symbol, so a leaf can only vanish by cancelling against
    another occurrence of itself, or by being multiplied by something that simplifies to zero
    (or raised to the power 0). The bound counts what no such cancellation can remove:

    - the *single* leaves: each leaf whose family occurs once in the tree (``p`` and ``log(p)``
      are one family, the log-softmax leaf ``log_p``; likewise ``p_y`` and ``log_p_y``), unless
      a factor on its way to the root may simplify to zero (a zero constant, or a sum in which
      a repeated family or a constant-free reduction might cancel) or an exponent on the way is
      the constant 0;
    - the binary nodes that join ``k`` such leaves: at least ``k - 1``;
    - each opaque one-argument function (``log`` of anything but ``p``/``p_y``, ``exp``,
      ``sqrt``, ``tanh``, ``sigmoid``, ``softplus``, ``sum_c``, ``mean_c``) on the way from the
      root to a surviving single leaf: sympy cannot rewrite it, and no other node equals it
      (that would need the leaf twice).

    The hall of fame uses it to skip the sympy pass for losses that cannot be smaller than the
    front's smallest member. ``tests/expr/test_simplify.py`` checks it against
    :func:`simplified_size` on library and random losses.

    Args:
        expr: The loss expression.

    Returns:
        At least 1, and never more than :func:`simplified_size` of ``expr``.
    """
    counts: dict[str, int] = {}
    _count_families(expr, counts)
    single = {name for name, n in counts.items() if n == 1}
    leaves: set[str] = set()
    opaque: set[int] = set()
    _survivors(expr, single, counts, [], leaves, opaque)
    k = len(leaves)
    return max(1, k + max(0, k - 1) + len(opaque))


def _family(node: Expr) -> str | None:
    """The leaf family a node stands for (``log(p)`` is the leaf ``log_p``), else ``None``."""
    if isinstance(node, Leaf):
        return _LOG_LEAVES.get(node.name, node.name)
    if (
        isinstance(node, Op)
        and node.op == "log"
        and isinstance(node.args[0], Leaf)
        and node.args[0].name in _LOG_LEAVES
    ):
        return _LOG_LEAVES[node.args[0].name]
    return None


def _count_families(node: Expr, counts: dict[str, int]) -> None:
    fam = _family(node)
    if fam is not None:
        counts[fam] = counts.get(fam, 0) + 1
        return
    if isinstance(node, Op):
        for arg in node.args:
            _count_families(arg, counts)


def _may_vanish(node: Expr, counts: dict[str, int]) -> bool:
    """Whether sympy might simplify ``node`` to 0 (``False`` only when it surely cannot)."""
    if isinstance(node, Const):
        return node.value == 0.0
    if _family(node) is not None:
        return False  # a symbol
    assert isinstance(node, Op)
    name, args = node.op, node.args
    if name in _OPAQUE_UNARY or name in ("min", "max", "recip"):
        return False  # an unevaluated function application
    if name == "pow":
        n = integer_exponent(args[1])
        if n is None or n <= 0:
            return False  # opaque, the constant 1, or recip(...)
        return _may_vanish(args[0], counts)
    if name in ("neg", "abs", "square"):
        return _may_vanish(args[0], counts)
    if name == "mul":
        return _may_vanish(args[0], counts) or _may_vanish(args[1], counts)
    if name == "div":
        return _may_vanish(args[0], counts)  # num * recip(den) or num / c
    # add, sub: a sum vanishes only by cancellation, which needs a family twice or a term
    # without leaves. Sums of constants count as possibly zero: sympy adds them exactly
    # (0.1 + 0.2 - 0.3 is 0 there, 5.6e-17 in floats), and reductions of constants are opaque.
    fams: dict[str, int] = {}
    _count_families(node, fams)
    return not fams or any(counts[f] > 1 for f in fams)


def _survivors(
    node: Expr,
    single: set[str],
    counts: dict[str, int],
    path: list[int],
    leaves: set[str],
    opaque: set[int],
) -> None:
    """Collect the single leaves under ``node`` that survive, and the opaque nodes above them.

    ``path`` holds the ids of the opaque one-argument nodes between the root and ``node``.
    """
    fam = _family(node)
    if fam is not None:
        if fam in single:
            leaves.add(fam)
            opaque.update(path)
        return
    if not isinstance(node, Op):
        return
    name, args = node.op, node.args
    if name == "pow" and integer_exponent(args[1]) == 0:
        return  # x^0 is 1
    if name == "mul":
        for arg, other in ((args[0], args[1]), (args[1], args[0])):
            if not _may_vanish(other, counts):
                _survivors(arg, single, counts, path, leaves, opaque)
        return
    if name == "div" and _may_vanish(args[0], counts):
        return  # 0 * recip(den): the denominator's leaves go too; the numerator is 0
    inner = [*path, id(node)] if name in _OPAQUE_UNARY else path
    for arg in args:
        _survivors(arg, single, counts, inner, leaves, opaque)


@lru_cache(maxsize=4096)
def _simplified(expr: Expr) -> Expr:
    """The smallest tree among ``expr`` and its sympy forms (cached: trees are hashable)."""
    size = expr.size()
    if size > MAX_SIMPLIFY_SIZE:
        logger.info(
            "not simplifying a loss of %d nodes (more than %d): %s",
            size,
            MAX_SIMPLIFY_SIZE,
            expr,
        )
        return expr
    try:
        best = _best_form(expr)
    except Exception as err:  # sympy may fail in many ways; the display must not
        logger.info("could not simplify %s (%s: %s); shown as it is", expr, type(err).__name__, err)
        return expr
    return best


def _best_form(expr: Expr) -> Expr:
    import sympy as sp

    start = time.perf_counter()
    auto = _to_sympy(expr, sp)
    forms: list[Any] = [auto]
    # Cheapest first; each later (costlier) form is tried only while time is left.
    stages: list[Any] = [sp.factor_terms]
    if _max_power(auto, sp) <= _EXPAND_MAX_POWER:
        stages.append(sp.expand)
    for stage in stages:
        if time.perf_counter() - start > TIME_BUDGET:
            logger.info("simplifying %s ran out of its %.1f s budget", expr, TIME_BUDGET)
            break
        forms.append(stage(auto))
    # The original competes too; ties go to the shorter text ("p_y^2" over "p_y * p_y").
    best = expr
    for form in forms:
        try:
            tree = _from_sympy(form, sp)
        except _Unsupported:
            continue  # e.g. a form with a plain (unguarded) division: not the same loss
        if _cost(tree) < _cost(best):
            best = tree
    return best


def _cost(tree: Expr) -> tuple[int, int]:
    return tree.size(), len(str(tree))


def _max_power(s: Any, sp: Any) -> int:
    """The largest integer exponent in sympy expression ``s`` (0 if none)."""
    powers = [int(abs(p.exp)) for p in s.atoms(sp.Pow) if p.exp.is_Integer]
    return max(powers, default=0)


# ---------------------------------------------------------------------------------------------
# Loss language → sympy


def _symbol(name: str, sp: Any) -> sympy.Symbol:
    if name in _NONNEGATIVE:
        return sp.Symbol(name, nonnegative=True)
    if name in _NONPOSITIVE:
        return sp.Symbol(name, nonpositive=True)
    return sp.Symbol(name, real=True)


def _number(value: float, sp: Any) -> sympy.Rational:
    # The shortest decimal that reads back to the same double: 0.1 is 1/10, not 3602879.../2^55,
    # so that 0.1 * x + 0.2 * x combines to 3/10 * x and prints as 0.3.
    return sp.Rational(repr(value))


def _to_sympy(expr: Expr, sp: Any) -> Any:
    if isinstance(expr, Leaf):
        return _symbol(expr.name, sp)
    if isinstance(expr, Const):
        return _number(expr.value, sp)
    assert isinstance(expr, Op)
    name, args = expr.op, expr.args
    if name == "log" and isinstance(args[0], Leaf) and args[0].name in _LOG_LEAVES:
        return _symbol(_LOG_LEAVES[args[0].name], sp)
    if name == "pow":
        n = integer_exponent(args[1])
        if n is None:
            # exp(b * log|a|), clamped: opaque, with both arguments simplified. The log of the
            # leaves p_y and p is log-softmax, of anything else the protected log: a base that
            # is one of those leaves is marked, so that it stays told apart from one that only
            # simplifies to it (`(p_y * 1)^0.5` takes the protected log of p_y).
            base = args[0]
            marked = isinstance(base, Leaf) and base.name in _LOG_LEAVES
            fn = sp.Function(_POW_OF_LEAF if marked else "pow")
            return fn(_to_sympy(base, sp), _to_sympy(args[1], sp))
        base = _to_sympy(args[0], sp)
        if n >= 0:
            return base**n
        return sp.Function("recip")(base ** (-n))
    if name == "div":
        den = constant_value(args[1])
        num = _to_sympy(args[0], sp)
        if den is not None and abs(den) >= EPS:
            return num / _number(den, sp)  # the guard leaves such a denominator alone
        return num * sp.Function("recip")(_to_sympy(args[1], sp))
    kids = [_to_sympy(a, sp) for a in args]
    if name == "neg":
        return -kids[0]
    if name == "add":
        return kids[0] + kids[1]
    if name == "sub":
        return kids[0] - kids[1]
    if name == "mul":
        return kids[0] * kids[1]
    if name == "square":
        return kids[0] ** 2
    if name == "abs":
        return sp.Abs(kids[0])
    return sp.Function(name)(*kids)


# ---------------------------------------------------------------------------------------------
# sympy → loss language


def _const(value: Any) -> Const:
    v = float(value)
    if not math.isfinite(v):
        raise _Unsupported(f"constant {value} is not finite")
    return Const(v)


def _chain(name: str, items: list[Expr]) -> Expr:
    out = items[0]
    for item in items[1:]:
        out = Op(name, (out, item))
    return out


def _from_sympy(s: Any, sp: Any) -> Expr:
    if s.is_Symbol:
        return Leaf(s.name)
    if s.is_Number:
        if not s.is_Rational:
            raise _Unsupported(f"number {s} is not rational")
        return _const(s)
    if s.is_Add:
        return _from_add(s, sp)
    if s.is_Mul:
        return _from_mul(s, sp)
    if s.is_Pow:
        n = s.exp
        if not (n.is_Integer and n >= 1):
            # A negative or fractional power is a plain division or root, not the guarded one.
            raise _Unsupported(f"power {s}")
        return Op("pow", (_from_sympy(s.base, sp), Const(int(n))))
    if isinstance(s, sp.Abs):
        return _folded(Op("abs", (_from_sympy(s.args[0], sp),)))
    if isinstance(s, sp.core.function.AppliedUndef):
        return _from_function(s.func.__name__, [_from_sympy(a, sp) for a in s.args])
    raise _Unsupported(f"{type(s).__name__} {s}")


def _from_function(name: str, args: list[Expr]) -> Expr:
    if name == _POW_OF_LEAF:
        base, expo = args
        assert isinstance(base, Leaf)  # a sympy symbol stays a symbol
        if integer_exponent(expo) is not None:
            # The exponent simplified to an integer: `a^n` would now compile as a plain power,
            # but this one is exp(n * log-softmax), clamped; written so, it compiles the same.
            return Op("exp", (Op("mul", (expo, Leaf(_LOG_LEAVES[base.name]))),))
        return Op("pow", (base, expo))
    if name not in OPS or OPS[name].arity != len(args):
        raise _Unsupported(f"function {name}")
    if name in ("log", "pow") and isinstance(args[0], Leaf) and args[0].name in _LOG_LEAVES:
        # The argument only simplified to p_y (or p): the original takes the protected log of
        # it, but the leaf's log would now compile as log-softmax, which differs (soft targets,
        # underflow). No text of the language says this, so this form is not used.
        raise _Unsupported(f"{name} of an expression that simplifies to {args[0].name}")
    if name == "pow" and integer_exponent(args[1]) is not None:
        # As above, with the protected log of a base that is not one of those leaves.
        return Op("exp", (Op("mul", (args[1], Op("log", (args[0],)))),))
    return _folded(Op(name, tuple(args)))


def _folded(node: Op) -> Expr:
    """``node`` as its value when all its arguments are constants (under the compiled guards)."""
    if all(isinstance(a, Const) for a in node.args) and not OPS[node.op].reduces:
        value = constant_value(node)
        if value is not None:
            return Const(value)
    return node


def _from_add(s: Any, sp: Any) -> Expr:
    terms = list(s.as_ordered_terms())
    negative = [t.could_extract_minus_sign() for t in terms]
    plus = [_from_sympy(t, sp) for t, neg in zip(terms, negative, strict=True) if not neg]
    minus = [t for t, neg in zip(terms, negative, strict=True) if neg]
    # All terms negative: the first keeps its sign ("-2 * x - y", not "-(2 * x) - y").
    out = _chain("add", plus) if plus else _from_sympy(minus.pop(0), sp)
    for m in minus:
        out = Op("sub", (out, _from_sympy(-m, sp)))
    return out


def _negated(e: Expr) -> Expr:
    if isinstance(e, Const):
        return Const(-e.value)
    return Op("neg", (e,))


def _from_mul(s: Any, sp: Any) -> Expr:
    coeff, factors = s.as_coeff_mul()
    num: list[Expr] = []
    den: list[Expr] = []
    for f in factors:
        if isinstance(f, sp.core.function.AppliedUndef) and f.func.__name__ == "recip":
            den.append(_from_sympy(f.args[0], sp))
        else:
            num.append(_from_sympy(f, sp))
    negative = coeff < 0
    c = sp.Abs(coeff)
    q = int(c.q) if c.is_Rational else 1
    lead: list[Expr] = []
    divisor: Expr | None = None
    if c != 1:
        if q != 1 and q <= _MAX_DENOMINATOR and len(repr(float(c))) > 8:
            # 2/3 reads better as "2 * x / 3" than as "0.6666666666666666 * x".
            if c.p != 1:
                lead.append(Const(int(c.p)))
            divisor = Const(q)
        else:
            lead.append(_const(c))
    # Constants lead, as people write them: "2 * x", not "x * 2".
    items = lead + sorted(num, key=lambda e: not isinstance(e, Const))
    if not items:
        items = [Const(1)]
    if negative:
        # "-2 * x" and "-x * y" rather than "-(2 * x)" and "-(x * y)".
        items[0] = _negated(items[0])
    out = _chain("mul", items)
    # x / a / b, never x / (a * b): the guard raises each denominator on its own, so
    # |a * b| < EPS may be clamped where |a| and |b| are not.
    for d in den:
        out = Op("div", (out, d))
    if divisor is not None:
        out = Op("div", (out, divisor))
    return out
