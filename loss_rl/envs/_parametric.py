"""The parametric search space: a composite loss ``Σ_k w_k · term_k(θ_k)`` on grids.

State: for every term a weight index into ``weight_grid``, a remembered weight index (what
``toggle`` restores), and an index into the grid of each of its hyper-parameters.

Action catalog (indices *within the space*; the env puts ``stop`` at 0 and shifts these by 1):
one block per term, in ``terms`` order::

    w+  w-  toggle  set0  set1  solo  [<param>+  <param>-  for each hyper-parameter of the term]

- ``w+``/``w-``: next/previous weight on the grid;
- ``toggle``: switch the term off (remembering its weight) or back on at the remembered weight;
- ``set0``/``set1``: jump the weight to 0 or to 1 in one move;
- ``solo``: this term at weight 1 and every other term off — the jump the prototype lacked
  ("drop CE, add a bounded term" in one move);
- ``<param>±``: next/previous grid value of a hyper-parameter (γ, q, α, δ, τ, ...).

Masks: the move must change the *loss* (so parameter moves of a switched-off term are masked),
stay on the grids, and leave at least one active term, with the active terms together seeing
both the model output and the target (e.g. ``smooth`` alone is masked).

Observation, per term: ``[w / max(w), active, remembered w / max(w)]`` followed by the grid
position ``i / (n - 1)`` of each hyper-parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loss_rl.envs._config import LIBRARY, RANDOM, EnvConfig
from loss_rl.envs._terms import TERMS, Term
from loss_rl.expr import Const, Expr, Op

TERM_MOVES = ("w+", "w-", "toggle", "set0", "set1", "solo")


@dataclass(frozen=True)
class ParamState:
    """A point of the parametric space (grid indices).

    Attributes:
        weights: Weight index per term.
        memory: Remembered nonzero weight index per term (``toggle`` restores it).
        params: Grid index per hyper-parameter slot (slots in catalog order).
    """

    weights: tuple[int, ...]
    memory: tuple[int, ...]
    params: tuple[int, ...]


@dataclass(frozen=True)
class _Move:
    term: int
    move: str  # one of TERM_MOVES, or "+"/"-" for a hyper-parameter
    slot: int = -1  # hyper-parameter slot for "+"/"-"


class ParametricSpace:
    """Catalog, masks, transitions and observation encoding of the parametric space.

    Args:
        config: The env config (``space == "parametric"``).
    """

    def __init__(self, config: EnvConfig) -> None:
        self.config = config
        self.terms: tuple[Term, ...] = tuple(TERMS[n] for n in config.term_names)
        self.weights = config.weight_grid
        self.zero = self.weights.index(0.0)
        self.one = self.weights.index(1.0)
        # Hyper-parameter slots: (term index, name, grid, default grid index).
        slots: list[tuple[int, str, tuple[float, ...], int]] = []
        moves: list[_Move] = []
        self.names: list[str] = []
        for k, term in enumerate(self.terms):
            for m in TERM_MOVES:
                moves.append(_Move(k, m))
                self.names.append(f"{term.name}:{m}")
            for p in term.params:
                grid = config.param_grid(term.name, p)
                default = int(np.argmin([abs(v - term.defaults[p]) for v in grid]))
                for sign in "+-":
                    moves.append(_Move(k, sign, len(slots)))
                    self.names.append(f"{term.name}:{p}{sign}")
                slots.append((k, p, grid, default))
        self.slots = tuple(slots)
        self.moves = tuple(moves)
        self.n_actions = len(moves)
        self.obs_dim = 3 * len(self.terms) + len(self.slots)
        self.obs_low = np.zeros(self.obs_dim, dtype=np.float32)
        self.obs_high = np.ones(self.obs_dim, dtype=np.float32)
        self._default_params = tuple(s[3] for s in self.slots)

    # -----------------------------------------------------------------------------------------
    def action_name(self, index: int) -> str:
        """Readable name of space action ``index``, e.g. ``"gce:q+"``."""
        return self.names[index]

    def single(self, term: str) -> ParamState:
        """``term`` alone at weight 1, hyper-parameters at their defaults."""
        k = [t.name for t in self.terms].index(term)
        w = [self.zero] * len(self.terms)
        w[k] = self.one
        return ParamState(tuple(w), (self.one,) * len(self.terms), self._default_params)

    def starts(self, entry: str) -> list[ParamState | str]:
        """States for a config start entry (``RANDOM`` stays a marker, drawn at reset)."""
        if entry == RANDOM:
            return [RANDOM]
        if entry == LIBRARY:
            return [self.single(t.name) for t in self.terms if t.uses_prediction and t.uses_target]
        return [self.single(entry)]

    def random_state(self, rng: np.random.Generator) -> ParamState:
        """Uniformly random weights and hyper-parameters, redrawn until the loss is valid."""
        n = len(self.terms)
        while True:
            w = tuple(int(i) for i in rng.integers(0, len(self.weights), size=n))
            if self.valid_weights(w):
                break
        params = tuple(int(rng.integers(0, len(s[2]))) for s in self.slots)
        mem = tuple(i if i != self.zero else self.one for i in w)
        return ParamState(w, mem, params)

    def accepts(self, state: object) -> bool:
        """Whether ``state`` is a state of this space (e.g. a best state found by another env)."""
        return (
            isinstance(state, ParamState)
            and len(state.weights) == len(self.terms)
            and len(state.params) == len(self.slots)
            and self.valid_weights(state.weights)
        )

    def expr(self, state: ParamState) -> Expr:
        """The composite loss ``Σ w_k · term_k(θ_k)`` over the active terms (weight 1 omitted)."""
        params: list[dict[str, float]] = [{} for _ in self.terms]
        for (k, p, grid, _), i in zip(self.slots, state.params, strict=True):
            params[k][p] = grid[i]
        out: Expr | None = None
        for k, (term, wi) in enumerate(zip(self.terms, state.weights, strict=True)):
            if wi == self.zero:
                continue
            e = term.build(**{**term.defaults, **params[k]})
            w = self.weights[wi]
            if w != 1.0:
                e = Op("mul", (Const(w), e))
            out = e if out is None else Op("add", (out, e))
        assert out is not None, "a state always has an active term"
        return out

    def encode(self, state: ParamState) -> np.ndarray:
        """Weights, activity, remembered weights and hyper-parameter grid positions."""
        top = max(self.weights)
        out = np.zeros(self.obs_dim, dtype=np.float32)
        n = len(self.terms)
        for k in range(n):
            out[3 * k] = self.weights[state.weights[k]] / top
            out[3 * k + 1] = float(state.weights[k] != self.zero)
            out[3 * k + 2] = self.weights[state.memory[k]] / top
        for j, ((_, _, grid, _), i) in enumerate(zip(self.slots, state.params, strict=True)):
            out[3 * n + j] = i / (len(grid) - 1) if len(grid) > 1 else 0.5
        return out

    # -----------------------------------------------------------------------------------------
    def valid_weights(self, weights: tuple[int, ...]) -> bool:
        """Whether ``weights`` make a loss: an active term reads the prediction, one the target."""
        active = [t for t, w in zip(self.terms, weights, strict=True) if w != self.zero]
        return any(t.uses_prediction for t in active) and any(t.uses_target for t in active)

    def _move(self, state: ParamState, mv: _Move) -> ParamState | None:
        """The state after ``mv``, or ``None`` if it falls off a grid or changes nothing."""
        w, mem, th = list(state.weights), list(state.memory), list(state.params)
        k, m = mv.term, mv.move
        if m in ("+", "-"):
            if w[k] == self.zero:
                return None  # a switched-off term's parameters do not change the loss
            i = th[mv.slot] + (1 if m == "+" else -1)
            if not 0 <= i < len(self.slots[mv.slot][2]):
                return None
            th[mv.slot] = i
        elif m == "w+":
            w[k] += 1
        elif m == "w-":
            w[k] -= 1
        elif m == "toggle":
            w[k] = mem[k] if w[k] == self.zero else self.zero
        elif m == "set0":
            w[k] = self.zero
        elif m == "set1":
            w[k] = self.one
        else:  # solo
            w = [self.zero] * len(w)
            w[k] = self.one
        if any(not 0 <= i < len(self.weights) for i in w):
            return None
        for j, i in enumerate(w):
            if i != self.zero:
                mem[j] = i  # toggling off later restores the last weight in use
        new = ParamState(tuple(w), tuple(mem), tuple(th))
        if new.weights == state.weights and new.params == state.params:
            return None
        return new

    def mask(self, state: ParamState) -> np.ndarray:
        """Boolean mask over the space's actions (see the module docstring)."""
        out = np.zeros(self.n_actions, dtype=bool)
        for i, mv in enumerate(self.moves):
            new = self._move(state, mv)
            out[i] = new is not None and self.valid_weights(new.weights)
        return out

    def apply(self, state: ParamState, index: int) -> ParamState:
        """The state after space action ``index`` (assumed unmasked)."""
        new = self._move(state, self.moves[index])
        assert new is not None
        return new
