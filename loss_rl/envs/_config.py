"""Validated configuration of the loss-design MDP (the ``env:`` part of a preset)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loss_rl.envs._reward import REWARD_MODES
from loss_rl.envs._terms import (
    DEFAULT_PARAM_GRIDS,
    DEFAULT_TERMS,
    DEFAULT_WEIGHT_GRID,
    PARAM_BOUNDS,
    TERMS,
)
from loss_rl.errors import ConfigError, LossSpecError
from loss_rl.expr import (
    KNOWN_LOSSES,
    LEAVES,
    OPS,
    REDUCTIONS,
    Expr,
    TaskKind,
    is_vector,
    known_loss,
    parse,
    task_kind,
)
from loss_rl.schema import (
    anchored,
    build,
    check_choice,
    check_int,
    check_mapping,
    check_number,
    is_number,
    to_plain,
)

SPACES = ("symbolic", "parametric", "grammar")
START_MODES = ("fixed", "random", "cycle")
ON_REJECT = ("stay", "move")
BEST_SCOPES = ("run", "episode")
LIBRARY = "library"
RANDOM = "random"
REFERENCE_START = {TaskKind.CLASSIFICATION: "ce", TaskKind.REGRESSION: "mse"}
TASK_FEATURE_BOUND = 10.0
DEFAULT_TASK_FEATURES = 8
GRAMMAR_DEFAULTS: dict[str, Any] = {"reward": "score", "revisit_penalty": 0.0, "novelty_bonus": 0.0}
"""Defaults :meth:`EnvConfig.from_dict` gives a ``grammar`` space for the keys it is not given:
the terminal reward is the finished expression's score (designed for γ = 1 and risk-seeking
policy gradients), with no bonus or penalty for (non-)novelty."""


@dataclass(frozen=True)
class EnvConfig:
    """Configuration of :class:`~loss_rl.envs.LossDesignEnv`.

    Build it with :meth:`from_dict` (validates, names the offending field) or directly (validated in
    ``__post_init__`` too). Lists are stored as tuples so that a config is immutable.

    Attributes:
        space: ``"symbolic"`` (structural edits of an expression tree), ``"parametric"``
            (weights and hyper-parameters of ``Σ w_k · term_k(θ_k)``) or ``"grammar"`` (one
            episode builds one expression in prefix order, one token per step; see
            :mod:`loss_rl.envs._grammar`). For ``"grammar"``, :meth:`from_dict` fills the keys it
            is not given from ``GRAMMAR_DEFAULTS`` (reward ``score``, no revisit penalty, no
            novelty bonus); a directly constructed config keeps the defaults below.
        kind: Task kind the losses are written for.
        max_steps: Episode cap: the episode is truncated after this many actions. Grammar:
            derived, always ``max_size`` (an expression is finished within ``max_size`` tokens;
            a given value is replaced).
        min_steps: ``stop`` is masked (invalid) before this many actions in the episode.
            Grammar: unused (``stop`` is always masked; the last token ends the episode).
        max_size: Symbolic / grammar: largest tree (node count) an edit may produce or an
            episode may build; symbolic: also the number of node positions encoded in the
            observation and addressed by actions.
        leaves: Symbolic / grammar: leaves an edit may introduce (``None``: all leaves of
            ``kind``).
        ops: Symbolic / grammar: operators an edit may introduce or swap to (``None``: all
            operators that make sense for ``kind``; reductions only for classification).
        constants: Symbolic / grammar: constants an edit may introduce (next to the leaves).
        const_max: Symbolic: constant edits are masked beyond this magnitude.
        on_reject: What a rejected / diverged candidate does to the state: ``"stay"`` keeps the
            current loss (the candidate is discarded), ``"move"`` moves to it anyway.
        terms: Parametric: term names (``None``: the kind's defaults, see ``DEFAULT_TERMS``).
        weight_grid: Parametric: allowed weights; must contain 0 and 1, strictly increasing.
        param_grids: Parametric: grid per hyper-parameter, keyed ``"q"`` (every term with a
            ``q``) or ``"gce.q"`` (one term); overrides ``DEFAULT_PARAM_GRIDS``.
        start: Start points: known-loss names, expression strings (symbolic), term names
            (parametric), ``"library"`` (all valid known losses / single terms of the kind) or
            ``"random"`` (parametric: uniformly random weights and parameters). ``None``: the
            kind's reference loss (``"ce"`` or ``"mse"``). Grammar: losses evaluated first (the
            starting information every method shares; any size); every episode starts from the
            empty expression.
        start_mode: ``"fixed"`` (always the first start point), ``"random"`` (uniform per
            episode) or ``"cycle"`` (round robin).
        start_best_prob: Probability that an episode starts from the run's best loss so far
            (when there is one) instead of a start point. Grammar: must be 0.
        evaluate_start: Evaluate a start point whose score is not yet known (one evaluator call,
            usually a cache hit) so that the observation and ``delta_prev`` know its score.
        reward: Reward mode, one of ``REWARD_MODES`` (see :mod:`loss_rl.envs._reward`).
        best_scope: ``best_gain`` measures gains over the best score of the ``"run"`` (shared by
            episodes; the prototype's winner) or of the ``"episode"``.
        gain_clip: Upper clip of a ``best_gain`` reward (``None``: no upper clip).
        invalid_penalty: Penalty (subtracted) for a masked action taken anyway (a no-op).
        reject_penalty: Penalty for a candidate the evaluator rejected (failed checks).
        diverge_penalty: Penalty for a candidate that diverged or errored in training.
        revisit_penalty: Penalty for an ok candidate whose evaluation cost no training (a cache
            hit): replaying known losses is not free.
        novelty_bonus: Bonus for an ok candidate that cost a training (a new loss).
        task_features: Task descriptor appended to every observation (fixed length; values in
            ``[-10, 10]``); zeros by default.
    """

    space: str = "symbolic"
    kind: TaskKind = TaskKind.CLASSIFICATION
    max_steps: int = 20
    min_steps: int = 1
    max_size: int = 24
    leaves: tuple[str, ...] | None = None
    ops: tuple[str, ...] | None = None
    constants: tuple[float, ...] = (1.0,)
    const_max: float = 100.0
    on_reject: str = "stay"
    terms: tuple[str, ...] | None = None
    weight_grid: tuple[float, ...] = DEFAULT_WEIGHT_GRID
    param_grids: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    start: tuple[str, ...] | None = None
    start_mode: str = "fixed"
    start_best_prob: float = 0.0
    evaluate_start: bool = True
    reward: str = "best_gain"
    best_scope: str = "run"
    gain_clip: float | None = None
    invalid_penalty: float = 0.1
    reject_penalty: float = 0.05
    diverge_penalty: float = 0.05
    revisit_penalty: float = 0.01
    novelty_bonus: float = 0.0
    task_features: tuple[float, ...] = (0.0,) * DEFAULT_TASK_FEATURES

    def __post_init__(self) -> None:
        _validate(self, "env")

    # -----------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, prefix: str = "env") -> EnvConfig:
        """Build a validated config from plain data (a parsed YAML mapping).

        Args:
            data: Field values; missing fields take their defaults.
            prefix: Dotted path of ``data`` in the preset, used in error fields.

        Raises:
            ConfigError: for an unknown key or a bad value; ``field`` names it
                (e.g. ``"env.space"``).
        """
        data = check_mapping(data, prefix, "expected a mapping, got {type}")
        if data.get("space") == "grammar":
            data = {**GRAMMAR_DEFAULTS, **data}
        if isinstance(data.get("start"), str):  # one start point
            data = {**data, "start": (data["start"],)}
        names = sorted(f.name for f in dataclasses.fields(cls))
        # Validation names fields under "env."; errors are re-anchored where this mapping lives.
        with anchored("env", prefix):
            # Only the shapes are coerced (lists -> tuples, the kind -> TaskKind): _validate
            # checks the values, on both construction paths.
            cfg = build(
                cls,
                data,
                "env",
                strict=False,
                allowed=names,
                unknown_message="unknown key {key!r}; known keys: {allowed}",
            )
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, strings, floats) that :meth:`from_dict` reads back."""
        return {f.name: to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> EnvConfig:
        """A validated copy with ``changes`` applied."""
        return EnvConfig.from_dict({**self.to_dict(), **changes})

    # -----------------------------------------------------------------------------------------
    @property
    def start_points(self) -> tuple[str, ...]:
        """``start`` with the default filled in."""
        return self.start if self.start is not None else (REFERENCE_START[self.kind],)

    @property
    def term_names(self) -> tuple[str, ...]:
        """``terms`` with the default filled in."""
        return self.terms if self.terms is not None else DEFAULT_TERMS[self.kind]

    def param_grid(self, term: str, param: str) -> tuple[float, ...]:
        """The grid of ``term``'s hyper-parameter ``param``."""
        grids = self.param_grids
        return tuple(grids.get(f"{term}.{param}", grids.get(param, DEFAULT_PARAM_GRIDS[param])))


# ---------------------------------------------------------------------------------------------
# Validation, shared by both construction paths (from_dict coerces only the shapes).


def _num(cfg: EnvConfig, name: str, where: str, lo: float, hi: float = math.inf) -> None:
    check_number(getattr(cfg, name), f"{where}.{name}", lo, hi)


def _int(cfg: EnvConfig, name: str, where: str, lo: int) -> None:
    check_int(getattr(cfg, name), f"{where}.{name}", lo)


def _choice(cfg: EnvConfig, name: str, where: str, allowed: Sequence[str]) -> None:
    check_choice(getattr(cfg, name), f"{where}.{name}", allowed)


def _grid(values: Any, where: str) -> None:
    if not isinstance(values, tuple) or not values or not all(is_number(v) for v in values):
        raise ConfigError(
            f"expected a non-empty list of finite numbers, got {values!r}", field=where
        )
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ConfigError(f"values must be strictly increasing, got {list(values)}", field=where)


def _validate(cfg: EnvConfig, where: str) -> None:
    _choice(cfg, "space", where, SPACES)
    if not isinstance(cfg.kind, TaskKind):
        try:
            object.__setattr__(cfg, "kind", TaskKind(cfg.kind))
        except ValueError:
            raise ConfigError(f"unknown task kind {cfg.kind!r}", field=f"{where}.kind") from None
    kind = cfg.kind
    _int(cfg, "max_steps", where, 1)
    _int(cfg, "min_steps", where, 0)
    if cfg.space != "grammar" and cfg.min_steps > cfg.max_steps:
        raise ConfigError(
            f"min_steps ({cfg.min_steps}) exceeds max_steps ({cfg.max_steps})",
            field=f"{where}.min_steps",
        )
    _int(cfg, "max_size", where, 2)
    if cfg.space == "grammar":
        # A grammar episode ends with the token that finishes the expression, within max_size
        # tokens: the cap is derived so that it can never cut an expression short.
        object.__setattr__(cfg, "max_steps", cfg.max_size)
        if cfg.min_steps > cfg.max_steps:
            object.__setattr__(cfg, "min_steps", cfg.max_steps)
    _num(cfg, "const_max", where, 1e-6)
    for name in ("leaves", "ops", "terms", "start"):
        v = getattr(cfg, name)
        if v is not None and not isinstance(v, tuple):
            object.__setattr__(cfg, name, tuple(v) if not isinstance(v, str) else (v,))
    for name in ("constants", "weight_grid", "task_features"):
        v = getattr(cfg, name)
        if not isinstance(v, tuple):
            object.__setattr__(cfg, name, tuple(v))

    if cfg.leaves is not None:
        if not cfg.leaves:
            raise ConfigError("needs at least one leaf", field=f"{where}.leaves")
        for n in cfg.leaves:
            spec = LEAVES.get(n)
            if spec is None or spec.kind is not kind:
                ok = [k for k, s in LEAVES.items() if s.kind is kind]
                raise ConfigError(
                    f"{n!r} is not a {kind.value} leaf; choose from {', '.join(ok)}",
                    field=f"{where}.leaves",
                )
    if cfg.ops is not None:
        for n in cfg.ops:
            if n not in OPS:
                raise ConfigError(
                    f"unknown operator {n!r}; choose from {', '.join(OPS)}", field=f"{where}.ops"
                )
            if n in REDUCTIONS and kind is TaskKind.REGRESSION:
                raise ConfigError(
                    f"{n!r} reduces over classes; regression has none", field=f"{where}.ops"
                )
    if not all(is_number(c) and abs(c) <= cfg.const_max for c in cfg.constants):
        raise ConfigError(
            f"constants must be finite numbers within ±const_max, got {list(cfg.constants)}",
            field=f"{where}.constants",
        )
    _choice(cfg, "on_reject", where, ON_REJECT)

    # Parametric space.
    if cfg.terms is not None:
        if not cfg.terms:
            raise ConfigError("needs at least one term", field=f"{where}.terms")
        if len(set(cfg.terms)) != len(cfg.terms):
            raise ConfigError(f"duplicate terms in {list(cfg.terms)}", field=f"{where}.terms")
        for n in cfg.terms:
            t = TERMS.get(n)
            if t is None or t.kind is not kind:
                ok = [k for k, s in TERMS.items() if s.kind is kind]
                raise ConfigError(
                    f"{n!r} is not a {kind.value} term; choose from {', '.join(ok)}",
                    field=f"{where}.terms",
                )
    _grid(cfg.weight_grid, f"{where}.weight_grid")
    if 0.0 not in cfg.weight_grid or 1.0 not in cfg.weight_grid or cfg.weight_grid[0] < 0:
        raise ConfigError(
            "weights must be >= 0 and include 0 and 1 (the jump actions set them)",
            field=f"{where}.weight_grid",
        )
    if not isinstance(cfg.param_grids, Mapping):
        raise ConfigError("expected a mapping", field=f"{where}.param_grids")
    grids = {}
    for key, g in cfg.param_grids.items():
        g = tuple(g) if not isinstance(g, tuple) else g
        grids[key] = g
        term, _, param = key.rpartition(".")
        at = f"{where}.param_grids.{key}"
        if param not in DEFAULT_PARAM_GRIDS or (
            term and (term not in TERMS or param not in TERMS[term].defaults)
        ):
            raise ConfigError(
                f"unknown hyper-parameter {key!r}; use one of {', '.join(DEFAULT_PARAM_GRIDS)} "
                "or '<term>.<param>'",
                field=at,
            )
        _grid(g, at)
        lo, hi, closed = PARAM_BOUNDS[param]
        if any(v > hi or v < lo or (v == lo and not closed) for v in g):
            interval = f"{'[' if closed else '('}{lo}, {hi}]"
            raise ConfigError(f"values of {param} must lie in {interval}", field=at)
    object.__setattr__(cfg, "param_grids", grids)

    _choice(cfg, "start_mode", where, START_MODES)
    _num(cfg, "start_best_prob", where, 0.0, 1.0)
    if cfg.space == "grammar" and cfg.start_best_prob != 0:
        raise ConfigError(
            "must be 0 in the grammar space: every episode builds a loss from the empty expression",
            field=f"{where}.start_best_prob",
        )
    if not isinstance(cfg.evaluate_start, bool):
        raise ConfigError(
            f"expected true or false, got {cfg.evaluate_start!r}", field=f"{where}.evaluate_start"
        )
    _choice(cfg, "reward", where, REWARD_MODES)
    _choice(cfg, "best_scope", where, BEST_SCOPES)
    if cfg.gain_clip is not None:
        _num(cfg, "gain_clip", where, 1e-12)
    for name in (
        "invalid_penalty",
        "reject_penalty",
        "diverge_penalty",
        "revisit_penalty",
        "novelty_bonus",
    ):
        _num(cfg, name, where, 0.0)
    if not all(is_number(v) and abs(v) <= TASK_FEATURE_BOUND for v in cfg.task_features):
        raise ConfigError(
            f"task features must be finite numbers within ±{TASK_FEATURE_BOUND} (normalise them), "
            f"got {list(cfg.task_features)}",
            field=f"{where}.task_features",
        )
    _validate_start(cfg, where)


def _validate_start(cfg: EnvConfig, where: str) -> None:
    at = f"{where}.start"
    if cfg.start is not None and not cfg.start:
        raise ConfigError("needs at least one start point (or leave it out for the default)", at)
    for entry in cfg.start_points:
        if not isinstance(entry, str):
            raise ConfigError(f"start points are strings, got {entry!r}", field=at)
        if entry == LIBRARY:
            continue
        if cfg.space == "parametric":
            if entry == RANDOM:
                continue
            if entry not in cfg.term_names:
                raise ConfigError(
                    f"parametric start {entry!r} must be one of the terms "
                    f"{', '.join(cfg.term_names)}, 'library' or 'random'",
                    field=at,
                )
            if not (TERMS[entry].uses_prediction and TERMS[entry].uses_target):
                raise ConfigError(f"term {entry!r} alone is not a valid loss", field=at)
            continue
        if entry == RANDOM:
            raise ConfigError("'random' start points exist only in the parametric space", at)
        start_expr(entry, cfg, at, sized=cfg.space != "grammar")


def start_expr(
    entry: str | Expr, cfg: EnvConfig, at: str = "env.start", *, sized: bool = True
) -> Expr:
    """Resolve a symbolic start point (known-loss name, expression string or tree) and check it.

    Args:
        entry: A known-loss name, an expression string or a tree.
        cfg: The env config.
        at: Field named in errors.
        sized: Also require at most ``max_size`` nodes (grammar landmarks are only evaluated,
            so they may be larger).

    Raises:
        ConfigError: if it is not a structurally valid loss of ``cfg.kind`` (within
            ``max_size`` when ``sized``).
    """
    if isinstance(entry, Expr):
        expr = entry
    elif entry in KNOWN_LOSSES:
        if KNOWN_LOSSES[entry].kind is not cfg.kind:
            raise ConfigError(f"{entry!r} is not a {cfg.kind.value} loss", field=at)
        expr = known_loss(entry)
    else:
        try:
            expr = parse(entry)
        except LossSpecError as err:
            raise ConfigError(
                f"start {entry!r} is neither a known loss nor an expression: {err}", field=at
            ) from None
    problem = structural_problem(expr, cfg, sized=sized)
    if problem:
        raise ConfigError(f"start {str(expr)!r}: {problem}", field=at)
    return expr


def structural_problem(expr: Expr, cfg: EnvConfig, *, sized: bool = True) -> str:
    """Why ``expr`` cannot be a state of the symbolic space ('' if it can).

    ``sized=False`` skips the ``max_size`` limit (a valid loss of any size).
    """
    try:
        kind = task_kind(expr)
    except LossSpecError as err:
        return str(err)
    if kind is not None and kind is not cfg.kind:
        return f"uses {kind.value} leaves but the task is {cfg.kind.value}"
    if sized and expr.size() > cfg.max_size:
        return f"has {expr.size()} nodes, more than max_size={cfg.max_size}"
    if is_vector(expr):
        return "is a per-class vector; reduce it with sum_c or mean_c"
    leaves = [LEAVES[n] for n in expr.leaves()]
    if not any(s.uses_prediction for s in leaves) or not any(s.uses_target for s in leaves):
        return "must depend on both the model output and the target"
    return ""


def space_leaves(cfg: EnvConfig) -> tuple[str, ...]:
    """Leaves the symbolic and grammar spaces may place: ``cfg.leaves`` or all of the kind's."""
    return cfg.leaves or tuple(n for n, s in LEAVES.items() if s.kind is cfg.kind)


def space_ops(cfg: EnvConfig) -> tuple[str, ...]:
    """Operators the symbolic and grammar spaces may place: ``cfg.ops``, or every operator that
    makes sense for the kind (reductions only for classification)."""
    if cfg.ops is not None:
        return cfg.ops
    return tuple(n for n in OPS if cfg.kind is TaskKind.CLASSIFICATION or n not in REDUCTIONS)
