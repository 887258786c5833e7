"""The constants of a symbolic loss as learnable parameters (EvoMAL-style refinement).

:class:`SymbolicLoss` walks a loss expression, turns every learnable :class:`~loss_rl.expr.Const`
into one entry of a parameter vector, and evaluates the tree with those tensors, so that the
meta-gradient of a validation loss reaches each constant. Semantics mirror
:func:`loss_rl.expr.compile_loss` exactly (same leaves, same guards, same special cases for
``log(p)``/``log(p_y)`` and integer powers); ``tests/meta/test_symbolic.py`` checks values against
it. :meth:`SymbolicLoss.expr` rebuilds an expression with the learned constants.

Raymond et al., "Learning Symbolic Model-Agnostic Loss Functions via Meta-Learning" (EvoMAL),
TPAMI 2023: constants of a symbolic loss refined by unrolled meta-gradient steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from loss_rl.errors import LossSpecError
from loss_rl.expr import (
    BINARY_FUNCTIONS,
    EXP_MAX,
    UNARY_FUNCTIONS,
    Const,
    Expr,
    Leaf,
    LeafContext,
    Op,
    TaskKind,
    integer_exponent,
    is_vector,
    probes,
    round_constant,
    safe_denominator,
    safe_log,
    task_kind,
)

#: Gradient magnitudes at or below this count as "no gradient" (exact zeros in practice).
ZERO_GRAD_TOL = 1e-12


def _is_int_exponent(node: Expr) -> bool:
    # The compiler's own rule: a leaf-free exponent that folds to an integer is a plain power.
    return integer_exponent(node) is not None


@dataclass(frozen=True)
class ConstantInfo:
    """One constant of a symbolic loss.

    Attributes:
        index: Index among the expression's constants (prefix order).
        position: Prefix position of the node in the tree (see :meth:`Expr.nodes`).
        value: Its value in the original expression.
        learnable: Whether it is refined (constants of an exponent that folds to an integer
            select a different primitive, the plain power, and stay fixed unless asked
            otherwise).
        context: The smallest enclosing sub-expression, to say *which* constant is meant.
    """

    index: int
    position: int
    value: float
    learnable: bool
    context: str

    def describe(self) -> str:
        """``"constant 2 in min(p_y, 2)"`` style label."""
        v = Const(self.value)
        return f"constant {v} (#{self.index}) in {self.context}"


def constants_of(expr: Expr, *, learn_integer_exponents: bool = False) -> list[ConstantInfo]:
    """Every constant of ``expr`` with its position and whether it is learnable."""
    out: list[ConstantInfo] = []

    def walk(node: Expr, pos: int, parent: Op | None, fixed: bool) -> int:
        if isinstance(node, Const):
            ctx = str(parent) if parent is not None else str(node)
            out.append(ConstantInfo(len(out), pos, node.value, not fixed, ctx))
            return pos + 1
        nxt = pos + 1
        if isinstance(node, Op):
            for i, a in enumerate(node.args):
                int_expo = node.op == "pow" and i == 1 and _is_int_exponent(a)
                int_expo = int_expo and not learn_integer_exponents
                nxt = walk(a, nxt, node, fixed or int_expo)
        return nxt

    walk(expr, 0, None, False)
    return out


_Fn = Callable[[LeafContext, Tensor], Tensor]


def _to_vec(x: Tensor) -> Tensor:
    return x.unsqueeze(-1) if x.dim() > 0 else x


_UNARY = UNARY_FUNCTIONS
_BINARY = BINARY_FUNCTIONS


class _Builder:
    """Turns a tree into a closure ``(leaves, theta) -> tensor``; constants read theta."""

    def __init__(self, infos: Sequence[ConstantInfo]) -> None:
        self._slot = {c.position: i for i, c in enumerate(c for c in infos if c.learnable)}
        self._pos = 0

    def build(self, node: Expr) -> _Fn:
        self._pos = 0
        return self._node(node)

    def _skip(self, node: Expr) -> None:
        self._pos += node.size()

    def _wrap(self, node: Expr, vector_parent: bool) -> _Fn:
        fn = self._node(node)
        if vector_parent and not is_vector(node):
            return lambda c, th: _to_vec(fn(c, th))
        return fn

    def _log_of(self, node: Expr) -> _Fn:
        # log(p_y) / log(p) come from log-softmax, as in the compiled loss.
        if isinstance(node, Leaf) and node.name in ("p_y", "p"):
            self._skip(node)
            name = "log_" + node.name
            return lambda c, th: c.leaf(name)
        inner = self._node(node)
        return lambda c, th: safe_log(inner(c, th))

    def _node(self, node: Expr) -> _Fn:
        pos = self._pos
        self._pos += 1
        if isinstance(node, Leaf):
            name = node.name
            return lambda c, th: c.leaf(name)
        if isinstance(node, Const):
            slot = self._slot.get(pos)
            value = node.value
            if slot is None:
                return lambda c, th: torch.tensor(value, dtype=c.input.dtype, device=c.input.device)
            return lambda c, th: th[slot].to(c.input.dtype)
        assert isinstance(node, Op)
        name, args = node.op, node.args
        if name in ("sum_c", "mean_c"):
            inner = self._node(args[0])
            if is_vector(args[0]):
                if name == "sum_c":
                    return lambda c, th: inner(c, th).sum(-1)
                return lambda c, th: inner(c, th).mean(-1)
            if name == "sum_c":
                return lambda c, th: inner(c, th) * c.num_classes
            return inner
        if name == "log":
            return self._log_of(args[0])
        if name == "pow":
            base, expo = args
            n_int = integer_exponent(expo)
            if n_int is not None and not self._learns_in(base, expo):
                n = n_int
                b = self._node(base)
                self._skip(expo)
                if n >= 0:
                    return lambda c, th: b(c, th) ** n
                return lambda c, th: 1.0 / safe_denominator(b(c, th) ** (-n))
            vec = is_vector(node)
            base_vec, expo_vec = is_vector(base), is_vector(expo)
            lb = self._log_of(base)
            e = self._node(expo)

            def _pow(c: LeafContext, th: Tensor) -> Tensor:
                lv, ev = lb(c, th), e(c, th)
                if vec:
                    lv = lv if base_vec else _to_vec(lv)
                    ev = ev if expo_vec else _to_vec(ev)
                return torch.exp(torch.clamp(ev * lv, max=EXP_MAX))

            return _pow
        if len(args) == 1:
            a = self._node(args[0])
            f = _UNARY[name]
            return lambda c, th: f(a(c, th))
        vec = is_vector(node)
        left = self._wrap(args[0], vec)
        right = self._wrap(args[1], vec)
        g = _BINARY[name]
        return lambda c, th: g(left(c, th), right(c, th))

    def _learns_in(self, base: Expr, expo: Expr) -> bool:
        # The exponent's positions follow the base's subtree. A learnable integer exponent takes
        # the general path: its value moves off the integers as soon as it is refined.
        start = self._pos + base.size()
        return any(start <= p < start + expo.size() for p in self._slot)


class SymbolicLoss(nn.Module):
    r"""A loss expression whose constants are learnable parameters.

    Each learnable constant :math:`c_i` is parameterised as :math:`c_i = c_i^0 + s_i u_i` with
    :math:`s_i = \max(|c_i^0|, 0.1)` and :math:`u_i` initialised at 0, so one outer-optimiser step
    moves every constant by about the same *relative* amount, whatever its magnitude.

    Args:
        expr: The loss expression (per-sample).
        kind: Task kind; inferred from the leaves when omitted.
        learn_integer_exponents: Also refine integer exponents (``x^2``). Off by default: an
            integer exponent selects the plain power (defined for negative bases) and refining it
            changes the primitive, not just a number.
        freeze: Indices (see :func:`constants_of`) of constants to keep fixed.

    Raises:
        LossSpecError: if the expression does not fit ``kind`` or is a per-class vector.
    """

    def __init__(
        self,
        expr: Expr,
        kind: TaskKind | str | None = None,
        *,
        learn_integer_exponents: bool = False,
        freeze: Sequence[int] = (),
    ) -> None:
        inferred = task_kind(expr)
        kind = TaskKind(kind) if kind is not None else (inferred or TaskKind.CLASSIFICATION)
        if inferred is not None and inferred is not kind:
            raise LossSpecError(
                f"expression uses {inferred.value} leaves but the task is {kind.value}",
                field="kind",
            )
        if is_vector(expr):
            raise LossSpecError(
                "the loss is a per-class vector; reduce it with sum_c(...) or mean_c(...)",
                field="expression",
            )
        super().__init__()
        frozen = set(freeze)
        infos = constants_of(expr, learn_integer_exponents=learn_integer_exponents)
        self.constants: list[ConstantInfo] = [
            ConstantInfo(
                c.index, c.position, c.value, c.learnable and c.index not in frozen, c.context
            )
            for c in infos
        ]
        self.source = expr
        self.kind = kind
        init = [c.value for c in self.learnable]
        self.register_buffer("init", torch.tensor(init, dtype=torch.float64))
        self.register_buffer("scale", torch.clamp(self.init.abs(), min=0.1))
        self.u = nn.Parameter(torch.zeros(len(init), dtype=torch.float64))
        self._fn = _Builder(self.constants).build(expr)

    @property
    def learnable(self) -> list[ConstantInfo]:
        """The constants being refined, in parameter order."""
        return [c for c in self.constants if c.learnable]

    def values(self) -> Tensor:
        """Current values of the learnable constants (differentiable w.r.t. the parameters)."""
        return self.init + self.scale * self.u

    def per_sample(self, input: Tensor, target: Tensor, theta: Tensor | None = None) -> Tensor:
        """Per-sample loss with the current constants (or with ``theta`` if given)."""
        leaves = LeafContext(input, target, self.kind)
        out = self._fn(leaves, self.values() if theta is None else theta)
        if out.shape != leaves.sample_shape:
            out = out.expand(leaves.sample_shape)
        return out

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Mean loss over the batch."""
        return self.per_sample(input, target).mean()

    def expr(self, digits: bool = True) -> Expr:
        """The expression with the learned constants.

        Args:
            digits: Round constants to the canonical key's significant digits
                (:func:`loss_rl.expr.round_constant`), so the written loss is what the search's
                cache key sees.
        """
        vals = self.values().detach().tolist()
        by_pos = {c.position: v for c, v in zip(self.learnable, vals, strict=True)}
        return _with_constants(self.source, by_pos, digits)

    def extra_repr(self) -> str:
        return f"expr={str(self.source)!r}, learnable={len(self.learnable)}"


def _with_constants(expr: Expr, by_pos: dict[int, float], digits: bool) -> Expr:
    counter = [0]

    def rebuild(node: Expr) -> Expr:
        pos = counter[0]
        counter[0] += 1
        if isinstance(node, Const):
            if pos in by_pos:
                v = by_pos[pos]
                return Const(round_constant(v) if digits else v)
            return node
        if isinstance(node, Op):
            return Op(node.op, tuple(rebuild(a) for a in node.args))
        return node

    return rebuild(expr)


@dataclass(frozen=True)
class DeadConstant:
    """A learnable constant that cannot move the inner training.

    Attributes:
        constant: Which constant.
        reason: ``"no_gradient"`` (the loss's value does not depend on it on the probes, e.g. the
            losing side of ``min``/``max``) or ``"no_effect_on_updates"`` (the loss depends on it
            but its gradient w.r.t. the model output does not, e.g. an additive constant).
    """

    constant: ConstantInfo
    reason: str

    def describe(self) -> str:
        """Readable one-liner."""
        what = {
            "no_gradient": "receives no gradient (it sits on a min/max plateau or is multiplied "
            "by zero on every probe)",
            "no_effect_on_updates": "does not change the gradient the model is trained with "
            "(e.g. an additive constant, or one on the flat side of a min/max)",
        }.get(self.reason, self.reason)
        return f"{self.constant.describe()} {what}"


def dead_constants(loss: SymbolicLoss) -> list[DeadConstant]:
    """Learnable constants that no meta-gradient can move, found on the fixed probes.

    A constant matters to training only through :math:`\\partial^2 L / \\partial z\\,\\partial c`
    (how it changes the update direction). We compute, on the probe inputs of
    :func:`loss_rl.expr.check` in float64, both :math:`\\partial L/\\partial c` and
    :math:`\\partial/\\partial c\\,\\langle \\partial L/\\partial z, r\\rangle` for a random
    direction ``r``; exact zeros mark a dead constant.
    """
    if not loss.learnable:
        return []
    x0, y = probes(loss.kind)
    theta = loss.values().detach().clone().requires_grad_(True)
    x = x0.clone().requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    r = torch.randn(x.shape, generator=g, dtype=x.dtype)
    with torch.enable_grad():
        value = loss.per_sample(x, y, theta)
        finite = torch.isfinite(value)
        total = value[finite].sum()
        d_theta, d_x = torch.autograd.grad(total, (theta, x), create_graph=True, allow_unused=True)
        if d_x is None:
            mixed = None
        else:
            (mixed,) = torch.autograd.grad(
                (torch.nan_to_num(d_x) * r).sum(), theta, allow_unused=True
            )
    out = []
    for i, c in enumerate(loss.learnable):
        gv = 0.0 if d_theta is None else float(d_theta[i].detach().abs())
        gm = 0.0 if mixed is None else float(mixed[i].detach().abs())
        if gv <= ZERO_GRAD_TOL and gm <= ZERO_GRAD_TOL:
            out.append(DeadConstant(c, "no_gradient"))
        elif gm <= ZERO_GRAD_TOL:
            out.append(DeadConstant(c, "no_effect_on_updates"))
    return out
