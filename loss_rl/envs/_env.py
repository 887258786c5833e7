"""The loss-design MDP: :class:`LossDesignEnv` and the run-level :class:`RunStats` it uses.

The state is the current loss; each action edits (symbolic space) or parameterizes (parametric
space) it; the reward comes from the evaluator's validation score of the new loss. In the
generative ``grammar`` space (:mod:`loss_rl.envs._grammar`) the state is a partial expression
instead: every episode starts from the empty expression and each action appends one token in
prefix order; a token that leaves the expression unfinished is a *build* step (reward 0, nothing
evaluated); the token that finishes it makes the expression the candidate, which is evaluated
like any other, and the episode terminates with its reward (terminal reward only, designed for
γ = 1). The config's start losses are then landmarks evaluated first, never states. A step has two
phases so that a vectorized env can batch the evaluations of all its envs:
:meth:`LossDesignEnv.propose` turns an action into a candidate expression (``None`` for ``stop`` or
an invalid action), and :meth:`LossDesignEnv.commit` applies the candidate's
:class:`~loss_rl.evaluation.EvalResult`. :meth:`LossDesignEnv.step` is the two together with one
``evaluator.evaluate`` call in between.

Observation: a flat float32 ``Box`` (works with SB3's DQN, PPO and sb3-contrib's MaskablePPO
``MlpPolicy``), the concatenation of

1. the state encoding — symbolic: ``max_size`` rows of ``[one-hot token over (<pad>, the kind's
   leaves, <const>, every operator), sign(c)·log1p(|c|) for constants, is_vector]`` in prefix
   order; parametric: see :mod:`loss_rl.envs._parametric`; grammar: see
   :mod:`loss_rl.envs._grammar`;
2. ten search statistics (scores clipped to ±10): ``current score`` (0 if unknown),
   ``current score known``, ``best score`` (run's best, at least the reference),
   ``reference score``, ``current - reference``, ``best - reference``, ``step / max_steps``, and
   flags of the last step: ``invalid``, ``rejected or diverged``, ``cache hit``;
3. the task descriptor ``config.task_features``.

Action: ``Discrete(1 + n)``; action 0 is ``stop``, action ``1 + i`` is the space's action ``i``
(:meth:`LossDesignEnv.action_name` names them; ``stop`` is always masked in the grammar space).
:meth:`LossDesignEnv.action_masks` follows the sb3-contrib MaskablePPO convention; a masked
action taken anyway (e.g. by DQN) is a no-op with ``-invalid_penalty``. Rewards: see
:mod:`loss_rl.envs._reward`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, SupportsFloat, SupportsInt

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from loss_rl.envs._config import RANDOM, EnvConfig, start_expr
from loss_rl.envs._grammar import GrammarSpace, GrammarState
from loss_rl.envs._parametric import ParametricSpace
from loss_rl.envs._reward import score_reward
from loss_rl.envs._run_stats import RunStats
from loss_rl.envs._symbolic import SymbolicSpace
from loss_rl.errors import ConfigError
from loss_rl.evaluation import EvalResult, EvaluatorLike, Status
from loss_rl.expr import Expr, parse

N_STATS = 10
SCORE_BOUND = 10.0


@dataclass
class _Pending:
    action: int
    name: str
    candidate: Expr | None
    state: Any
    stop: bool
    result: EvalResult | None = None
    build: bool = False  # grammar: a token that leaves the expression unfinished
    deferred: bool = False  # grammar: the finished expression is scored later (settle())


class LossDesignEnv(gym.Env[np.ndarray, np.int64]):
    """The loss-design MDP (see the module docstring for spaces and layout).

    Args:
        config: An :class:`EnvConfig` or a mapping for :meth:`EnvConfig.from_dict`
            (``None``: defaults — symbolic, classification, CE start, ``best_gain``).
        evaluator: Scores candidate losses. ``None`` only for an env that a
            :class:`~loss_rl.envs.BatchedLossVecEnv` scores (it hands its evaluator to its
            envs); stepping an env that has none raises a :class:`ConfigError`.
        render_mode: ``"ansi"`` renders text; other modes render nothing.
        run: Run-level statistics to share with other envs (``None``: this env owns its own;
            a seeded :meth:`reset` then starts a new run).
        env_index: Index of this env in a vectorized env (recorded in the evaluation context).

    Raises:
        ConfigError: for a bad config.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        config: EnvConfig | Mapping[str, Any] | None = None,
        evaluator: EvaluatorLike | None = None,
        render_mode: str | None = None,
        run: RunStats | None = None,
        env_index: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(config, EnvConfig):
            config = EnvConfig.from_dict(config)
        self.config = config
        self.evaluator: EvaluatorLike = evaluator if evaluator is not None else _NoEvaluator()
        # Other modes are accepted (gymnasium.make already warns): SB3's make_vec_env asks for
        # "rgb_array" by default. Only "ansi" renders anything.
        self.render_mode = render_mode
        self.space: SymbolicSpace | ParametricSpace | GrammarSpace
        if config.space == "symbolic":
            self.space = SymbolicSpace(config)
        elif config.space == "grammar":
            self.space = GrammarSpace(config)
        else:
            self.space = ParametricSpace(config)
        self.generative = isinstance(self.space, GrammarSpace)
        self._owns_run = run is None
        self.run: RunStats = run if run is not None else RunStats()
        self.env_index = env_index
        self.task_features = np.asarray(config.task_features, dtype=np.float32)

        n_feat = len(config.task_features)
        stats_low = np.array(
            [-SCORE_BOUND, 0, -SCORE_BOUND, -SCORE_BOUND] + [-2 * SCORE_BOUND] * 2 + [0, 0, 0, 0],
            dtype=np.float32,
        )
        stats_high = np.array(
            [SCORE_BOUND, 1, SCORE_BOUND, SCORE_BOUND] + [2 * SCORE_BOUND] * 2 + [1, 1, 1, 1],
            dtype=np.float32,
        )
        low = np.concatenate([self.space.obs_low, stats_low, np.full(n_feat, -10.0, np.float32)])
        high = np.concatenate([self.space.obs_high, stats_high, np.full(n_feat, 10.0, np.float32)])
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self.action_space = spaces.Discrete(1 + self.space.n_actions)

        # Start points, resolved once (the config validated them).
        self._starts: list[Any] = [s for e in config.start_points for s in self.space.starts(e)]
        self._cycle = 0
        self._episode = -1
        self._state: Any = None
        self._expr: Expr | None = None
        self._score: float | None = None
        self._last_known: float | None = None
        self._episode_best: float | None = None
        self._step = 0
        self._mask: np.ndarray | None = None
        self._pending: _Pending | None = None
        self._last: tuple[str, str] = ("", "")  # (action name, outcome) for render
        self._flags = (0.0, 0.0, 0.0)
        # The run's best loss and its text: the info dict of every step (every token of a
        # grammar episode) carries it, and it changes rarely.
        self._best_text: tuple[Expr | None, str | None] = (None, None)

    # -----------------------------------------------------------------------------------------
    # Introspection

    @property
    def expression(self) -> Expr:
        """The current loss expression.

        Raises:
            gymnasium.error.ResetNeeded: before :meth:`reset`, and while a grammar expression is
                unfinished (see :attr:`state_text`).
        """
        if self._expr is None:
            if self._state is not None:
                raise gym.error.ResetNeeded("the grammar expression is not finished yet")
            raise gym.error.ResetNeeded("call reset() first")
        return self._expr

    @property
    def state_text(self) -> str:
        """The current state as text: the loss, or a partial grammar expression (``?`` slots)."""
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() first")
        if isinstance(self.space, GrammarSpace):
            return self.space.text(self._state)
        return str(self._expr)

    @property
    def score(self) -> float | None:
        """Validation score of the current loss (``None`` if unknown or not ok)."""
        return self._score

    def action_name(self, action: SupportsInt) -> str:
        """Readable name of an action, e.g. ``"stop"``, ``"3:wrap:log"`` or ``"gce:q+"``."""
        a = int(action)
        return "stop" if a == 0 else self.space.action_name(a - 1)

    def action_masks(self) -> np.ndarray:
        """Boolean mask of valid actions (sb3-contrib MaskablePPO convention)."""
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() first")
        if self._mask is None:
            mask = np.empty(self.action_space.n, dtype=bool)  # type: ignore[attr-defined]
            mask[1:] = self.space.mask(self._state)
            # A grammar episode ends with its last token, never with stop.
            mask[0] = not self.generative and self._step >= self.config.min_steps
            if not mask.any():
                mask[0] = True  # never leave a masked policy without a move
            self._mask = mask
        return self._mask.copy()

    def start_candidates(self) -> list[Expr]:
        """The fixed start losses (what a vectorized env pre-evaluates in one batch)."""
        out = []
        for state in self._starts:
            if not isinstance(state, str):  # "random" is drawn at reset
                expr = self.space.expr(state)
                self.run.states.setdefault(expr.key, state)
                out.append(expr)
        return out

    def attach_run(self, run: RunStats) -> None:
        """Share ``run`` with other envs; this env's seeded resets no longer clear it."""
        self.run = run
        self._owns_run = False

    def set_task_features(self, features: Sequence[float]) -> None:
        """Replace the task descriptor (same length as ``config.task_features``)."""
        f = np.asarray(features, dtype=np.float32)
        if f.shape != self.task_features.shape or not np.all(np.abs(f) <= 10.0):
            raise ConfigError(
                f"expected {self.task_features.shape[0]} finite values within ±10",
                field="env.task_features",
            )
        self.task_features = f

    def inject_best(self, expression: Expr | str, score: float) -> bool:
        """Tell the env about a good loss found elsewhere (the search's "best so far" hook).

        It becomes the run's best if it beats it; with ``start_best_prob > 0`` episodes may then
        start from it (in the parametric space only if this run has visited its state).

        Returns:
            Whether it became the run's best.
        """
        expr = parse(expression) if isinstance(expression, str) else expression
        state = expr if self.space.accepts(expr) else self.run.states.get(expr.key)
        return self.run.offer(expr, float(score), state)

    def remember(self, candidates: Sequence[Expr], results: Sequence[EvalResult]) -> None:
        """Record results obtained outside :meth:`step` (e.g. a batch of start points)."""
        for e, r in zip(candidates, results, strict=True):
            state = self.run.states.get(e.key)
            if state is None and self.space.accepts(e):
                state = e
            self.run.record(e, r, state)

    # -----------------------------------------------------------------------------------------
    # gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode.

        A seeded reset of an env that owns its :class:`RunStats` starts a new run (best score and
        counters cleared), so that a seed reproduces the run.

        Args:
            seed: Seeds ``self.np_random``.
            options: ``{"start": Expr | str}`` starts this episode there (symbolic: any valid
                tree; parametric: a term name; grammar: a :class:`GrammarState` prefix, by default
                the empty expression); ``{"task_features": [...]}`` replaces the task
                descriptor.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._episode, self._cycle = -1, 0
            if self._owns_run:
                self.run.clear()
        options = options or {}
        if "task_features" in options:
            self.set_task_features(options["task_features"])
        self._episode += 1
        self.run.n_episodes += 1
        if self.generative and self.config.evaluate_start:
            self._evaluate_landmarks()
        state = self._choose_start(options.get("start"))
        self._state = state
        self._expr = self.space.expr(state)
        self._step = 0
        self._mask = None
        self._pending = None
        self._flags = (0.0, 0.0, 0.0)
        self._score = self._start_score(self._expr, state)
        self._last_known = self._score
        self._episode_best = self._score
        self._last = ("reset", "start")
        return self._obs(), self._info(None, None)

    def step(
        self, action: SupportsInt
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Propose, evaluate (one ``evaluate`` call, skipped for ``stop``/invalid), commit."""
        a = int(action)
        pending = self._pending
        if pending is None or pending.action != a:
            self.propose(a)
            pending = self._pending
        assert pending is not None
        result = pending.result
        if pending.candidate is not None and result is None and not pending.deferred:
            (result,) = _evaluate(self.evaluator, [pending.candidate], [self._context()])
        return self.commit(result)

    def render(self) -> str | None:
        """The current loss, its score, the run's best and the last move (``ansi`` mode)."""
        if self.render_mode != "ansi":
            return None
        ref = self._reference()
        best = self.run.best_score
        fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
        lines = [
            f"episode {self._episode}  step {self._step}/{self.config.max_steps}",
            f"loss      {self.state_text}",
            f"score     {fmt(self._score)}   (reference {fmt(ref)}, run best {fmt(best)})",
            f"run best  {self.run.best_expression}",
            f"last      {self._last[0]} -> {self._last[1]}",
        ]
        return "\n".join(lines) + "\n"

    # -----------------------------------------------------------------------------------------
    # Two-phase step (used by BatchedLossVecEnv)

    def propose(self, action: SupportsInt) -> Expr | None:
        """Turn ``action`` into a candidate loss, to be evaluated and then :meth:`commit`-ted.

        Returns:
            The candidate expression, or ``None`` for ``stop``, for masked actions (no-ops
            that :meth:`commit` penalises) and for grammar tokens that leave the expression
            unfinished (build steps: :meth:`commit` moves on with reward 0).

        Raises:
            ValueError: if ``action`` is outside the action space.
        """
        a = int(action)
        n = int(self.action_space.n)  # type: ignore[attr-defined]
        if not 0 <= a < n:
            raise ValueError(f"action {a} is outside Discrete({n})")
        mask = self.action_masks()
        name = self.action_name(a)
        if not mask[a]:
            self._pending = _Pending(a, name, None, None, stop=False)
        elif a == 0:
            self._pending = _Pending(a, name, None, None, stop=True)
        else:
            state = self.space.apply(self._state, a - 1)
            cand = self.space.expr(state)
            self._pending = _Pending(a, name, cand, state, stop=False, build=cand is None)
        return self._pending.candidate

    def provide(self, result: EvalResult) -> None:
        """Attach the evaluation of the proposed candidate, for the next :meth:`step`.

        A vectorized env evaluates all candidates in one batch, provides each env its result and
        then calls the (possibly wrapped) ``step``, so wrappers such as ``Monitor`` still see it.
        """
        if self._pending is None or self._pending.candidate is None:
            raise RuntimeError("provide() needs a proposed candidate; call propose() first")
        self._pending.result = result

    def defer(self) -> tuple[Expr, Any, dict[str, Any]]:
        """Grammar: end the episode on the proposed expression without scoring it now.

        An on-policy agent with terminal rewards only needs the rewards when it updates, so a
        vectorized env can collect a whole rollout's expressions and score them in one evaluator
        call (:meth:`BatchedLossVecEnv.flush`), which keeps the batched trainer busy. The next
        :meth:`commit` then ends the episode with reward 0 and the run learns the score through
        :meth:`settle`.

        Returns:
            The candidate, its state and its evaluation context (for :meth:`settle`).

        Raises:
            RuntimeError: outside the grammar space, or without a proposed finished expression.
        """
        pending = self._pending
        if not self.generative or pending is None or pending.candidate is None:
            raise RuntimeError("defer() needs a finished grammar expression; call propose() first")
        pending.deferred = True
        return pending.candidate, pending.state, self._context()

    def settle(self, candidate: Expr, state: Any, result: EvalResult) -> float:
        """Record a deferred expression's evaluation; returns the reward its step had earned."""
        cfg = self.config
        self.run.record(candidate, result, state)
        if result.ok and result.score is not None:
            score = float(result.score)
            ref = self._reference()
            reward = score_reward(
                cfg.reward,
                score,
                previous=ref,
                reference=ref,
                best=self._run_best(ref),
                gain_clip=cfg.gain_clip,
            )
            return reward + (cfg.novelty_bonus if result.trained else -cfg.revisit_penalty)
        return -(cfg.reject_penalty if result.status is Status.REJECTED else cfg.diverge_penalty)

    def eval_context(self) -> dict[str, Any]:
        """Bookkeeping recorded by the evaluator with this env's candidate."""
        return self._context()

    def commit(
        self, result: EvalResult | None = None
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the proposed move with its evaluation ``result``; returns the step 5-tuple.

        Args:
            result: The candidate's evaluation (``None`` for ``stop``/invalid/grammar build
                moves, or when it was attached with :meth:`provide`).

        Raises:
            RuntimeError: without a pending :meth:`propose`, or without a result for a candidate.
        """
        pending = self._pending
        if pending is None:
            raise RuntimeError("commit() needs a proposed move; call propose() first")
        result = result if result is not None else pending.result
        if pending.candidate is not None and result is None and not pending.deferred:
            raise RuntimeError("the proposed candidate needs its EvalResult")
        self._pending = None
        self._step += 1
        self.run.n_steps += 1
        cfg = self.config
        terminated = False
        invalid = rejected = cached = 0.0
        if pending.stop:
            reward, outcome, terminated = 0.0, "stop", True
        elif pending.build:
            reward, outcome = 0.0, "build"
            self._state = pending.state
        elif pending.deferred:
            reward, outcome, terminated = 0.0, "deferred", True
            self._move_to(pending, None)
        elif pending.candidate is None:
            reward, outcome, invalid = -cfg.invalid_penalty, "invalid (no-op)", 1.0
            self.run.n_invalid += 1
        else:
            assert result is not None
            reward, outcome = self._apply_result(pending, result)
            rejected = float(not result.ok)
            terminated = self.generative  # one episode, one expression
            cached = float(result.ok and not result.trained)
        self._flags = (invalid, rejected, cached)
        self._mask = None
        self._last = (pending.name, outcome)
        truncated = not terminated and self._step >= cfg.max_steps
        info = self._info(pending, result)
        return self._obs(), float(reward), terminated, truncated, info

    # -----------------------------------------------------------------------------------------
    # Internals

    def _apply_result(self, pending: _Pending, result: EvalResult) -> tuple[float, str]:
        cfg = self.config
        cand = pending.candidate
        assert cand is not None
        ref = self._reference()
        if cfg.best_scope == "run":
            best = self._run_best(ref)
        else:
            best = self._episode_best if self._episode_best is not None else ref
        previous = self._last_known if self._last_known is not None else ref
        self.run.record(cand, result, pending.state)
        if result.ok and result.score is not None:
            score = float(result.score)
            reward = score_reward(
                cfg.reward,
                score,
                previous=previous,
                reference=ref,
                best=best,
                gain_clip=cfg.gain_clip,
            )
            reward += cfg.novelty_bonus if result.trained else -cfg.revisit_penalty
            self._move_to(pending, score)
            self._last_known = score
            if self._episode_best is None or score > self._episode_best:
                self._episode_best = score
            return reward, f"ok {score:.4f}" + ("" if result.trained else " (cached)")
        penalty = cfg.reject_penalty if result.status is Status.REJECTED else cfg.diverge_penalty
        if cfg.on_reject == "move" or self.generative:
            self._move_to(pending, None)
        why = f": {result.reason}" if result.reason else ""
        return -penalty, f"{result.status.value}{why}"

    def _move_to(self, pending: _Pending, score: float | None) -> None:
        self._state, self._expr, self._score = pending.state, pending.candidate, score

    def _run_best(self, ref: float) -> float:
        best = self.run.best_score
        return ref if best is None else max(ref, best)

    def _reference(self) -> float:
        return float(self.evaluator.reference_score)

    def _context(self, start: bool = False) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "episode": self._episode,
            "step": self._step + (0 if start else 1),
            "env_index": self.env_index,
        }
        if start:
            ctx["start"] = True
        elif self._pending is not None:
            ctx["action"] = self._pending.name  # recorded in the ledger: edit usage over a run
        return ctx

    def _evaluate_landmarks(self) -> None:
        """Grammar: evaluate the start losses not known yet, in one call (a vectorized env
        has usually done so in its reset)."""
        todo = [e for e in self.start_candidates() if e.key not in self.run.scores]
        todo = list({e.key: e for e in todo}.values())
        if todo:
            ctx = [self._context(start=True) for _ in todo]
            self.remember(todo, _evaluate(self.evaluator, todo, ctx))

    def _choose_start(self, override: Expr | str | GrammarState | None) -> Any:
        if isinstance(self.space, GrammarSpace):
            if override is None:
                return self.space.initial_state()
            if not self.space.accepts(override):
                raise ConfigError(
                    "a grammar episode starts from the empty expression or from a GrammarState "
                    f"prefix of this space, got {override!r}",
                    field="options.start",
                )
            return override
        if override is not None:
            assert not isinstance(override, GrammarState)
            return self._state_from_user(override)
        cfg = self.config
        best = self.run.best_state
        if (
            cfg.start_best_prob > 0
            and best is not None
            and self.space.accepts(best)
            and self.np_random.random() < cfg.start_best_prob
        ):
            return best
        if cfg.start_mode == "fixed":
            choice = self._starts[0]
        elif cfg.start_mode == "random":
            choice = self._starts[int(self.np_random.integers(len(self._starts)))]
        else:
            choice = self._starts[self._cycle % len(self._starts)]
            self._cycle += 1
        if isinstance(choice, str):
            assert choice == RANDOM and isinstance(self.space, ParametricSpace)
            return self.space.random_state(self.np_random)
        return choice

    def _state_from_user(self, start: Expr | str) -> Any:
        if isinstance(self.space, ParametricSpace):
            if isinstance(start, str) and start in self.config.term_names:
                return self.space.single(start)
            expr = parse(start) if isinstance(start, str) else start
            state = self.run.states.get(expr.key)
            if not self.space.accepts(state):
                raise ConfigError(
                    f"cannot start the parametric space at {str(expr)!r}: give a term name or a "
                    "loss this run has visited",
                    field="options.start",
                )
            return state
        return start_expr(start, self.config, at="options.start")

    def _start_score(self, expr: Expr | None, state: Any) -> float | None:
        if expr is None:  # an unfinished grammar expression has no score
            return None
        key = expr.key
        if key in self.run.scores:
            score = self.run.scores[key]
            if score is not None:
                self.run.offer(expr, score, state)
            return score
        if not self.config.evaluate_start:
            return None
        (result,) = _evaluate(self.evaluator, [expr], [self._context(start=True)])
        self.run.record(expr, result, state)
        return float(result.score) if result.ok and result.score is not None else None

    def _obs(self) -> np.ndarray:
        ref = self._reference()
        best = self._run_best(ref)
        cur = self._score
        # Plain min/max, not np.clip: this runs at every step (every token of a grammar
        # episode), and np.clip on a Python float costs ~15 µs. NaN stays NaN either way.
        clip = lambda v: min(max(float(v), -SCORE_BOUND), SCORE_BOUND)  # noqa: E731
        stats = np.array(
            [
                clip(cur) if cur is not None else 0.0,
                float(cur is not None),
                clip(best),
                clip(ref),
                clip(cur) - clip(ref) if cur is not None else 0.0,
                clip(best) - clip(ref),
                self._step / self.config.max_steps,
                *self._flags,
            ],
            dtype=np.float32,
        )
        return np.concatenate([self.space.encode(self._state), stats, self.task_features]).astype(
            np.float32
        )

    def _info(self, pending: _Pending | None, result: EvalResult | None) -> dict[str, Any]:
        run = self.run
        if run.best_expression is not self._best_text[0]:
            best = run.best_expression
            self._best_text = (best, str(best) if best is not None else None)
        return {
            "expression": self.state_text,
            "score": self._score,
            "action": pending.name if pending is not None else None,
            "candidate": str(pending.candidate) if pending and pending.candidate else None,
            "result": result,
            "invalid": bool(
                pending is not None
                and not pending.stop
                and not pending.build
                and pending.candidate is None
            ),
            "reference_score": self._reference(),
            "best_score": run.best_score,
            "best_expression": self._best_text[1],
            # Not "episode": SB3 reads info["episode"] as Monitor's episode statistics.
            "episode_index": self._episode,
            "step_index": self._step,
            "n_evaluations": run.n_evaluations,
            "n_trainings": run.n_trainings,
            "n_rejected": run.n_rejected,
            "n_invalid": run.n_invalid,
        }


class _NoEvaluator:
    """Stands in until an evaluator is given; any use is a clear error, never a made-up score."""

    _MESSAGE = (
        "this LossDesignEnv has no evaluator: pass evaluator=... (the real one for a preset: "
        "loss_rl.presets.make_env(PRESET) or gymnasium.make('loss_rl/PRESET-v0'); a cheap one "
        "for tests: loss_rl.envs.testing.CheapEvaluator), or step it inside a BatchedLossVecEnv "
        "built with an evaluator"
    )

    @property
    def reference_score(self) -> float:
        raise ConfigError(self._MESSAGE, field="evaluator")

    def evaluate(
        self, candidates: Sequence[Expr], context: Sequence[dict[str, Any]] | None = None
    ) -> list[EvalResult]:
        raise ConfigError(self._MESSAGE, field="evaluator")


def _evaluate(
    evaluator: EvaluatorLike, candidates: list[Expr], context: list[dict[str, Any]]
) -> list[EvalResult]:
    results = list(evaluator.evaluate(candidates, context=context))
    if len(results) != len(candidates):
        raise RuntimeError(
            f"the evaluator returned {len(results)} results for {len(candidates)} candidates"
        )
    return results
