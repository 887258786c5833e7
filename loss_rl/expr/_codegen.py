"""Generate standalone torch code and LaTeX from loss expressions.

The generated code computes exactly what :mod:`loss_rl.expr._compile` computes: the same leaves
(``log p_y`` from ``log_softmax``), the same guards (protected ``log``, ``div``, ``sqrt``,
``pow``, ``exp``, ``recip``), the same broadcasting of per-sample values against per-class
vectors, so an exported module matches the library's loss in values and gradients. It uses only
``torch`` and ``torch.nn.functional`` and is TorchScript-compatible (typed helpers, no closures).

Numbers are written with ``repr(float)``, which reads back to the identical double; nothing of the
generated text comes from user-written strings.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from loss_rl.expr._canonical import integer_exponent
from loss_rl.expr._nodes import (
    EPS,
    EXP_MAX,
    LEAVES,
    SQRT_EPS,
    Const,
    Expr,
    Leaf,
    Op,
    TaskKind,
    is_vector,
)

# Python operator precedence (higher binds tighter), for minimal but safe parentheses.
_ADD, _MUL, _UNARY, _POW, _ATOM = 1, 2, 3, 4, 5
_SUM = 0  # LaTeX only: a big-operator sum

# Helper functions of the generated file; each is emitted only when the loss uses it.
HELPERS: dict[str, str] = {
    "_scalar": '''def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """A constant as a 0-dim tensor of ``like``'s dtype and device."""
    # torch.full, not torch.tensor: in TorchScript the latter rounds through float32.
    return torch.full([], value, dtype=like.dtype, device=like.device)
''',
    "_safe_log": f'''def _safe_log(x: torch.Tensor) -> torch.Tensor:
    """Protected log: ``log(max(|x|, {EPS!r}))``, finite where ``x`` is 0."""
    return torch.log(torch.clamp(x.abs(), min={EPS!r}))
''',
    "_safe_den": f'''def _safe_den(x: torch.Tensor) -> torch.Tensor:
    """Protected denominator: ``|x|`` raised to at least {EPS!r}, sign kept (0 counts as +)."""
    sign = torch.where(x < 0, -1.0, 1.0)
    return sign * torch.clamp(x.abs(), min={EPS!r})
''',
}

# How each protected primitive is guarded, for the generated docstring.
GUARD_NOTES: dict[str, str] = {
    "log": f"``log(x)`` is ``log(max(|x|, {EPS!r}))``; ``log p_y`` and ``log p`` come from "
    "``log_softmax``",
    "exp": f"``exp(x)`` is ``exp(min(x, {EXP_MAX!r}))``",
    "sqrt": f"``sqrt(x)`` is ``sqrt(max(|x|, {SQRT_EPS!r}))``",
    "div": f"denominators have their magnitude raised to at least {EPS!r} (sign kept)",
    "recip": f"``1/x`` has the magnitude of ``x`` raised to at least {EPS!r} (sign kept)",
    "pow": f"``a^b`` is a plain power for an integer constant ``b`` (|b| <= 64; a negative one "
    f"uses the protected denominator), otherwise ``exp(min(b * log(max(|a|, {EPS!r})), "
    f"{EXP_MAX!r}))``",
}


@dataclass(frozen=True)
class _Code:
    """A generated Python expression and what is known about its value."""

    text: str
    prec: int
    const: float | None = None  # a bare float literal (not yet a tensor)
    data: bool = True  # depends on the inputs, so has the sample (or class) dimensions
    vector: bool = False  # per-class vector [..., B, C]


def _literal(value: float) -> _Code:
    text = repr(float(value))
    return _Code(text, _UNARY if text.startswith("-") else _ATOM, const=value, data=False)


def _wrap(code: _Code, need: int) -> str:
    return f"({code.text})" if code.prec < need else code.text


@dataclass
class TorchCode:
    """Torch source computing a per-sample loss from ``input`` and ``target``.

    Attributes:
        body: Lines of the ``forward`` body (unindented) that end with ``loss`` holding the
            per-sample loss of the input's sample shape.
        helpers: Names of the module-level helper functions used (keys of :data:`HELPERS`).
        guards: Protected primitives used (keys of :data:`GUARD_NOTES`).
    """

    body: list[str] = field(default_factory=list)
    helpers: set[str] = field(default_factory=set)
    guards: set[str] = field(default_factory=set)


class _Generator:
    def __init__(self, expr: Expr, kind: TaskKind) -> None:
        self.kind = kind
        self.out = TorchCode()
        self.lines: list[str] = []
        self.memo: dict[Expr, _Code] = {}
        # A repeated sub-tree is computed once, into a named temporary.
        self.repeated = {n for n, k in Counter(expr.nodes()).items() if k > 1 and isinstance(n, Op)}
        self.temps = 0
        self.uses: set[str] = set()  # leaves and derived quantities the body needs

    # -- helpers --------------------------------------------------------------------------

    def _tensor(self, code: _Code) -> _Code:
        """``code`` as a tensor (a bare literal becomes a 0-dim tensor like the compiled one)."""
        if code.const is None:
            return code
        self.out.helpers.add("_scalar")
        return _Code(f"_scalar({code.text}, input)", _ATOM, data=False)

    def _bind(self, code: _Code) -> _Code:
        """Store a compound expression in a temporary so it is computed once."""
        if code.prec == _ATOM and code.text.isidentifier():
            return code
        self.temps += 1
        name = f"u{self.temps}"
        self.lines.append(f"{name} = {code.text}")
        return _Code(name, _ATOM, code.const, code.data, code.vector)

    def _leaf(self, name: str) -> _Code:
        self.uses.add(name)
        var = {"z": "input", "pred": "input", "target": "y"}.get(name, name)
        return _Code(var, _ATOM, vector=LEAVES[name].vector)

    def _vec(self, code: _Code, vec: bool) -> str:
        # A per-sample value meets a per-class vector: add the class axis (constants broadcast).
        if vec and code.data and not code.vector:
            return f"{_wrap(code, _ATOM)}.unsqueeze(-1)"
        return code.text

    # -- nodes ----------------------------------------------------------------------------

    def gen(self, node: Expr) -> _Code:
        if node in self.memo:
            return self.memo[node]
        code = self._gen(node)
        if node in self.repeated or len(code.text) > 72:
            code = self._bind(code)
        self.memo[node] = code
        return code

    def _log_of(self, node: Expr) -> _Code:
        # log(p_y) and log(p) are read from log-softmax: exact and finite where p underflows.
        if isinstance(node, Leaf) and node.name in ("p_y", "p"):
            return self._leaf("log_" + node.name)
        self.out.guards.add("log")
        self.out.helpers.add("_safe_log")
        inner = self._tensor(self.gen(node))
        return _Code(f"_safe_log({inner.text})", _ATOM, data=inner.data, vector=inner.vector)

    def _gen(self, node: Expr) -> _Code:
        if isinstance(node, Leaf):
            return self._leaf(node.name)
        if isinstance(node, Const):
            return _literal(node.value)
        assert isinstance(node, Op)
        name, args = node.op, node.args
        vec = is_vector(node)
        if name == "log":
            return self._log_of(args[0])
        if name == "pow":
            return self._pow(node)
        if name in ("sum_c", "mean_c"):
            a = self._tensor(self.gen(args[0]))
            if a.vector:
                return _Code(f"{_wrap(a, _ATOM)}.{name[:-2]}(-1)", _ATOM, data=a.data)
            if name == "mean_c":
                return a
            self.uses.add("num_classes")
            return _Code(f"{_wrap(a, _MUL)} * num_classes", _MUL, data=a.data)
        if len(args) == 1:
            a = self._tensor(self.gen(args[0]))
            prec = _UNARY if name == "neg" else _ATOM
            return _Code(self._unary(name, a), prec, data=a.data, vector=a.vector)
        left, right = self.gen(args[0]), self.gen(args[1])
        data = left.data or right.data
        if name in ("min", "max"):
            lt, rt = self._tensor(left), self._tensor(right)
            fn = "torch.minimum" if name == "min" else "torch.maximum"
            text = f"{fn}({self._vec(lt, vec)}, {self._vec(rt, vec)})"
            return _Code(text, _ATOM, data=data, vector=vec)
        if left.const is not None and (right.const is not None or name == "div"):
            left = self._tensor(left)  # compiled constants are tensors: keep their dtype
        if name == "div":
            if right.const is not None:
                den = math.copysign(max(abs(right.const), EPS), -1.0 if right.const < 0 else 1.0)
                if den != right.const:
                    self.out.guards.add("div")
                rtext = _wrap(_literal(den), _UNARY)
            else:
                self.out.guards.add("div")
                self.out.helpers.add("_safe_den")
                rtext = f"_safe_den({self._vec(right, vec)})"
            ltext = self._operand(left, vec, _MUL)
            return _Code(f"{ltext} / {rtext}", _MUL, data=data, vector=vec)
        symbol, prec = {"add": ("+", _ADD), "sub": ("-", _ADD), "mul": ("*", _MUL)}[name]
        ltext = self._operand(left, vec, prec)
        rtext = self._operand(right, vec, prec + 1)
        return _Code(f"{ltext} {symbol} {rtext}", prec, data=data, vector=vec)

    def _operand(self, code: _Code, vec: bool, need: int) -> str:
        if vec and code.data and not code.vector:
            return self._vec(code, vec)  # a method call binds tightest
        return _wrap(code, need)

    def _unary(self, name: str, a: _Code) -> str:
        x = a.text
        if name == "neg":
            return f"-{_wrap(a, _POW)}"
        if name == "exp":
            self.out.guards.add("exp")
            return f"torch.exp(torch.clamp({x}, max={EXP_MAX!r}))"
        if name == "sqrt":
            self.out.guards.add("sqrt")
            return f"torch.sqrt(torch.clamp({_wrap(a, _ATOM)}.abs(), min={SQRT_EPS!r}))"
        if name == "square":
            b = self._bind(a)
            return f"({b.text} * {b.text})"
        if name == "recip":
            self.out.guards.add("recip")
            self.out.helpers.add("_safe_den")
            return f"(1.0 / _safe_den({x}))"
        fn = {
            "abs": "torch.abs",
            "tanh": "torch.tanh",
            "sigmoid": "torch.sigmoid",
            "softplus": "F.softplus",
        }[name]
        return f"{fn}({x})"

    def _pow(self, node: Op) -> _Code:
        base, expo = node.args
        n = integer_exponent(expo)
        if n is not None:
            b = self._tensor(self.gen(base))
            power = f"{_wrap(b, _ATOM)} ** {abs(n)}"
            if n >= 0:
                return _Code(power, _POW, data=b.data, vector=b.vector)
            self.out.guards.add("pow")
            self.out.helpers.add("_safe_den")
            return _Code(f"(1.0 / _safe_den({power}))", _ATOM, data=b.data, vector=b.vector)
        self.out.guards.add("pow")
        vec = is_vector(node)
        lb = self._log_of(base)
        e = self.gen(expo)
        if e.const is None:
            e = self._tensor(e)
        ltext = self._operand(lb, vec, _MUL + 1)
        etext = self._operand(e, vec, _MUL)
        text = f"torch.exp(torch.clamp({etext} * {ltext}, max={EXP_MAX!r}))"
        return _Code(text, _ATOM, data=lb.data or e.data, vector=vec)


def torch_code(expr: Expr, kind: TaskKind) -> TorchCode:
    """Generate the ``forward`` body computing the per-sample loss of ``expr``.

    The body reads ``input`` and ``target`` and leaves the per-sample loss in ``loss`` (shape of
    the samples, leading population dimensions included), exactly as the compiled loss does.

    Args:
        expr: A per-sample (scalar-rooted) expression of ``kind``; validate it first (e.g. with
            :func:`~loss_rl.expr.compile_loss`).
        kind: The task kind.
    """
    g = _Generator(expr, kind)
    root = g._tensor(g.gen(expr))
    lines = g.lines
    out = g.out
    uses = g.uses
    pre: list[str] = []
    if kind is TaskKind.CLASSIFICATION:
        pre.append("shape = input.shape[:-1]  # sample shape: leading population dims, batch")
        need_hard_t = "t" in uses
        if need_hard_t or "num_classes" in uses:
            pre.append("num_classes = input.shape[-1]")
        if uses & {"log_p", "log_p_y", "p_y"}:
            pre.append("log_p = F.log_softmax(input, dim=-1)")
        if uses & {"p", "p_y"}:
            pre.append("p = F.softmax(input, dim=-1)")
        if uses & {"t", "log_p_y", "p_y"}:
            soft = ["t = target.to(input.dtype)"]
            hard = []
            if need_hard_t:
                hard.append("t = F.one_hot(target, num_classes).to(input.dtype)")
            if uses & {"log_p_y", "p_y"}:
                hard.append(
                    "log_p_y = log_p.gather(-1, target.expand(shape).unsqueeze(-1)).squeeze(-1)"
                )
            if "log_p_y" in uses:
                soft.append("log_p_y = (t * log_p).sum(-1)")
            if "p_y" in uses:
                soft.append("p_y = (t * p).sum(-1)")
                hard.append("p_y = log_p_y.exp()")
            pre.append("if target.is_floating_point():  # soft targets: class probabilities")
            pre.extend("    " + s for s in soft)
            pre.append("else:  # class indices")
            pre.extend("    " + s for s in hard)
    else:
        pre.append("shape = torch.broadcast_tensors(input, target)[0].shape")
        if "num_classes" in uses:
            pre.append("num_classes = 1  # regression has no class axis")
        if uses & {"target", "residual"}:
            pre.append("y = target.to(input.dtype)")
        if "residual" in uses:
            pre.append("residual = input - y")
    out.body = [*pre, *lines, f"loss = {root.text}", "loss = loss.expand(shape)"]
    return out


# ---------------------------------------------------------------------------------------------
# LaTeX, for the docstring of an exported module.

_LATEX_LEAVES = {
    "p_y": "p_y",
    "log_p_y": r"\log p_y",
    "p": "p_c",
    "log_p": r"\log p_c",
    "t": "t_c",
    "z": "x_c",
    "pred": "x",
    "target": "y",
    "residual": "x - y",
}
_LATEX_FUNCS = {
    "log": r"\log",
    "exp": r"\exp",
    "tanh": r"\tanh",
    "sigmoid": r"\sigma",
    "softplus": r"\operatorname{softplus}",
    "min": r"\min",
    "max": r"\max",
}


def _latex_const(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    text = repr(v)
    if "e" in text:
        mant, exp = text.split("e")
        return rf"{mant} \times 10^{{{int(exp)}}}"
    return text


def _latex(e: Expr) -> tuple[str, int]:
    if isinstance(e, Leaf):
        # "\log p_y" needs no parentheses after a minus sign, but does as the base of a power.
        prec = {"log_p_y": _POW, "log_p": _POW, "residual": _ADD}.get(e.name, _ATOM)
        return _LATEX_LEAVES[e.name], prec
    if isinstance(e, Const):
        text = _latex_const(e.value)
        return text, _UNARY if e.value < 0 else _ATOM
    assert isinstance(e, Op)
    a = [_latex(x) for x in e.args]

    def wrap(i: int, need: int) -> str:
        text, prec = a[i]
        return rf"\left({text}\right)" if prec < need else text

    name = e.op
    if name == "add":
        return f"{wrap(0, _ADD)} + {wrap(1, _MUL)}", _ADD
    if name == "sub":
        return f"{wrap(0, _ADD)} - {wrap(1, _MUL)}", _ADD
    if name == "mul":
        return rf"{wrap(0, _MUL)} \cdot {wrap(1, _UNARY)}", _MUL
    if name == "div":
        return rf"\frac{{{a[0][0]}}}{{{a[1][0]}}}", _ATOM
    if name == "neg":
        return f"-{wrap(0, _POW)}", _UNARY
    if name in ("pow", "square"):
        exponent = "2" if name == "square" else a[1][0]
        return f"{{{wrap(0, _ATOM)}}}^{{{exponent}}}", _POW
    if name == "sqrt":
        return rf"\sqrt{{{a[0][0]}}}", _ATOM
    if name == "abs":
        return rf"\left|{a[0][0]}\right|", _ATOM
    if name == "recip":
        return rf"\frac{{1}}{{{a[0][0]}}}", _ATOM
    # A sum reaches as far right as it can, so it gets parentheses inside any operator.
    if name == "sum_c":
        return rf"\sum_{{c=1}}^{{C}} {wrap(0, _MUL)}", _SUM
    if name == "mean_c":
        return rf"\frac{{1}}{{C}} \sum_{{c=1}}^{{C}} {wrap(0, _MUL)}", _SUM
    args = ", ".join(x for x, _ in a)
    return rf"{_LATEX_FUNCS[name]}\left({args}\right)", _ATOM


def latex(expr: Expr) -> str:
    r"""The per-sample loss as LaTeX math (for docstrings), e.g. ``-{\left(1 - p_y\right)}^{2}``.

    Symbols: ``x`` the logits (classification) or prediction (regression), ``p_c`` the softmax
    probabilities, ``p_y`` the probability of the target class, ``t_c`` the one-hot (or soft)
    target, ``y`` the regression target, ``C`` the number of classes.
    """
    return _latex(expr)[0]
