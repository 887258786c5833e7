"""The symbolic search space: structural edits of an expression tree at node positions.

Action catalog (indices *within the space*; the env puts ``stop`` at 0 and shifts these by 1):
``index = position * edits_per_position + edit``, for ``position`` in ``0 .. max_size-1`` (prefix
order, :meth:`Expr.nodes`) and ``edit`` in this per-position list:

1. ``set:<o>`` — replace the subtree with operand ``o`` (a leaf of the kind or a constant);
2. ``op:<f>`` — swap the operator for ``f`` of the same group (unary / reduction / binary), so
   the children stay;
3. ``wrap:<f>`` — ``f(node)`` for a unary operator or a reduction (reductions only on vectors);
4. ``<f>(x,<o>)`` — combine: ``f(node, o)`` for each binary operator and operand, then
   ``<f>(<o>,x)`` — ``f(o, node)`` for the non-commutative ones (``-``, ``/``, ``^``);
5. ``const:*2``, ``const:/2``, ``const:+0.1``, ``const:-0.1``, ``const:neg`` — change a constant;
6. ``keep:0``, ``keep:1`` — delete/unwrap: replace an operator node by one of its children.

Masks are structural and cheap (no numerics — the evaluator's checks reject the rest): the node
exists and has the right type, the edit changes the tree, the result has at most ``max_size``
nodes, a per-sample scalar root (a vector is only allowed under a reduction), and leaves that see
both the model output and the target. Every state reachable through unmasked edits satisfies the
same invariants, so masks never need the tree rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loss_rl.envs._config import (
    LIBRARY,
    EnvConfig,
    space_leaves,
    space_ops,
    start_expr,
    structural_problem,
)
from loss_rl.expr import (
    BINARY_OPS,
    KNOWN_LOSSES,
    LEAVES,
    OPS,
    REDUCTIONS,
    UNARY_OPS,
    Const,
    Expr,
    Leaf,
    Op,
    is_vector,
    round_constant,
)

CONST_EDITS: dict[str, Callable[[float], float]] = {
    "*2": lambda v: v * 2.0,
    "/2": lambda v: v / 2.0,
    "+0.1": lambda v: v + 0.1,
    "-0.1": lambda v: v - 0.1,
    "neg": lambda v: -v,
}
CONST_ENCODING_BOUND = 5.0  # sign(c) * log1p(|c|) is clipped to this


@dataclass(frozen=True)
class _Edit:
    group: str  # set | op | wrap | right | left | const | keep
    name: str
    op: str = ""
    operand: Expr | None = None
    index: int = 0  # keep: which child


@dataclass(frozen=True)
class _Node:
    node: Expr
    size: int
    vec: bool
    pred: int  # leaves in the subtree that depend on the model output
    tgt: int  # leaves in the subtree that depend on the target
    under_reduction: bool  # some strict ancestor is sum_c/mean_c
    children: tuple[int, ...]  # positions of the children


def _pred_tgt(e: Expr) -> tuple[int, int]:
    if isinstance(e, Leaf):
        s = LEAVES[e.name]
        return int(s.uses_prediction), int(s.uses_target)
    return 0, 0


def analyse(expr: Expr) -> list[_Node]:
    """Per-position facts the masks need, in prefix order."""
    out: list[_Node | None] = []

    def visit(e: Expr, under: bool) -> tuple[int, int, int, bool]:
        pos = len(out)
        out.append(None)
        kids: list[int] = []
        size, (pred, tgt) = 1, _pred_tgt(e)
        red = isinstance(e, Op) and OPS[e.op].reduces
        vec_kids = False
        for c in e.children:
            kids.append(len(out))
            s, p, t, v = visit(c, under or red)
            size, pred, tgt, vec_kids = size + s, pred + p, tgt + t, vec_kids or v
        if isinstance(e, Leaf):
            vec = LEAVES[e.name].vector
        elif isinstance(e, Const):
            vec = False
        else:
            vec = vec_kids and not red
        out[pos] = _Node(e, size, vec, pred, tgt, under, tuple(kids))
        return size, pred, tgt, vec

    visit(expr, False)
    return [n for n in out if n is not None]


def _group(op: str) -> str:
    spec = OPS[op]
    return "binary" if spec.arity == 2 else ("reduction" if spec.reduces else "unary")


class SymbolicSpace:
    """Catalog, masks, transitions and observation encoding of the symbolic space.

    Args:
        config: The env config (``space == "symbolic"``).
    """

    def __init__(self, config: EnvConfig) -> None:
        self.config = config
        self.kind = config.kind
        self.max_size = config.max_size
        leaf_names = space_leaves(config)
        ops = space_ops(config)
        self.operands: tuple[Expr, ...] = (
            *(Leaf(n) for n in leaf_names),
            *(Const(round_constant(c)) for c in dict.fromkeys(config.constants)),
        )
        unary = [n for n in ops if n in UNARY_OPS]
        reductions = [n for n in ops if n in REDUCTIONS]
        binary = [n for n in ops if n in BINARY_OPS]
        edits: list[_Edit] = [_Edit("set", f"set:{o}", operand=o) for o in self.operands]
        edits += [_Edit("op", f"op:{n}", op=n) for n in (*unary, *reductions, *binary)]
        edits += [_Edit("wrap", f"wrap:{n}", op=n) for n in (*unary, *reductions)]
        for n in binary:
            edits += [_Edit("right", f"{n}(x,{o})", op=n, operand=o) for o in self.operands]
        for n in binary:
            if not OPS[n].commutative:
                edits += [_Edit("left", f"{n}({o},x)", op=n, operand=o) for o in self.operands]
        edits += [_Edit("const", f"const:{k}", op=k) for k in CONST_EDITS]
        edits += [_Edit("keep", f"keep:{i}", index=i) for i in (0, 1)]
        self.edits: tuple[_Edit, ...] = tuple(edits)
        self.per_position = len(self.edits)
        self.n_actions = self.max_size * self.per_position
        self._operand_facts = {o: (*_pred_tgt(o), is_vector(o)) for o in self.operands}

        # Observation: one row per position = one-hot token + [constant value, is_vector].
        self.vocab: tuple[str, ...] = (
            "<pad>",
            *(n for n, s in LEAVES.items() if s.kind is self.kind),
            "<const>",
            *OPS,
        )
        self._token = {t: i for i, t in enumerate(self.vocab)}
        self.row = len(self.vocab) + 2
        self.obs_dim = self.max_size * self.row
        low = np.zeros((self.max_size, self.row), dtype=np.float32)
        high = np.ones((self.max_size, self.row), dtype=np.float32)
        low[:, -2], high[:, -2] = -CONST_ENCODING_BOUND, CONST_ENCODING_BOUND
        self.obs_low, self.obs_high = low.ravel(), high.ravel()

    # -----------------------------------------------------------------------------------------
    def action_name(self, index: int) -> str:
        """Readable name of space action ``index``, e.g. ``"3:wrap:log"``."""
        pos, j = divmod(index, self.per_position)
        return f"{pos}:{self.edits[j].name}"

    def starts(self, entry: str) -> list[Expr]:
        """States for a config start entry (``"library"``: every known loss that fits)."""
        if entry == LIBRARY:
            out = [spec.expr() for spec in KNOWN_LOSSES.values() if spec.kind is self.kind]
            return [e for e in out if not structural_problem(e, self.config)]
        return [start_expr(entry, self.config)]

    def accepts(self, state: object) -> bool:
        """Whether ``state`` can be a state here (a valid tree within ``max_size``)."""
        return isinstance(state, Expr) and not structural_problem(state, self.config)

    def expr(self, state: Expr) -> Expr:
        """The loss expression of a state (the state *is* the expression)."""
        return state

    def encode(self, state: Expr) -> np.ndarray:
        """Padded prefix tokens (one-hot), constant values and vector flags, flattened."""
        out = np.zeros((self.max_size, self.row), dtype=np.float32)
        out[:, 0] = 1.0
        for i, n in enumerate(analyse(state)[: self.max_size]):
            e = n.node
            if isinstance(e, Leaf):
                tok = e.name
            elif isinstance(e, Const):
                tok = "<const>"
                v = float(np.sign(e.value) * np.log1p(abs(e.value)))
                out[i, -2] = np.clip(v, -CONST_ENCODING_BOUND, CONST_ENCODING_BOUND)
            else:
                assert isinstance(e, Op)
                tok = e.op
            out[i, 0] = 0.0
            out[i, self._token[tok]] = 1.0
            out[i, -1] = float(n.vec)
        return out.ravel()

    # -----------------------------------------------------------------------------------------
    def mask(self, state: Expr) -> np.ndarray:
        """Boolean mask over the space's actions (see the module docstring)."""
        info = analyse(state)
        mask = np.zeros(self.n_actions, dtype=bool)
        root = info[0]
        total, preds, tgts = root.size, root.pred, root.tgt
        room = self.max_size - total
        for pos, n in enumerate(info[: self.max_size]):

            def ok(size: int, pred: int, tgt: int, vec: bool, n: _Node = n) -> bool:
                # Replacing subtree n by a subtree with these facts keeps every invariant.
                return (
                    size - n.size <= room
                    and preds - n.pred + pred > 0
                    and tgts - n.tgt + tgt > 0
                    and (not vec or n.under_reduction)
                )

            base = pos * self.per_position
            e = n.node
            for j, ed in enumerate(self.edits):
                g = ed.group
                if g == "set":
                    p, t, v = self._operand_facts[ed.operand]  # type: ignore[index]
                    valid = e != ed.operand and ok(1, p, t, v)
                elif g == "op":
                    valid = isinstance(e, Op) and e.op != ed.op and _group(e.op) == _group(ed.op)
                elif g == "wrap":
                    valid = room >= 1 and (not OPS[ed.op].reduces or n.vec)
                elif g in ("right", "left"):
                    p, t, v = self._operand_facts[ed.operand]  # type: ignore[index]
                    valid = room >= 2 and ok(n.size + 2, n.pred + p, n.tgt + t, n.vec or v)
                elif g == "const":
                    valid = isinstance(e, Const) and self._const_ok(e.value, ed.op)
                else:  # keep
                    valid = isinstance(e, Op) and ed.index < len(n.children)
                    if valid:
                        c = info[n.children[ed.index]]
                        valid = ok(c.size, c.pred, c.tgt, c.vec)
                mask[base + j] = valid
        return mask

    def _const_ok(self, value: float, edit: str) -> bool:
        new = round_constant(CONST_EDITS[edit](value))
        return new != value and abs(new) <= self.config.const_max

    def apply(self, state: Expr, index: int) -> Expr:
        """The tree after space action ``index`` (assumed unmasked)."""
        pos, j = divmod(index, self.per_position)
        ed = self.edits[j]
        node = state.nodes()[pos]
        g = ed.group
        if g == "set":
            assert ed.operand is not None
            new: Expr = ed.operand
        elif g == "op":
            assert isinstance(node, Op)
            new = Op(ed.op, node.args)
        elif g == "wrap":
            new = Op(ed.op, (node,))
        elif g == "right":
            assert ed.operand is not None
            new = Op(ed.op, (node, ed.operand))
        elif g == "left":
            assert ed.operand is not None
            new = Op(ed.op, (ed.operand, node))
        elif g == "const":
            assert isinstance(node, Const)
            new = Const(round_constant(CONST_EDITS[ed.op](node.value)))
        else:
            new = node.children[ed.index]
        return state.replace_at(pos, new)
