"""The generative grammar space: one episode builds one expression, one token per step.

Each action appends one token to a prefix (Polish) expression, as in Deep Symbolic Optimization
(Petersen et al., "Deep symbolic regression: Recovering mathematical expressions from data via
risk-seeking policy gradients", ICLR 2021) and AlphaGen (Yu et al., "Generating Synergistic
Formulaic Alpha Collections via Reinforcement Learning", KDD 2023). The episode ends with the
token that closes the last open argument slot; only that finished expression is evaluated.

Tokens (the space's actions, in this order): the kind's leaves (``config.leaves`` or all of
them), the constants of ``config.constants`` (rounded, deduplicated), the unary operators, the
class reductions ``sum_c``/``mean_c`` (classification only) and the binary operators, chosen from
``config.ops`` as in the symbolic space (:func:`~loss_rl.envs._config.space_ops`).

Masks allow exactly the tokens after which the expression can still be finished as a valid loss
within ``max_size`` tokens, so a state is never a dead end. A finished expression

- has a per-sample scalar root; a per-class vector appears only below a reduction, and a
  reduction's argument is a vector;
- has at most ``max_size`` nodes;
- uses a leaf that depends on the model output and one that depends on the target;
- has no constant-only operator subtree (``2 * 0.5``, ``log(2)``): every operator node has a leaf
  below it;

so it passes :func:`~loss_rl.envs._config.structural_problem` and the structural part of
:func:`loss_rl.expr.check`. The masks are exact: every subtree is summarised by its *outcome*
(4 bits: is a vector, contains a leaf, sees the prediction, sees the target; outcomes combine by
bitwise or), ``_fresh[o]`` is the size of the smallest valid subtree with outcome ``o`` (a
shortest-derivation fixpoint over the grammar), and for the next open slot the table ``H[o]``
is the fewest tokens that finish everything *outside* it if it ends with outcome ``o``, computed
from the stack of open operators (outer to inner). A token ``x`` is valid iff
``min_o start[x][o] + H[o] <= max_size - used``, with ``start[x][o]`` the smallest subtree rooted
at ``x`` with outcome ``o``.

Observation (:meth:`GrammarSpace.encode`), float32 in ``[0, 1]``, with ``V = n_actions + 1`` (the
last one-hot position means "none"):

1. ``4 × V``: one-hot of the last 4 tokens, most recent first (padded with "none");
2. ``V``: one-hot of the parent token of the next slot ("none" at the root);
3. ``V``: one-hot of the left sibling of the next slot (the first argument's root token when
   the second argument of a binary operator is next; "none" otherwise);
4. 9 numbers: next slot may be a scalar, next slot may be a vector, open slots / max_size, depth
   of the next slot / max_size, tokens used / max_size, fewest tokens still needed / max_size,
   a prediction leaf seen, a target leaf seen, expression complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from loss_rl.envs._config import (
    LIBRARY,
    EnvConfig,
    space_leaves,
    space_ops,
    start_expr,
    structural_problem,
)
from loss_rl.errors import ConfigError
from loss_rl.expr import (
    KNOWN_LOSSES,
    LEAVES,
    OPS,
    REDUCTIONS,
    UNARY_OPS,
    Const,
    Expr,
    Leaf,
    Op,
    round_constant,
)

# Outcome bits of a subtree (see the module docstring); outcomes combine by bitwise or.
VEC, LEAF, PRED, TGT = 1, 2, 4, 8
N_OUTCOMES = 16
LAST_TOKENS = 4
N_SCALARS = 9
_INF = np.inf
#: Entries of a space's memo of ``text`` and ``encode`` (by token sequence) before it is
#: cleared. Both run at every token of every episode, and episodes share their first tokens, so
#: the short prefixes recur all the time; the bound keeps a long search's memory flat
#: (~1 KB an entry).
_MEMO_LIMIT = 1 << 14
_OUT = np.arange(N_OUTCOMES)
_COMB = _OUT[:, None] | _OUT[None, :]
_PAIR_OK = (_COMB & LEAF) != 0  # no constant-only binary node
_HAS_LEAF = (_OUT & LEAF) != 0
_HAS_VEC = (_OUT & VEC) != 0
_ROOT_OK = ~_HAS_VEC & ((_OUT & PRED) != 0) & ((_OUT & TGT) != 0)
_ROOT_ACCEPT = int(sum(1 << o for o in range(N_OUTCOMES) if _ROOT_OK[o]))
_MUTATE_TRIES = 16
_CACHE_LIMIT = 200_000


class _Frame(NamedTuple):
    """An operator whose arguments are still being built."""

    token: int
    done: int  # arguments completed
    acc: int  # outcome of the completed arguments (or-ed)
    first: int  # root token of the first argument (-1 until it is complete)


@dataclass(frozen=True)
class GrammarState:
    """A partial prefix expression (hashable, immutable).

    Attributes:
        tokens: Space action indices so far, in prefix order.
        frames: Open operators, outermost first (empty at the start and once complete).
        seen: Outcome bits (``PRED``/``TGT``) of the leaves placed so far.
    """

    tokens: tuple[int, ...] = ()
    frames: tuple[_Frame, ...] = ()
    seen: int = 0

    @property
    def complete(self) -> bool:
        """Whether the expression is finished."""
        return bool(self.tokens) and not self.frames


@dataclass(frozen=True)
class _Token:
    name: str
    group: str  # leaf | const | unary | reduce | binary
    node: Expr | None = None  # leaf / constant
    op: str = ""
    arity: int = 0
    outcome: int = 0  # leaf / constant


def _leaf_outcome(name: str) -> int:
    s = LEAVES[name]
    return (LEAF | (VEC if s.vector else 0) | (PRED if s.uses_prediction else 0)) | (
        TGT if s.uses_target else 0
    )


def _op_name(op: str) -> str:
    return OPS[op].symbol or op


class GrammarSpace:
    """Token catalog, masks, transitions, encoding and tree operators of the grammar space.

    Args:
        config: The env config (``space == "grammar"``).

    Raises:
        ConfigError: if no valid loss can be built from the config's tokens within
            ``max_size``.
    """

    def __init__(self, config: EnvConfig) -> None:
        self.config = config
        self.kind = config.kind
        self.max_size = config.max_size
        ops = space_ops(config)
        consts = dict.fromkeys(round_constant(c) for c in config.constants)
        toks: list[_Token] = [
            _Token(n, "leaf", Leaf(n), outcome=_leaf_outcome(n)) for n in space_leaves(config)
        ]
        toks += [_Token(str(Const(c)), "const", Const(c)) for c in consts]
        toks += [_Token(n, "unary", op=n, arity=1) for n in ops if n in UNARY_OPS]
        toks += [_Token(n, "reduce", op=n, arity=1) for n in ops if n in REDUCTIONS]
        toks += [_Token(_op_name(n), "binary", op=n, arity=2) for n in ops if OPS[n].arity == 2]
        self._tok: tuple[_Token, ...] = tuple(toks)
        self.n_actions = len(toks)
        self._leaf_index = {t.node: i for i, t in enumerate(toks) if t.group == "leaf"}
        self._const_index = {t.node: i for i, t in enumerate(toks) if t.group == "const"}
        self._op_index = {t.op: i for i, t in enumerate(toks) if t.arity}
        self._fresh = self._fresh_costs()
        self._start = self._start_costs()
        self._h_cache: dict[tuple[int, tuple[_Frame, ...]], np.ndarray] = {}
        # A state is a function of its tokens (``apply`` is deterministic): memo by tokens.
        self._text_memo: dict[tuple[int, ...], str] = {}
        self._encode_memo: dict[tuple[int, ...], np.ndarray] = {}

        self.vocab = self.n_actions + 1  # one-hot width; the last position means "none"
        self.obs_dim = (LAST_TOKENS + 2) * self.vocab + N_SCALARS
        self.obs_low = np.zeros(self.obs_dim, dtype=np.float32)
        self.obs_high = np.ones(self.obs_dim, dtype=np.float32)
        if not self.mask(self.initial_state()).any():
            raise ConfigError(
                f"no valid {self.kind.value} loss can be built from these leaves, constants and "
                f"operators within max_size={self.max_size} (a loss needs leaves that see the "
                "model output and the target, and vector leaves need a reduction)",
                field="env.leaves",
            )

    # -----------------------------------------------------------------------------------------
    # Cost tables

    def _fresh_costs(self) -> np.ndarray:
        """Size of the smallest valid subtree with each outcome (shortest-derivation fixpoint)."""
        fresh = np.full(N_OUTCOMES, _INF)
        groups = {t.group for t in self._tok}
        for t in self._tok:
            if t.group in ("leaf", "const"):
                fresh[t.outcome] = 1.0
        # Unary operators keep the outcome, so they never make a subtree cheaper.
        while True:
            new = fresh.copy()
            if "reduce" in groups:
                for o in range(N_OUTCOMES):
                    if o & VEC:
                        new[o & ~VEC] = min(new[o & ~VEC], 1 + fresh[o])
            if "binary" in groups:
                pair = np.where(_PAIR_OK, 1 + fresh[:, None] + fresh[None, :], _INF)
                for o in range(N_OUTCOMES):
                    new[o] = min(new[o], pair[o == _COMB].min(initial=_INF))
            if np.array_equal(new, fresh):
                return fresh
            fresh = new

    def _start_costs(self) -> np.ndarray:
        """``start[x, o]``: the smallest valid subtree rooted at token ``x`` with outcome ``o``."""
        fresh = self._fresh
        start = np.full((self.n_actions, N_OUTCOMES), _INF)
        pair = np.where(_PAIR_OK, 1 + fresh[:, None] + fresh[None, :], _INF)
        for i, t in enumerate(self._tok):
            if t.group in ("leaf", "const"):
                start[i, t.outcome] = 1.0
            elif t.group == "unary":
                start[i] = np.where(_HAS_LEAF, 1 + fresh, _INF)
            elif t.group == "reduce":
                for o in range(N_OUTCOMES):
                    if o & VEC:
                        start[i, o & ~VEC] = min(start[i, o & ~VEC], 1 + fresh[o])
            else:
                for o in range(N_OUTCOMES):
                    start[i, o] = pair[o == _COMB].min(initial=_INF)
        return start

    def _outside(self, frames: tuple[_Frame, ...], accept: int = _ROOT_ACCEPT) -> np.ndarray:
        """``H[o]``: fewest tokens finishing everything outside the next slot (outcome ``o``)."""
        key = (accept, frames)
        h = self._h_cache.get(key)
        if h is not None:
            return h
        if frames:
            outer = self._outside(frames[:-1], accept)
            f = frames[-1]
            t = self._tok[f.token]
            if t.group == "unary":
                h = np.where(_HAS_LEAF, outer, _INF)
            elif t.group == "reduce":
                h = np.where(_HAS_VEC, outer[_OUT & ~VEC], _INF)
            elif f.done == 0:
                cand = np.where(_PAIR_OK, self._fresh[None, :] + outer[_COMB], _INF)
                h = cand.min(axis=1)
            else:
                comb = f.acc | _OUT
                h = np.where((comb & LEAF) != 0, outer[comb], _INF)
        else:
            h = np.array([0.0 if accept >> o & 1 else _INF for o in range(N_OUTCOMES)])
        if len(self._h_cache) > _CACHE_LIMIT:
            self._h_cache.clear()
        self._h_cache[key] = h
        return h

    def _needs(self, state: GrammarState, accept: int = _ROOT_ACCEPT) -> np.ndarray:
        """Fewest tokens (this one included) that finish the expression after each token."""
        if state.complete:
            return np.full(self.n_actions, _INF)
        return (self._start + self._outside(state.frames, accept)[None, :]).min(axis=1)

    # -----------------------------------------------------------------------------------------
    # The space API used by LossDesignEnv

    def action_name(self, i: int) -> str:
        """Readable name of token ``i``, e.g. ``"log"``, ``"p_y"``, ``"+"`` or ``"0.5"``."""
        return self._tok[i].name

    def initial_state(self) -> GrammarState:
        """The empty expression."""
        return GrammarState()

    def mask(self, state: GrammarState) -> np.ndarray:
        """Tokens after which a valid loss can still be finished (all ``False`` once complete)."""
        return self._needs(state) <= self.max_size - len(state.tokens)

    def apply(self, state: GrammarState, i: int) -> GrammarState:
        """The state after appending token ``i`` (assumed unmasked)."""
        frames, _ = self._advance(state.frames, i)
        t = self._tok[i]
        return GrammarState((*state.tokens, i), frames, state.seen | (t.outcome & (PRED | TGT)))

    def _advance(self, frames: tuple[_Frame, ...], i: int) -> tuple[tuple[_Frame, ...], int]:
        """Frames after token ``i``, and the outcome of the whole tree (-1 while open)."""
        t = self._tok[i]
        if t.arity:
            return (*frames, _Frame(i, 0, 0, -1)), -1
        stack = list(frames)
        root, out = i, t.outcome
        while stack:
            f = stack[-1]
            acc = f.acc | out
            first = root if f.done == 0 else f.first
            if f.done + 1 < self._tok[f.token].arity:
                stack[-1] = _Frame(f.token, f.done + 1, acc, first)
                return tuple(stack), -1
            stack.pop()
            root = f.token
            out = acc & ~VEC if self._tok[f.token].group == "reduce" else acc
        return (), out

    def is_complete(self, state: GrammarState) -> bool:
        """Whether the expression is finished."""
        return state.complete

    def expr(self, state: GrammarState | Expr) -> Expr | None:
        """The finished expression (``None`` while partial); an ``Expr`` is returned as is."""
        if isinstance(state, Expr):
            return state  # a start landmark (see starts)
        if not state.complete:
            return None
        return self._build(state.tokens)

    def _build(self, tokens: tuple[int, ...]) -> Expr:
        it = iter(tokens)

        def rec() -> Expr:
            t = self._tok[next(it)]
            if t.node is not None:
                return t.node
            return Op(t.op, tuple(rec() for _ in range(t.arity)))

        return rec()

    def text(self, state: GrammarState | Expr) -> str:
        """Readable form of a state: the expression, with ``?`` for the open slots."""
        if isinstance(state, Expr):
            return str(state)
        text = self._text_memo.get(state.tokens)
        if text is None:
            if len(self._text_memo) >= _MEMO_LIMIT:
                self._text_memo.clear()
            text = self._text_memo[state.tokens] = self._text(state)
        return text

    def _text(self, state: GrammarState) -> str:
        if state.complete:
            return str(self._build(state.tokens))
        if not state.tokens:
            return "?"
        it = iter(state.tokens)

        def rec() -> str:
            i = next(it, None)
            if i is None:
                return "?"
            t = self._tok[i]
            if t.node is not None:
                return str(t.node)
            args = [rec() for _ in range(t.arity)]
            if t.group == "binary" and OPS[t.op].symbol:
                return f"({args[0]} {t.name} {args[1]})"
            return f"{t.op}({', '.join(args)})"

        return rec()

    def starts(self, entry: str) -> list[Expr]:
        """The start *landmarks* of a config entry: losses evaluated first, never a state.

        Every episode starts from the empty expression; the start points only seed the run's
        knowledge (``"library"``: every known loss of the kind that is a valid loss).
        """
        if entry == LIBRARY:
            out = [s.expr() for s in KNOWN_LOSSES.values() if s.kind is self.kind]
            return [e for e in out if not structural_problem(e, self.config, sized=False)]
        return [start_expr(entry, self.config, sized=False)]

    def accepts(self, state: object) -> bool:
        """Whether ``state`` is a state of this space (a token prefix the masks allow)."""
        if not isinstance(state, GrammarState):
            return False
        try:
            replay = self._replay(state.tokens)
        except (IndexError, TypeError):
            return False
        return replay == state

    def _replay(self, tokens: tuple[int, ...]) -> GrammarState | None:
        s = self.initial_state()
        for i in tokens:
            if not 0 <= i < self.n_actions or not self.mask(s)[i]:
                return None
            s = self.apply(s, i)
        return s

    def encode(self, state: GrammarState) -> np.ndarray:
        """Fixed-length observation of the partial expression (layout: module docstring)."""
        out = self._encode_memo.get(state.tokens)
        if out is None:
            if len(self._encode_memo) >= _MEMO_LIMIT:
                self._encode_memo.clear()
            out = self._encode_memo[state.tokens] = self._encode(state)
        return out.copy()  # the caller owns its array; the memo's stays as computed

    def _encode(self, state: GrammarState) -> np.ndarray:
        v, m = self.vocab, float(self.max_size)
        none = v - 1
        out = np.zeros(self.obs_dim, dtype=np.float32)
        last = state.tokens[::-1][:LAST_TOKENS]
        for k in range(LAST_TOKENS):
            out[k * v + (last[k] if k < len(last) else none)] = 1.0
        parent = sibling = none
        if state.frames:
            f = state.frames[-1]
            parent = f.token
            if f.done > 0:
                sibling = f.first
        base = LAST_TOKENS * v
        out[base + parent] = 1.0
        out[base + v + sibling] = 1.0
        base += 2 * v
        complete = state.complete
        used = len(state.tokens)
        if complete:
            scalar_ok = vector_ok = False
            open_slots, need = 0, 0.0
        else:
            h = self._outside(state.frames)
            room = self.max_size - used
            fits = self._fresh + h <= room
            scalar_ok, vector_ok = bool(fits[~_HAS_VEC].any()), bool(fits[_HAS_VEC].any())
            open_slots = sum(self._tok[f.token].arity - f.done for f in state.frames) or 1
            need = float(self._needs(state).min())
        out[base : base + N_SCALARS] = (
            float(scalar_ok),
            float(vector_ok),
            min(open_slots / m, 1.0),
            min(len(state.frames) / m, 1.0),
            used / m,
            min(need / m, 1.0),
            float(bool(state.seen & PRED)),
            float(bool(state.seen & TGT)),
            float(complete),
        )
        return out

    # -----------------------------------------------------------------------------------------
    # Whole expressions: tokens, sampling, mutation, crossover

    def tokens(self, expr: Expr) -> tuple[int, ...] | None:
        """The token sequence that builds ``expr``, or ``None`` if the grammar cannot build it.

        ``None`` for an unknown leaf, constant or operator, a tree over ``max_size``, or one
        the masks forbid (ill-typed, without prediction or target, constant-only subtrees).
        """
        seq: list[int] = []
        for n in expr.nodes():
            if isinstance(n, Leaf):
                i = self._leaf_index.get(n)
            elif isinstance(n, Const):
                i = self._const_index.get(Const(round_constant(n.value)))
            else:
                assert isinstance(n, Op)
                i = self._op_index.get(n.op)
            if i is None:
                return None
            seq.append(i)
        if len(seq) > self.max_size:
            return None
        state = self._replay(tuple(seq))
        return state.tokens if state is not None and state.complete else None

    def sample(self, rng: np.random.Generator) -> Expr:
        """A uniformly random valid token at each step until complete (DSO's random baseline)."""
        state = self.initial_state()
        while not state.complete:
            state = self.apply(state, int(rng.choice(np.flatnonzero(self.mask(state)))))
        expr = self.expr(state)
        assert expr is not None
        return expr

    def _sample_subtree(self, accept: int, budget: int, rng: np.random.Generator) -> Expr | None:
        """A random valid subtree whose outcome ``accept`` allows, of at most ``budget`` nodes."""
        frames: tuple[_Frame, ...] = ()
        toks: list[int] = []
        while True:
            need = (self._start + self._outside(frames, accept)[None, :]).min(axis=1)
            valid = np.flatnonzero(need <= budget - len(toks))
            if len(valid) == 0:
                return None
            i = int(rng.choice(valid))
            toks.append(i)
            frames, out = self._advance(frames, i)
            if out >= 0:
                return self._build(tuple(toks))

    def _outcome(self, expr: Expr) -> int:
        if isinstance(expr, Leaf):
            return _leaf_outcome(expr.name)
        if isinstance(expr, Const):
            return 0
        assert isinstance(expr, Op)
        out = 0
        for c in expr.args:
            out |= self._outcome(c)
        return out & ~VEC if OPS[expr.op].reduces else out

    def _hole_accept(self, expr: Expr, position: int) -> int:
        """Outcomes a subtree put at ``position`` of ``expr`` may have (a bit set over outcomes)."""

        def walk(e: Expr, pos: int) -> np.ndarray:
            # Maps the hole's outcome to the outcome of e (-1: the tree becomes invalid).
            if pos == 0:
                return _OUT.copy()
            pos -= 1
            assert isinstance(e, Op)
            for k, c in enumerate(e.args):
                n = c.size()
                if pos < n:
                    inner = walk(c, pos)
                    others = 0
                    for j, d in enumerate(e.args):
                        if j != k:
                            others |= self._outcome(d)
                    comb = np.where(inner >= 0, inner | others, -1)
                    spec = OPS[e.op]
                    if spec.reduces:
                        ok = (inner & VEC) != 0
                        comb = comb & ~VEC
                    else:
                        ok = (comb & LEAF) != 0
                    return np.where((inner >= 0) & ok, comb, -1)
                pos -= n
            raise IndexError(position)

        root = walk(expr, position)
        return int(sum(1 << o for o in range(N_OUTCOMES) if root[o] >= 0 and _ROOT_OK[root[o]]))

    def mutate(self, expr: Expr, rng: np.random.Generator) -> Expr | None:
        """``expr`` with one random subtree replaced by a fresh random subtree that fits.

        Returns:
            A different expression the grammar can build, or ``None`` if ``expr`` is outside the
            grammar or a few tries found none.
        """
        if self.tokens(expr) is None:
            return None
        size = expr.size()
        nodes = expr.nodes()
        for _ in range(_MUTATE_TRIES):
            p = int(rng.integers(size))
            budget = self.max_size - size + nodes[p].size()
            sub = self._sample_subtree(self._hole_accept(expr, p), budget, rng)
            if sub is None or sub == nodes[p]:
                continue
            new = expr.replace_at(p, sub)
            if self.tokens(new) is not None:
                return new
        return None

    def crossover(self, a: Expr, b: Expr, rng: np.random.Generator) -> Expr | None:
        """``a`` with one random subtree replaced by a subtree of ``b`` that fits there.

        Returns:
            An expression the grammar can build that differs from ``a``, or ``None`` if ``a`` or
            ``b`` is outside the grammar or no subtree of ``b`` fits anywhere in ``a``.
        """
        if self.tokens(a) is None or self.tokens(b) is None:
            return None
        a_nodes, b_nodes = a.nodes(), b.nodes()
        b_info = [(n, n.size(), self._outcome(n)) for n in dict.fromkeys(b_nodes)]
        room = self.max_size - a.size()
        for p in rng.permutation(len(a_nodes)):
            p = int(p)
            old = a_nodes[p]
            accept = self._hole_accept(a, p)
            fits = [
                n
                for n, size, out in b_info
                if accept >> out & 1 and size - old.size() <= room and n != old
            ]
            for k in rng.permutation(len(fits)):
                new = a.replace_at(p, fits[int(k)])
                if self.tokens(new) is not None:
                    return new
        return None
