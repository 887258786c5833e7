"""Compile loss expressions to torch callables that work with autograd and population dims.

A compiled loss maps ``(input, target)`` to the *per-sample* loss:

- classification: ``input`` are logits ``[..., B, C]``; ``target`` are int64 class indices
  ``[..., B]`` or soft targets ``[..., B, C]``; the result has shape ``[..., B]``;
- regression: ``input`` and ``target`` broadcast against each other; the result has their
  broadcast shape.

Leading dimensions ``...`` are free, which is how the batched trainer evaluates a population of
``N`` models (``[N, B, C]`` logits against one ``[B]`` target) in one call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from loss_rl.errors import LossSpecError
from loss_rl.expr._canonical import integer_exponent
from loss_rl.expr._nodes import (
    EPS,
    EXP_MAX,
    SQRT_EPS,
    Const,
    Expr,
    Leaf,
    Op,
    TaskKind,
    is_vector,
    task_kind,
)

Reduction = Literal["mean", "sum", "none"]


class LeafContext:
    """Lazily computed leaf values of one call (shared with the meta-learning evaluator).

    Args:
        input: Logits ``[..., B, C]`` (classification) or predictions (regression).
        target: Class indices ``[..., B]``, soft targets ``[..., B, C]`` or regression targets.
        kind: Task kind, which decides the leaves available.
    """

    def __init__(self, input: Tensor, target: Tensor, kind: TaskKind) -> None:
        self.input = input
        self.target = target
        self.kind = kind
        self.cache: dict[str, Tensor] = {}
        if kind is TaskKind.CLASSIFICATION:
            self.num_classes = input.shape[-1]
            self.sample_shape = input.shape[:-1]
            self.soft = target.is_floating_point()
        else:
            self.num_classes = 1
            self.sample_shape = torch.broadcast_shapes(input.shape, target.shape)
            self.soft = False

    def leaf(self, name: str) -> Tensor:
        """The value of leaf ``name`` (computed on first use, then cached).

        Raises:
            LossSpecError: for a leaf of the other task kind or an unknown one.
        """
        v = self.cache.get(name)
        if v is None:
            v = self._compute(name)
            self.cache[name] = v
        return v

    def _compute(self, name: str) -> Tensor:
        z, y = self.input, self.target
        if name == "z":
            return z
        if name == "log_p":
            return F.log_softmax(z, dim=-1)
        if name == "p":
            return F.softmax(z, dim=-1)
        if name == "t":
            if self.soft:
                return y.to(z.dtype)
            return F.one_hot(y, self.num_classes).to(z.dtype)
        if name == "log_p_y":
            if self.soft:
                return (self.leaf("t") * self.leaf("log_p")).sum(-1)
            idx = y.expand(self.sample_shape).unsqueeze(-1)
            return self.leaf("log_p").gather(-1, idx).squeeze(-1)
        if name == "p_y":
            if self.soft:
                return (self.leaf("t") * self.leaf("p")).sum(-1)
            return self.leaf("log_p_y").exp()
        if name == "pred":
            return z
        if name == "target":
            return y.to(z.dtype)
        if name == "residual":
            return z - y.to(z.dtype)
        raise LossSpecError(f"leaf {name!r} is not available here", field="leaf")


_Fn = Callable[[LeafContext], Tensor]


def _to_vec(x: Tensor) -> Tensor:
    # A per-sample value meets a per-class vector: add the class axis (0-dim constants broadcast).
    return x.unsqueeze(-1) if x.dim() > 0 else x


def safe_denominator(x: Tensor) -> Tensor:
    """``x`` with its magnitude raised to at least ``EPS``, sign kept (0 counts as positive)."""
    sign = torch.where(x < 0, -1.0, 1.0)
    return sign * torch.clamp(x.abs(), min=EPS)


def safe_log(x: Tensor) -> Tensor:
    """Protected log: ``log(max(|x|, EPS))``."""
    return torch.log(torch.clamp(x.abs(), min=EPS))


#: Guarded torch implementations of the elementwise operators (log, pow and the reductions have
#: shape- or leaf-dependent rules in ``_build_node``). Shared with :mod:`loss_rl.meta`.
UNARY_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "neg": torch.neg,
    "exp": lambda x: torch.exp(torch.clamp(x, max=EXP_MAX)),
    "sqrt": lambda x: torch.sqrt(torch.clamp(x.abs(), min=SQRT_EPS)),
    "square": lambda x: x * x,
    "abs": torch.abs,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "recip": lambda x: 1.0 / safe_denominator(x),
}
BINARY_FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": lambda x, y: x / safe_denominator(y),
    "min": torch.minimum,
    "max": torch.maximum,
}


def _build(node: Expr, vector_parent: bool) -> _Fn:
    fn = _build_node(node)
    if vector_parent and not is_vector(node):
        return lambda ctx: _to_vec(fn(ctx))
    return fn


def _log_of(node: Expr) -> _Fn:
    # log(p_y) and log(p) are taken from log-softmax: exact and finite even where p underflows.
    if isinstance(node, Leaf) and node.name in ("p_y", "p"):
        name = "log_" + node.name
        return lambda ctx: ctx.leaf(name)
    inner = _build_node(node)
    return lambda ctx: safe_log(inner(ctx))


def _build_node(node: Expr) -> _Fn:
    if isinstance(node, Leaf):
        name = node.name
        return lambda ctx: ctx.leaf(name)
    if isinstance(node, Const):
        value = node.value
        return lambda ctx: torch.tensor(value, dtype=ctx.input.dtype, device=ctx.input.device)
    assert isinstance(node, Op)
    name, args = node.op, node.args
    if name in ("sum_c", "mean_c"):
        inner = _build_node(args[0])
        if is_vector(args[0]):
            return (
                (lambda ctx: inner(ctx).sum(-1))
                if name == "sum_c"
                else (lambda ctx: inner(ctx).mean(-1))
            )
        if name == "sum_c":
            return lambda ctx: inner(ctx) * ctx.num_classes
        return inner
    if name == "log":
        return _log_of(args[0])
    if name == "pow":
        base, expo = args
        n = integer_exponent(expo)
        if n is not None:
            b = _build_node(base)
            if n >= 0:
                return lambda ctx: b(ctx) ** n
            return lambda ctx: 1.0 / safe_denominator(b(ctx) ** (-n))
        # Shapes are decided here, once, not on every call of the loss.
        vec_base = is_vector(node) and not is_vector(base)
        vec_expo = is_vector(node) and not is_vector(expo)
        lb = _log_of(base)
        e = _build_node(expo)

        def _pow(ctx: LeafContext) -> Tensor:
            lv, ev = lb(ctx), e(ctx)
            if vec_base:
                lv = _to_vec(lv)
            if vec_expo:
                ev = _to_vec(ev)
            return torch.exp(torch.clamp(ev * lv, max=EXP_MAX))

        return _pow
    if len(args) == 1:
        a = _build_node(args[0])
        f = UNARY_FUNCTIONS[name]
        return lambda ctx: f(a(ctx))
    vec = is_vector(node)
    left, right = _build(args[0], vec), _build(args[1], vec)
    g = BINARY_FUNCTIONS[name]
    return lambda ctx: g(left(ctx), right(ctx))


class CompiledLoss:
    """A loss expression compiled to a torch callable returning the per-sample loss.

    Args:
        expr: The expression.
        kind: Task kind; inferred from the leaves when omitted.

    Raises:
        LossSpecError: if the root is a per-class vector (reduce it with ``sum_c``/``mean_c``) or
            leaves of both task kinds are mixed.
    """

    def __init__(self, expr: Expr, kind: TaskKind | str | None = None) -> None:
        inferred = task_kind(expr)
        if kind is None:
            kind = inferred or TaskKind.CLASSIFICATION
        kind = TaskKind(kind)
        if inferred is not None and inferred is not kind:
            raise LossSpecError(
                f"expression uses {inferred.value} leaves but the task is {kind.value}",
                field="kind",
            )
        if is_vector(expr):
            raise LossSpecError(
                "the loss is a per-class vector; reduce it to one value per sample with "
                "sum_c(...) or mean_c(...)",
                field="expression",
            )
        self.expr = expr
        self.kind = kind
        self._fn = _build_node(expr)

    def __reduce__(self) -> tuple[type[CompiledLoss], tuple[Expr, TaskKind]]:
        # The compiled closures cannot be pickled; the expression can, and recompiles.
        return (CompiledLoss, (self.expr, self.kind))

    def __call__(self, input: Tensor, target: Tensor) -> Tensor:
        ctx = LeafContext(input, target, self.kind)
        out = self._fn(ctx)
        if out.shape != ctx.sample_shape:
            out = out.expand(ctx.sample_shape)
        return out


def compile_loss(expr: Expr, kind: TaskKind | str | None = None) -> CompiledLoss:
    """Compile ``expr`` to a callable ``(input, target) -> per-sample loss``.

    See the module docstring for shapes. The result supports autograd and any number of leading
    population dimensions.
    """
    return CompiledLoss(expr, kind)


def reduce(loss: Tensor, reduction: Reduction) -> Tensor:
    """Apply a torch-style ``reduction`` (``mean`` | ``sum`` | ``none``) to a per-sample loss."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise LossSpecError(
        f"unknown reduction {reduction!r}; use 'mean', 'sum' or 'none'", field="reduction"
    )


class ExprLoss(torch.nn.Module):
    r"""A loss expression as a ``torch.nn.Module`` (what :func:`loss_rl.load_loss` returns).

    Args:
        expr: The per-sample loss expression.
        kind: ``"classification"`` or ``"regression"``; inferred from the leaves when omitted.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` over the batch.

    Shape:
        - classification: input ``(B, C)`` logits, target ``(B)`` int64 or ``(B, C)`` soft.
        - regression: input and target of equal shape.
    """

    def __init__(
        self, expr: Expr, kind: TaskKind | str | None = None, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        reduce(torch.zeros(1), reduction)  # validate early
        self.compiled = compile_loss(expr, kind)
        self.expr = expr
        self.kind = self.compiled.kind
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return reduce(self.compiled(input, target), self.reduction)

    def extra_repr(self) -> str:
        return f"expr={str(self.expr)!r}, reduction={self.reduction!r}"
