"""Structure groups of loss trees compiled to straight-line Python: forward and backward pass.

Candidates whose trees have the same :func:`structure` (constants may differ, e.g. GCE with
q = 0.5 and q = 0.7) are compiled together by :class:`ProgramBuilder` into one
:class:`Program`: the constants become ``[G, 1]`` tensors, constant subtrees are folded once and
repeated subtrees shared, and the forward pass is followed by a hand-written backward pass (no
autograd graph, no interpreter loop). Guards (``exp`` clamp, protected ``log``/``sqrt``/division)
take their masked path only when a guard is actually active.

The generated source is assembled only from this module's fixed operator templates and generated
local names (``v3``, ``g3_1``, ...); constants enter through the namespace as tensors, never as
text. No text of a loss spec or of a user ever reaches ``exec``: specs are parsed into validated
trees by :func:`loss_rl.expr.parse` first.

Semantics are those of :func:`loss_rl.expr.compile_loss` (same guards, same special cases for
``log(p)``, ``log(p_y)`` and integer powers — decided by the compiler's own
:func:`~loss_rl.expr.integer_exponent` — and the same gradients, including at clamps and ties).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

from loss_rl.expr import (
    EPS,
    EXP_MAX,
    SQRT_EPS,
    Const,
    Expr,
    Leaf,
    Op,
    integer_exponent,
    is_vector,
)

#: Leaves whose gradient the programs return (the population loss chains them into ``dL/dZ``).
GRAD_LEAVES = frozenset({"z", "log_p", "p", "log_p_y", "p_y", "pred", "residual"})
_LOG_LEAF = {"p": "log_p", "p_y": "log_p_y"}


def structure(e: Expr) -> str:
    """Shape of a tree with constants abstracted (integer exponents stay: they change the code)."""
    if isinstance(e, Leaf):
        return e.name
    if isinstance(e, Const):
        return "#"
    assert isinstance(e, Op)
    if e.op == "pow":
        n = integer_exponent(e.args[1])
        if n is not None:
            return f"pow{n}({structure(e.args[0])})"
    return f"{e.op}({','.join(structure(a) for a in e.args)})"


def _all_le(x: Tensor, bound: float) -> bool:
    # NaN compares false, so a NaN anywhere takes the guarded (exact) path.
    return x.numel() == 0 or x.max().item() <= bound


def _all_ge(x: Tensor, bound: float) -> bool:
    return x.numel() == 0 or x.min().item() >= bound


def _safe_den(x: Tensor) -> tuple[Tensor, Tensor | None]:
    """``x`` with magnitude raised to at least EPS (sign kept), and the clamp's gradient mask.

    The mask is ``None`` when the guard is idle (then the result is ``x`` itself, exactly).
    """
    a = x.abs()
    if _all_ge(a, EPS):
        return x, None
    sign = torch.where(x < 0, -1.0, 1.0)
    return sign * torch.clamp(a, min=EPS), a >= EPS


def _pow_grad(g: Tensor, b: Tensor, n: int) -> Tensor:
    # torch's pow_backward for a scalar exponent.
    if n == 0:
        return torch.zeros_like(g)
    return g * (n * b.pow(n - 1))


@dataclass(eq=False)
class _Node:
    """One operation of a group's program (the value lives in variable ``v<slot>``)."""

    slot: int
    op: str  # "leaf", "const", an operator name, "ipow", "ipow_neg" or "gpow"
    args: tuple[int, ...] = ()
    vec: bool = False  # the value is a per-class vector
    unsq: tuple[bool, ...] = ()  # argument gets a class axis before use (scalar in vector op)
    needs: tuple[bool, ...] = ()  # argument carries a gradient
    static: bool = False  # no leaf below: computed once at build time
    grad: bool = False  # the value depends on a differentiable leaf
    arg_vec: bool = False  # (sum_c / mean_c) the argument is a vector
    n: int = 0  # integer exponent
    name: str = ""  # leaf name


@dataclass(eq=False)
class Program:
    """A structure group's trees compiled to one generated Python function.

    ``fn(*leaf values, grad_seed) -> (root, leaf grads...)`` runs the forward pass and the hand
    written backward pass of every member at once.
    """

    size: int  # models in the group
    leaf_names: tuple[str, ...]  # argument order of ``fn``
    grad_leaves: tuple[str, ...]  # order of the returned leaf gradients
    root_needs_grad: bool
    fn: Callable[..., tuple[Tensor, tuple[Tensor | None, ...]]]
    source: str
    # The pieces :func:`~loss_rl.training._fuse.fuse_programs` splices into one function for the
    # whole population:
    body: list[str]  # forward + backward lines (after the leaf assignments)
    backward_start: int  # index in ``body`` of the first backward line
    leaf_vars: dict[str, str]  # leaf name -> variable
    root_var: str
    root_static: bool
    grad_vars: dict[str, str]  # differentiable leaf name -> its gradient's variable
    statics: dict[str, object]  # build-time values (constants, folded subtrees)


_GroupFn = Callable[..., tuple[Tensor, tuple[Tensor | None, ...]]]


class _Deferred:
    """A generated function compiled on its first call.

    A group's own function only runs when the population's fused function fails (see
    :mod:`loss_rl.training._ploss`), which is rare; compiling it for every group up front was a
    quarter of the time to build a 50-group population (24 of ~90 ms).
    """

    def __init__(self, source: str, namespace: dict[str, object], name: str) -> None:
        self.source, self._ns, self._name = source, namespace, name
        self._fn: _GroupFn | None = None

    def __call__(self, *args: Tensor) -> tuple[Tensor, tuple[Tensor | None, ...]]:
        fn = self._fn
        if fn is None:
            exec(self.source, self._ns)
            fn = self._fn = cast(_GroupFn, self._ns[self._name])
        return fn(*args)


#: What generated code may call: torch, the guard helpers above and the guards' constants.
NAMESPACE: dict[str, object] = {
    "torch": torch,
    "_le": _all_le,
    "_ge": _all_ge,
    "_safe_den": _safe_den,
    "_pow_grad": _pow_grad,
    "_where": torch.where,
    "_softplus": torch.nn.functional.softplus,
    "_softplus_bwd": torch.ops.aten.softplus_backward,
    "_tanh_bwd": torch.ops.aten.tanh_backward,
    "_sigmoid_bwd": torch.ops.aten.sigmoid_backward,
    "EPS": EPS,
    "EXP_MAX": EXP_MAX,
    "SQRT_EPS": SQRT_EPS,
}


class ProgramBuilder:
    """Compile one structure group (``members`` share :func:`structure`) to a :class:`Program`.

    Members are walked in lockstep; a constant becomes a ``[G, 1]`` tensor holding each member's
    value (repeated over its ``reps`` seeds). Constant subtrees are folded and repeated subtrees
    shared (memoised on the members' nodes).

    Args:
        members: The group's trees (one :func:`structure`).
        reps: Models per member (paired seeds).
        num_classes: Number of classes (1 for regression).
        dtype: Floating type of the model outputs (constants are stored in it).
        device: Device of the model outputs: the constants live there, so the folded subtrees
            are computed there too and the program never mixes devices.
    """

    def __init__(
        self,
        members: Sequence[Expr],
        reps: int,
        num_classes: int,
        dtype: torch.dtype,
        device: torch.device | None = None,
    ) -> None:
        self.members = list(members)
        self.dtype = dtype
        self.device = torch.device("cpu") if device is None else device
        self.reps = reps
        self.num_classes = num_classes
        self.size = len(members) * reps
        self.nodes: list[_Node] = []
        self.leaf_slots: dict[str, int] = {}
        self.memo: dict[tuple[Expr, ...], _Node] = {}
        self.consts: dict[str, Tensor] = {}
        self.hoisted: list[str] = []  # build-time lines on constants only

    # ---------------------------------------------------------------- tree -> nodes
    def _add(self, **kw: object) -> _Node:
        node = _Node(slot=len(self.nodes), **kw)  # type: ignore[arg-type]
        self.nodes.append(node)
        return node

    def _leaf(self, name: str) -> _Node:
        if name not in self.leaf_slots:
            vec = name in ("p", "log_p", "t", "z")
            node = self._add(op="leaf", vec=vec, grad=name in GRAD_LEAVES, name=name)
            self.leaf_slots[name] = node.slot
        return self.nodes[self.leaf_slots[name]]

    def node(self, nodes: tuple[Expr, ...]) -> _Node:
        hit = self.memo.get(nodes)
        if hit is None:
            hit = self._node(nodes)
            self.memo[nodes] = hit
        return hit

    def _node(self, nodes: tuple[Expr, ...]) -> _Node:
        first = nodes[0]
        if isinstance(first, Leaf):
            return self._leaf(first.name)
        if isinstance(first, Const):
            values = torch.tensor(
                [n.value for n in nodes],  # type: ignore[attr-defined]
                dtype=self.dtype,
                device=self.device,
            )
            node = self._add(op="const", static=True)
            self.consts[f"v{node.slot}"] = values.repeat_interleave(self.reps).unsqueeze(-1)
            return node
        assert isinstance(first, Op)
        name, vec = first.op, is_vector(first)
        if name == "log" and isinstance(first.args[0], Leaf) and first.args[0].name in _LOG_LEAF:
            return self._leaf(_LOG_LEAF[first.args[0].name])
        if name == "pow":
            return self._pow(nodes, vec)
        kids = [self.node(tuple(n.args[i] for n in nodes)) for i in range(len(first.args))]  # type: ignore[attr-defined]
        unsq = tuple(vec and len(kids) == 2 and not k.vec for k in kids)
        return self._add(
            op=name,
            args=tuple(k.slot for k in kids),
            vec=vec,
            unsq=unsq,
            needs=tuple(k.grad for k in kids),
            static=all(k.static for k in kids),
            grad=any(k.grad for k in kids),
            arg_vec=kids[0].vec,
        )

    def _pow(self, nodes: tuple[Expr, ...], vec: bool) -> _Node:
        first = nodes[0]
        assert isinstance(first, Op)
        base_e, _ = first.args
        n = integer_exponent(first.args[1])
        if n is not None:
            base = self.node(tuple(x.args[0] for x in nodes))  # type: ignore[attr-defined]
            return self._add(
                op="ipow" if n >= 0 else "ipow_neg",
                args=(base.slot,),
                vec=base.vec,
                needs=(base.grad,),
                static=base.static,
                grad=base.grad,
                n=abs(n),
            )
        # General power: exp(min(expo * log(base), EXP_MAX)) with log(p), log(p_y) exact.
        if isinstance(base_e, Leaf) and base_e.name in _LOG_LEAF:
            log_base = self._leaf(_LOG_LEAF[base_e.name])
        else:
            log_base = self.node(tuple(Op("log", (x.args[0],)) for x in nodes))  # type: ignore[attr-defined]
        expo = self.node(tuple(x.args[1] for x in nodes))  # type: ignore[attr-defined]
        kids = (log_base, expo)
        return self._add(
            op="gpow",
            args=(log_base.slot, expo.slot),
            vec=vec,
            unsq=tuple(vec and not k.vec for k in kids),
            needs=tuple(k.grad for k in kids),
            static=all(k.static for k in kids),
            grad=any(k.grad for k in kids),
        )

    # ---------------------------------------------------------------- nodes -> Python
    def _forward(self, nd: _Node) -> list[str]:
        o = f"v{nd.slot}"
        a = [f"v{s}" for s in nd.args]
        lines: list[str] = []
        for k, u in enumerate(nd.unsq):
            if u:
                line = f"u{nd.slot}_{k} = {a[k]}.unsqueeze(-1)"
                # Work on constants alone is done once, at build time.
                hoist = self.nodes[nd.args[k]].static and not nd.static
                (self.hoisted if hoist else lines).append(line)
                a[k] = f"u{nd.slot}_{k}"
        c = self.num_classes
        op = nd.op
        simple = {
            "neg": f"{o} = -{a[0]}" if a else "",
            "square": f"{o} = {a[0]} * {a[0]}" if a else "",
            "abs": f"{o} = {a[0]}.abs()" if a else "",
            "tanh": f"{o} = {a[0]}.tanh()" if a else "",
            "sigmoid": f"{o} = {a[0]}.sigmoid()" if a else "",
            "softplus": f"{o} = _softplus({a[0]})" if a else "",
            "add": f"{o} = {a[0]} + {a[1]}" if len(a) == 2 else "",
            "sub": f"{o} = {a[0]} - {a[1]}" if len(a) == 2 else "",
            "mul": f"{o} = {a[0]} * {a[1]}" if len(a) == 2 else "",
            "min": f"{o} = torch.minimum({a[0]}, {a[1]})" if len(a) == 2 else "",
            "max": f"{o} = torch.maximum({a[0]}, {a[1]})" if len(a) == 2 else "",
        }
        if op in simple:
            return [*lines, simple[op]]
        m = f"m{nd.slot}"  # guard mask (None while the guard is idle)
        if op == "exp":
            return [
                f"if _le({a[0]}, EXP_MAX):",
                f"    {o} = {a[0]}.exp(); {m} = None",
                "else:",
                f"    {m} = {a[0]} <= EXP_MAX; {o} = {a[0]}.clamp(max=EXP_MAX).exp()",
            ]
        if op == "sqrt":
            return [
                f"a{nd.slot} = {a[0]}.abs()",
                f"if _ge(a{nd.slot}, SQRT_EPS):",
                f"    {o} = a{nd.slot}.sqrt(); {m} = None",
                "else:",
                f"    {m} = a{nd.slot} >= SQRT_EPS; {o} = a{nd.slot}.clamp(min=SQRT_EPS).sqrt()",
            ]
        if op == "log":  # protected log of anything but p / p_y
            return [
                f"a{nd.slot} = {a[0]}.abs()",
                f"if _ge(a{nd.slot}, EPS):",
                f"    {o} = a{nd.slot}.log(); {m} = None",
                "else:",
                f"    {m} = a{nd.slot} >= EPS; a{nd.slot} = a{nd.slot}.clamp(min=EPS)",
                f"    {o} = a{nd.slot}.log()",
            ]
        if op == "recip":
            return [f"d{nd.slot}, {m} = _safe_den({a[0]})", f"{o} = 1.0 / d{nd.slot}"]
        if op == "div":
            den = f"d{nd.slot}, {m} = _safe_den({a[1]})"
            if self.nodes[nd.args[1]].static and not nd.static:
                self.hoisted.append(den)
                return [*lines, f"{o} = {a[0]} / d{nd.slot}"]
            return [*lines, den, f"{o} = {a[0]} / d{nd.slot}"]
        if op in ("sum_c", "mean_c"):
            if nd.arg_vec:
                return [f"{o} = {a[0]}.{'sum' if op == 'sum_c' else 'mean'}(-1)"]
            return [f"{o} = {a[0]} * {c}" if op == "sum_c" else f"{o} = {a[0]}"]
        if op == "ipow":
            return [f"{o} = {a[0]} ** {nd.n}"]
        if op == "ipow_neg":
            return [f"d{nd.slot}, {m} = _safe_den({a[0]} ** {nd.n})", f"{o} = 1.0 / d{nd.slot}"]
        if op == "gpow":
            e = f"e{nd.slot}"
            return [
                *lines,
                f"{e} = {a[1]} * {a[0]}",
                f"if _le({e}, EXP_MAX):",
                f"    {o} = {e}.exp(); {m} = None",
                "else:",
                f"    {m} = {e} <= EXP_MAX; {o} = {e}.clamp(max=EXP_MAX).exp()",
            ]
        raise AssertionError(f"unhandled operator {op}")  # pragma: no cover

    def _backward(self, nd: _Node, go: str) -> list[tuple[int, list[str], str]]:
        """Gradient contributions ``(arg index, lines to run first, expression)``."""
        a = [f"v{s}" for s in nd.args]
        for k, u in enumerate(nd.unsq):
            if u:
                a[k] = f"u{nd.slot}_{k}"
        o, m, s = f"v{nd.slot}", f"m{nd.slot}", nd.slot
        c = self.num_classes
        op = nd.op
        out: list[tuple[int, list[str], str]] = []

        def masked(expr: str) -> list[str]:
            return [f"t{s} = {expr}", f"if {m} is not None: t{s} = _where({m}, t{s}, 0.0)"]

        if op == "neg":
            out.append((0, [], f"-{go}"))
        elif op == "exp":
            out.append((0, masked(f"{go} * {o}"), f"t{s}"))
        elif op == "sqrt":
            out.append((0, masked(f"{go} / (2 * {o})"), f"t{s} * {a[0]}.sgn()"))
        elif op == "square":
            out.append((0, [f"t{s} = {go} * {a[0]}"], f"t{s} + t{s}"))
        elif op == "abs":
            out.append((0, [], f"{go} * {a[0]}.sgn()"))
        elif op == "tanh":
            out.append((0, [], f"_tanh_bwd({go}, {o})"))
        elif op == "sigmoid":
            out.append((0, [], f"_sigmoid_bwd({go}, {o})"))
        elif op == "softplus":
            out.append((0, [], f"_softplus_bwd({go}, {a[0]}, 1.0, 20.0)"))
        elif op == "recip":
            out.append((0, masked(f"-{go} * ({o} * {o})"), f"t{s}"))
        elif op == "ipow_neg":
            out.append((0, masked(f"-{go} * ({o} * {o})"), f"_pow_grad(t{s}, {a[0]}, {nd.n})"))
        elif op == "ipow":
            if nd.n != 0:  # x ** 0 has a zero gradient
                out.append((0, [], f"_pow_grad({go}, {a[0]}, {nd.n})"))
        elif op == "log":
            out.append(
                (
                    0,
                    [
                        f"if {m} is None: t{s} = {go} / {a[0]}",  # == (g / |x|) * sgn(x) exactly
                        f"else: t{s} = _where({m}, {go} / a{s}, 0.0) * {a[0]}.sgn()",
                    ],
                    f"t{s}",
                )
            )
        elif op in ("sum_c", "mean_c"):
            if nd.arg_vec:
                grad = f"{go}.unsqueeze(-1).expand(-1, -1, {c})"
                out.append((0, [], grad if op == "sum_c" else f"{grad} / {c}"))
            else:
                out.append((0, [], f"{go} * {c}" if op == "sum_c" else go))
        elif op == "add":
            out += [(0, [], go), (1, [], go)]
        elif op == "sub":
            out += [(0, [], go), (1, [], f"-{go}")]
        elif op == "mul":
            out += [(0, [], f"{go} * {a[1]}"), (1, [], f"{go} * {a[0]}")]
        elif op == "div":
            out.append((0, [], f"{go} / d{s}"))
            out.append((1, masked(f"-{go} * {a[0]} / (d{s} * d{s})"), f"t{s}"))
        elif op in ("min", "max"):
            # torch.minimum/maximum backward: the selected side gets g, ties share it equally;
            # (1 ± sign(b - a)) / 2 is 1, 1/2 or 0 without slow boolean kernels.
            diff = f"{a[1]} - {a[0]}" if op == "min" else f"{a[0]} - {a[1]}"
            share = f"t{s} = {go} * ((torch.sign({diff}) + 1) * 0.5)"
            out += [(0, [share], f"t{s}"), (1, [share], f"{go} - t{s}")]
        elif op == "gpow":
            out += [
                (0, masked(f"{go} * {o}"), f"t{s} * {a[1]}"),
                (1, masked(f"{go} * {o}"), f"t{s} * {a[0]}"),
            ]
        else:  # pragma: no cover
            raise AssertionError(f"unhandled operator {op}")
        # Keep only contributions to arguments that carry a gradient; reduce broadcast axes.
        kept: list[tuple[int, list[str], str]] = []
        done: set[str] = set()
        for k, pre, expr in out:
            if not nd.needs[k]:
                continue
            if nd.unsq and nd.unsq[k]:
                expr = f"({expr}).sum(-1)"
            kept.append((k, [line for line in pre if line not in done], expr))
            done.update(pre)
        return kept

    def build(self) -> Program:
        root = self.node(tuple(self.members))
        ns: dict[str, object] = dict(NAMESPACE)
        ns.update(self.consts)
        # Constant subtrees: run their forward code once now.
        static_lines = [
            line
            for nd in self.nodes
            if nd.static and nd.op != "const"
            for line in self._forward(nd)
        ]
        leaf_names = tuple(self.leaf_slots)
        grad_leaves = tuple(n for n in leaf_names if n in GRAD_LEAVES)
        body = [f"v{self.leaf_slots[n]} = {n}" for n in leaf_names]
        for nd in self.nodes:
            if not nd.static and nd.op != "leaf":
                body += self._forward(nd)
        static_lines += self.hoisted  # after the constants they read
        if static_lines:
            exec("\n".join(static_lines), ns)
        statics = {k: v for k, v in ns.items() if k not in NAMESPACE and k != "__builtins__"}
        n_leaf_lines = len(leaf_names)
        assigned: set[int] = set()
        backward_start = len(body) - n_leaf_lines
        if root.grad:
            body.append(f"g{root.slot} = grad_seed")
            assigned.add(root.slot)
            for nd in reversed(self.nodes):
                if nd.slot not in assigned or nd.op in ("leaf", "const"):
                    continue
                for k, pre, expr in self._backward(nd, f"g{nd.slot}"):
                    body += pre
                    target = nd.args[k]
                    if target in assigned:
                        body.append(f"g{target} = g{target} + {expr}")
                    else:
                        body.append(f"g{target} = {expr}")
                        assigned.add(target)
        grads = ", ".join(
            f"g{self.leaf_slots[n]}" if self.leaf_slots[n] in assigned else "None"
            for n in grad_leaves
        )
        params = ", ".join([*leaf_names, "grad_seed"])
        source = "\n".join(
            [
                f"def _loss({params}):",
                *(f"    {line}" for line in body),
                f"    return v{root.slot}, ({grads}{',' if grads else ''})",
            ]
        )
        return Program(
            size=self.size,
            leaf_names=leaf_names,
            grad_leaves=grad_leaves,
            root_needs_grad=root.grad,
            fn=_Deferred(source, ns, "_loss"),
            source=source,
            body=body[n_leaf_lines:],
            backward_start=backward_start,
            leaf_vars={n: f"v{self.leaf_slots[n]}" for n in leaf_names},
            root_var=f"v{root.slot}",
            root_static=root.static,
            grad_vars={
                n: f"g{self.leaf_slots[n]}" for n in grad_leaves if self.leaf_slots[n] in assigned
            },
            statics=statics,
        )
