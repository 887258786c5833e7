"""Per-model losses and their gradients for a whole population of models in a few tensor ops.

The batched trainer needs, at every step, each model's loss *and* ``dL/dZ`` for the stacked
model outputs ``Z`` (logits ``[N, B, C]`` or predictions ``[N, B]``). Calling each candidate's
compiled loss under autograd costs ~20 µs per node per step (autograd bookkeeping on tiny
tensors dominates). This module instead

* computes the shared leaves (``log_p``, ``p``, ``log_p_y``, ``p_y``, ``t``) once for all ``N``
  models, and backpropagates into ``Z`` once, with closed forms;
* groups candidates whose trees have the same *structure* (constants may differ, e.g. GCE with
  q = 0.5 and q = 0.7) and evaluates each group in one pass, the constants being ``[G, 1]``
  tensors;
* compiles each group's trees to straight-line Python (forward pass, then a hand-written
  backward pass: no autograd graph, no interpreter loop), folding constant subtrees once and
  sharing repeated subtrees; guards (``exp`` clamp, protected ``log``/``sqrt``/division) take
  their masked path only when a guard is actually active;
* splices all groups into one generated function per batch size, so a step costs one Python
  call. The generated source is assembled only from this module's fixed operator templates and
  generated local names (``v3``, ``g3_1``, ...); constants enter through the namespace as
  tensors, never as text. No text of a loss spec or of a user ever reaches ``exec``: specs are
  parsed into validated trees by :func:`loss_rl.expr.parse` first.
  If the generated function raises, the groups run one by one and a failing group's models get
  NaN losses (the trainer marks them diverged) while the others are unaffected.

Semantics are those of :func:`loss_rl.expr.compile_loss` (same guards, same special cases for
``log(p)``, ``log(p_y)`` and integer powers — decided by the compiler's own
``integer_exponent`` — and the same gradients, including at clamps and ties);
``tests/training/test_ploss.py`` checks values and gradients against it on the known losses and
on random expressions. Values agree to float rounding (``p`` is ``exp(log_p)`` here, torch's
softmax there).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from loss_rl.expr import Const, Expr, Leaf, Op, TaskKind, is_vector
from loss_rl.expr._nodes import EPS, EXP_MAX

logger = logging.getLogger(__name__)

_SQRT_EPS = 1e-12
_GRAD_LEAVES = frozenset({"z", "log_p", "p", "log_p_y", "p_y", "pred", "residual"})
_LOG_LEAF = {"p": "log_p", "p_y": "log_p_y"}

try:  # the compiler's own test, so both always agree on which powers are integer powers
    from loss_rl.expr._canonical import integer_exponent as _integer_exponent
except ImportError:  # pragma: no cover - loss language without constant folding

    def _integer_exponent(expo: Expr) -> int | None:
        if isinstance(expo, Const) and expo.value == int(expo.value) and abs(expo.value) <= 64:
            return int(expo.value)
        return None


def structure(e: Expr) -> str:
    """Shape of a tree with constants abstracted (integer exponents stay: they change the code)."""
    if isinstance(e, Leaf):
        return e.name
    if isinstance(e, Const):
        return "#"
    assert isinstance(e, Op)
    if e.op == "pow":
        n = _integer_exponent(e.args[1])
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
class _Program:
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
    # The pieces :class:`PopulationLoss` splices into one function for the whole population:
    body: list[str]  # forward + backward lines (after the leaf assignments)
    backward_start: int  # index in ``body`` of the first backward line
    leaf_vars: dict[str, str]  # leaf name -> variable
    root_var: str
    root_static: bool
    grad_vars: dict[str, str]  # differentiable leaf name -> its gradient's variable
    statics: dict[str, object]  # build-time values (constants, folded subtrees)


# Local variables of generated code: v3, m3, t3, u3_1, d3, a3, e3, g3 (see _Builder).
_LOCAL = re.compile(r"\b([vmtudaeg]\d+(?:_\d+)?)\b")
_SEED = re.compile(r"\bgrad_seed\b")
_FUSED_NAME = re.compile(r"\b(k\d+_[vmtudaeg]\d+(?:_\d+)?|SEED\d+)\b")


def _split_static(lines: list[str], static_names: set[str]) -> tuple[list[str], list[str]]:
    """Split single-statement backward lines into those computable once and the rest.

    A line is static when everything it reads is a build-time value (constants, folded
    subtrees, the gradient seed) or a static line's result, e.g. the whole backward pass of
    label smoothing, whose gradients do not depend on the data. A variable assigned by any
    dynamic line stays dynamic everywhere (Python would make it a local of the function).
    """
    forced: set[str] = set()
    while True:
        known = set(static_names)
        static: list[str] = []
        dynamic: list[str] = []
        by_static: set[str] = set()
        by_dynamic: set[str] = set()
        previous = False
        for line in lines:
            head, _, rhs = line.partition(" = ")
            cond = ""
            if head.startswith("if "):
                cond, _, head = head.partition(": ")
            elif head.startswith("else: "):
                head = head[len("else: "):]
            target = head.strip()
            reads = _FUSED_NAME.findall(cond + " " + rhs)
            if line.startswith("else:"):
                is_static = previous
            else:
                is_static = target not in forced and all(r in known for r in reads)
            if is_static:
                static.append(line)
                known.add(target)
                by_static.add(target)
            else:
                dynamic.append(line)
                known.discard(target)
                by_dynamic.add(target)
            previous = is_static
        clash = by_static & by_dynamic
        if not clash:
            return static, dynamic
        forced |= clash

_NAMESPACE: dict[str, object] = {
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
    "SQRT_EPS": _SQRT_EPS,
}


class _Builder:
    """Compile one structure group (``members`` share :func:`structure`) to a :class:`_Program`.

    Members are walked in lockstep; a constant becomes a ``[G, 1]`` tensor holding each member's
    value (repeated over its ``reps`` seeds). Constant subtrees are folded and repeated subtrees
    shared (memoised on the members' nodes).
    """

    def __init__(
        self, members: Sequence[Expr], reps: int, num_classes: int, dtype: torch.dtype
    ) -> None:
        self.members = list(members)
        self.dtype = dtype
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
            node = self._add(op="leaf", vec=vec, grad=name in _GRAD_LEAVES, name=name)
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
            values = torch.tensor([n.value for n in nodes], dtype=self.dtype)  # type: ignore[attr-defined]
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
            op=name, args=tuple(k.slot for k in kids), vec=vec, unsq=unsq,
            needs=tuple(k.grad for k in kids), static=all(k.static for k in kids),
            grad=any(k.grad for k in kids), arg_vec=kids[0].vec,
        )

    def _pow(self, nodes: tuple[Expr, ...], vec: bool) -> _Node:
        first = nodes[0]
        assert isinstance(first, Op)
        base_e, _ = first.args
        n = _integer_exponent(first.args[1])
        if n is not None:
            base = self.node(tuple(x.args[0] for x in nodes))  # type: ignore[attr-defined]
            return self._add(
                op="ipow" if n >= 0 else "ipow_neg", args=(base.slot,), vec=base.vec,
                needs=(base.grad,), static=base.static, grad=base.grad, n=abs(n),
            )
        # General power: exp(min(expo * log(base), EXP_MAX)) with log(p), log(p_y) exact.
        if isinstance(base_e, Leaf) and base_e.name in _LOG_LEAF:
            log_base = self._leaf(_LOG_LEAF[base_e.name])
        else:
            log_base = self.node(tuple(Op("log", (x.args[0],)) for x in nodes))  # type: ignore[attr-defined]
        expo = self.node(tuple(x.args[1] for x in nodes))  # type: ignore[attr-defined]
        kids = (log_base, expo)
        return self._add(
            op="gpow", args=(log_base.slot, expo.slot), vec=vec,
            unsq=tuple(vec and not k.vec for k in kids), needs=tuple(k.grad for k in kids),
            static=all(k.static for k in kids), grad=any(k.grad for k in kids),
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
            out.append((0, [
                f"if {m} is None: t{s} = {go} / {a[0]}",  # == (g / |x|) * sgn(x) exactly
                f"else: t{s} = _where({m}, {go} / a{s}, 0.0) * {a[0]}.sgn()",
            ], f"t{s}"))
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
            out += [(0, masked(f"{go} * {o}"), f"t{s} * {a[1]}"),
                    (1, masked(f"{go} * {o}"), f"t{s} * {a[0]}")]
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

    def build(self) -> _Program:
        root = self.node(tuple(self.members))
        ns: dict[str, object] = dict(_NAMESPACE)
        ns.update(self.consts)
        # Constant subtrees: run their forward code once now.
        static_lines = [
            line
            for nd in self.nodes
            if nd.static and nd.op != "const"
            for line in self._forward(nd)
        ]
        leaf_names = tuple(self.leaf_slots)
        grad_leaves = tuple(n for n in leaf_names if n in _GRAD_LEAVES)
        body = [f"v{self.leaf_slots[n]} = {n}" for n in leaf_names]
        for nd in self.nodes:
            if not nd.static and nd.op != "leaf":
                body += self._forward(nd)
        static_lines += self.hoisted  # after the constants they read
        if static_lines:
            exec("\n".join(static_lines), ns)
        statics = {k: v for k, v in ns.items() if k not in _NAMESPACE and k != "__builtins__"}
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
            [f"def _loss({params}):", *(f"    {line}" for line in body),
             f"    return v{root.slot}, ({grads}{',' if grads else ''})"]
        )
        exec(source, ns)
        return _Program(
            size=self.size,
            leaf_names=leaf_names,
            grad_leaves=grad_leaves,
            root_needs_grad=root.grad,
            fn=ns["_loss"],  # type: ignore[arg-type]
            source=source,
            body=body[n_leaf_lines:],
            backward_start=backward_start,
            leaf_vars={n: f"v{self.leaf_slots[n]}" for n in leaf_names},
            root_var=f"v{root.slot}",
            root_static=root.static,
            grad_vars={
                n: f"g{self.leaf_slots[n]}" for n in grad_leaves
                if self.leaf_slots[n] in assigned
            },
            statics=statics,
        )


class _Broken(Exception):
    """Internal: skip a group whose evaluation raised before."""


@dataclass(frozen=True)
class LossEval:
    """Result of one population loss evaluation.

    Attributes:
        loss: Per-model mean loss ``[N]`` (may hold NaN/inf for broken models).
        grad: ``dL_i/dZ_i`` for every model, same shape as ``Z``.
    """

    loss: Tensor
    grad: Tensor


class PopulationLoss:
    """Evaluate many loss expressions, each on its own slice of a population, with gradients.

    Models are laid out group by group: :attr:`order` lists the candidate indices in that
    layout; each candidate owns ``reps`` consecutive models (one per seed).

    Args:
        exprs: Candidate loss expressions (already validated for ``kind``).
        reps: Models per candidate (paired seeds).
        kind: Task kind.
        num_classes: Number of classes (classification).
        dtype: Floating type of the model outputs (constants are stored in it).
    """

    def __init__(
        self,
        exprs: Sequence[Expr],
        reps: int,
        kind: TaskKind,
        num_classes: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.kind = TaskKind(kind)
        self.reps = reps
        self.num_classes = num_classes or 1
        groups: dict[str, list[int]] = {}
        for idx, e in enumerate(exprs):
            groups.setdefault(structure(e), []).append(idx)
        self.order: list[int] = [i for members in groups.values() for i in members]
        self.programs: list[tuple[int, _Program]] = []
        start = 0
        for members in groups.values():
            prog = _Builder([exprs[i] for i in members], reps, self.num_classes, dtype).build()
            self.programs.append((start, prog))
            start += prog.size
        self.size = start
        self._sizes = [prog.size for _, prog in self.programs]
        self.leaves: set[str] = set()
        for _, prog in self.programs:
            self.leaves |= set(prog.leaf_names)
        self._inv_b: dict[int, Tensor] = {}
        self.broken: set[int] = set()  # groups whose evaluation raised (their models diverge)
        self._fillers: dict[tuple[object, ...], Tensor] = {}
        self._seeds: dict[tuple[int, int], Tensor] = {}
        self._grad_leaves = sorted(self.leaves & _GRAD_LEAVES)
        self._leaf_order = sorted(self.leaves)
        self._fused: dict[int, Callable[..., tuple[Tensor, list[Tensor]]]] = {}
        self.source = ""  # of the last fused function (for inspection)
        self.fused_failures = 0  # calls that fell back to the group-by-group path

    @property
    def num_groups(self) -> int:
        """Number of structure groups (one interpreter pass each per step)."""
        return len(self.programs)

    def _leaf_values(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        need = self.leaves
        out: dict[str, Tensor] = {}
        if self.kind is TaskKind.REGRESSION:
            out["pred"] = z
            out["target"] = y.to(z.dtype)
            if "residual" in need:
                out["residual"] = z - out["target"]
            return out
        out["z"] = z
        if need & {"log_p", "p", "log_p_y", "p_y"}:
            # log-softmax by hand: torch's kernel is slow for a short class axis on CPU.
            shifted = z - z.amax(-1, keepdim=True)
            log_p = shifted - shifted.exp().sum(-1, keepdim=True).log()
            p = log_p.exp()
            out["log_p"], out["p"] = log_p, p
            if need & {"log_p_y", "p_y"}:
                log_p_y = log_p.gather(-1, y.unsqueeze(-1)).squeeze(-1)
                out["log_p_y"], out["p_y"] = log_p_y, log_p_y.exp()
        if "t" in need:
            classes = torch.arange(self.num_classes)
            if y.dim() == 2 and y.stride(0) == 0:  # one target row shared by all models
                row = (y[0].unsqueeze(-1) == classes).to(z.dtype)
                out["t"] = row.expand(y.shape[0], *row.shape)
            else:
                out["t"] = (y.unsqueeze(-1) == classes).to(z.dtype)
        return out

    def __call__(self, z: Tensor, y: Tensor) -> LossEval:
        """Per-model losses and ``dL/dZ``.

        Args:
            z: Model outputs ``[N, B, C]`` (classification) or ``[N, B]`` (regression), detached.
            y: Targets ``[N, B]`` (int64 classes or float targets), expanded views are fine.
        """
        b = z.shape[1]
        leaves = self._leaf_values(z, y)
        if not self.broken:
            fused = self._fused.get(b)
            if fused is None:
                fused = self._fused[b] = self._fuse(b, z.dtype)
            try:
                loss, grads = fused(*(leaves[name] for name in self._leaf_order))
                return LossEval(
                    loss=loss.mean(-1),
                    grad=self._leaf_backward(z, y, leaves, dict(zip(self._grad_leaves, grads,
                                                                    strict=True))),
                )
            except Exception:  # find the failing group(s) on the per-group path below
                self.fused_failures += 1
                logger.debug("fused population loss failed; retrying group by group",
                             exc_info=True)
        # One split per leaf hands every group its slice (cheaper than a narrow per group).
        parts = {name: leaf.split(self._sizes) for name, leaf in leaves.items()}
        # Per leaf, each group's gradient slice (zeros where a group does not use the leaf);
        # one cat per leaf assembles the population's gradient.
        grad_parts: dict[str, list[Tensor]] = {}
        roots: list[Tensor] = []
        inv_b = self._inv_b.get(b)
        if inv_b is None:
            inv_b = torch.ones((), dtype=z.dtype) / b  # what .mean()'s backward hands out
            self._inv_b[b] = inv_b
        for k, (_, prog) in enumerate(self.programs):
            size = prog.size
            leaf_grads: dict[str, Tensor] = {}
            try:
                if k in self.broken:
                    raise _Broken
                seed = self._seeds.get((k, b))
                if seed is None:
                    seed = self._seeds[(k, b)] = inv_b.expand(size, b)
                root, grads = prog.fn(*(parts[name][k] for name in prog.leaf_names), seed)
                roots.append(root if root.shape[-1] == b else root.expand(size, b))
                for name, g in zip(prog.grad_leaves, grads, strict=True):
                    if g is not None:
                        leaf_grads[name] = g
            except Exception as exc:  # a bad candidate must not take the population down
                if not isinstance(exc, _Broken):
                    logger.exception("loss group %d failed; its models are marked diverged", k)
                    self.broken.add(k)
                del roots[k:]
                roots.append(self._filler(k, "root", (size, b), z, float("nan")))
                leaf_grads = {}
            for name in self._grad_leaves:
                g = leaf_grads.get(name)
                if g is None:
                    g = self._filler(k, name, (size, *leaves[name].shape[1:]), z, 0.0)
                grad_parts.setdefault(name, []).append(g)
        loss = torch.cat(roots).mean(-1)
        leaf_grads_all = {name: torch.cat(gs) for name, gs in grad_parts.items()}
        return LossEval(loss=loss, grad=self._leaf_backward(z, y, leaves, leaf_grads_all))

    def _fuse(self, b: int, dtype: torch.dtype) -> Callable[..., tuple[Tensor, list[Tensor]]]:
        """One generated function evaluating every group for batch size ``b``.

        The groups' bodies are spliced with their variables renamed ``k<group>_<name>``; leaves
        are narrowed to each group's rows and the results concatenated, so a training step makes
        one Python call however many groups there are.
        """
        ns: dict[str, object] = dict(_NAMESPACE)
        lines: list[str] = []
        roots: list[str] = []
        grads: dict[str, list[str]] = {name: [] for name in self._grad_leaves}
        for k, (start, prog) in enumerate(self.programs):
            def rename(text: str, k: int = k) -> str:
                return _LOCAL.sub(lambda m: f"k{k}_{m.group(1)}", text)

            ns.update({rename(name): value for name, value in prog.statics.items()})
            ns[f"SEED{k}"] = torch.full((prog.size, b), 1.0, dtype=dtype) / b
            for name, var in prog.leaf_vars.items():
                lines.append(f"{rename(var)} = {name}.narrow(0, {start}, {prog.size})")
            body = [_SEED.sub(f"SEED{k}", rename(line)) for line in prog.body]
            lines += body[: prog.backward_start]
            static, dynamic = _split_static(
                body[prog.backward_start:],
                {rename(name) for name in prog.statics} | {f"SEED{k}"},
            )
            if static:  # gradients that do not depend on the data: computed once, here
                exec("\n".join(static), ns)
            lines += dynamic
            root = rename(prog.root_var)
            roots.append(f"{root}.expand({prog.size}, {b})" if prog.root_static else root)
            for name in self._grad_leaves:
                var = prog.grad_vars.get(name)
                if var is None:
                    shape = (prog.size, b, self.num_classes) if name in ("z", "p", "log_p") \
                        else (prog.size, b)
                    ns[f"FILL{k}_{name}"] = torch.zeros(shape, dtype=dtype)
                    grads[name].append(f"FILL{k}_{name}")
                else:
                    grads[name].append(rename(var))

        def cat(parts: list[str]) -> str:
            # Always a fresh tensor: a part may be a constant shared by every step.
            return f"torch.cat([{', '.join(parts)}])"

        out = ", ".join(cat(parts) for parts in grads.values())
        source = "\n".join([
            f"def _population({', '.join(self._leaf_order)}):",
            *(f"    {line}" for line in lines),
            f"    return {cat(roots)}, [{out}]",
        ])
        exec(source, ns)
        self.source = source
        return ns["_population"]  # type: ignore[return-value]

    def _filler(
        self, k: int, name: str, shape: tuple[int, ...], like: Tensor, value: float
    ) -> Tensor:
        """A constant block (cached: shapes repeat every step)."""
        key = (k, name, shape, value)
        t = self._fillers.get(key)
        if t is None:
            t = torch.full(shape, value, dtype=like.dtype)
            self._fillers[key] = t
        return t

    def _leaf_backward(
        self, z: Tensor, y: Tensor, leaves: dict[str, Tensor], grads: dict[str, Tensor]
    ) -> Tensor:
        """Chain the leaf gradients into ``dL/dZ`` once for the whole population."""
        if self.kind is TaskKind.REGRESSION:
            dz = torch.zeros_like(z)
            for name in ("pred", "residual"):
                if name in grads:
                    dz = dz + grads[name]
            return dz
        # d/dlog_p collects log_p, p = exp(log_p) and the gathered log_p_y (p_y = exp(log_p_y)).
        acc: Tensor | None = grads.get("log_p")
        if "p" in grads:
            term = grads["p"] * leaves["p"]
            acc = term if acc is None else acc + term
        g_lpy = grads.get("log_p_y")
        if "p_y" in grads:
            term = grads["p_y"] * leaves["p_y"]
            g_lpy = term if g_lpy is None else g_lpy + term
        dz = grads.get("z")
        if g_lpy is not None:
            acc = torch.zeros_like(z) if acc is None else acc.clone()
            acc.scatter_add_(-1, y.unsqueeze(-1), g_lpy.unsqueeze(-1))
        if acc is not None:
            # log_softmax backward: g - softmax * sum(g)
            d_lsm = acc - leaves["p"] * acc.sum(-1, keepdim=True)
            dz = d_lsm if dz is None else dz + d_lsm
        return torch.zeros_like(z) if dz is None else dz
