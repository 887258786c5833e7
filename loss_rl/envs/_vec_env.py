"""A vectorized env that evaluates the candidates of all its envs in one evaluator call.

SB3's ``DummyVecEnv`` steps envs one after the other, so a batched trainer would see one
candidate at a time. :class:`BatchedLossVecEnv` first asks every env for its candidate
(:meth:`LossDesignEnv.propose`), sends them to ``evaluator.evaluate`` as one batch, hands each env
its result (:meth:`LossDesignEnv.provide`) and only then steps the (possibly wrapped) envs, so
wrappers such as ``Monitor`` keep working and the rest of ``DummyVecEnv`` (auto-reset with
``terminal_observation``, ``env_method``, ``get_attr``, ``seed``, ``render``) is reused as is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from loss_rl.envs._env import LossDesignEnv, _evaluate
from loss_rl.envs._run_stats import RunStats
from loss_rl.evaluation import EvalResult, EvaluatorLike
from loss_rl.expr import Expr


@dataclass(frozen=True)
class _Waiting:
    """A finished expression waiting for :meth:`BatchedLossVecEnv.flush`."""

    row: int
    env: int
    expr: Expr
    state: Any
    ctx: dict[str, Any]


class BatchedLossVecEnv(DummyVecEnv):
    """Vectorized :class:`LossDesignEnv` with one ``evaluate`` call per step.

    Args:
        env_fns_or_envs: Env factories (as for ``DummyVecEnv``) or env instances; each must be a
            :class:`LossDesignEnv`, possibly wrapped, and all must share their spaces.
        evaluator: Evaluator for all envs (``None``: the first env's). It replaces the envs' own
            evaluators so that single-env calls (e.g. start evaluations) use it too.
        share_run: Give all envs one :class:`RunStats` (:attr:`run`), so ``best_gain`` rewards
            gains over the best loss of the whole search. It lives as long as this vec env (a
            seeded reset does not clear it), so a resumed search can :meth:`inject_best` before
            learning.
        multi_task: The envs switch tasks (:class:`~loss_rl.envs.TaskSwitcher`): keep each
            env's own evaluator and run, and send each step's candidates to their envs'
            evaluators, one call per evaluator.
        defer: Grammar space, on-policy agents: a finished expression ends its episode with
            reward 0 and waits; :meth:`flush` scores every waiting expression in one evaluator
            call and returns the rewards with the steps that earned them, for the agent to
            write into its rollout (:class:`loss_rl.agents.callbacks.DeferredRewardCallback`).
            Candidates of the other spaces are always scored at once.

    Raises:
        TypeError: if an env is not a :class:`LossDesignEnv`.
        ValueError: if the envs' spaces differ.
    """

    def __init__(
        self,
        env_fns_or_envs: Sequence[Callable[[], gym.Env] | gym.Env],
        evaluator: EvaluatorLike | None = None,
        share_run: bool = True,
        multi_task: bool = False,
        defer: bool = False,
    ) -> None:
        fns = [(lambda e=e: e) if isinstance(e, gym.Env) else e for e in env_fns_or_envs]
        super().__init__(fns)
        units: list[LossDesignEnv] = []
        for env in self.envs:
            u = env.unwrapped
            if not isinstance(u, LossDesignEnv):
                raise TypeError(
                    f"BatchedLossVecEnv needs LossDesignEnv envs, got {type(u).__name__}"
                )
            if u.observation_space != self.observation_space or u.action_space != self.action_space:
                raise ValueError("all envs of a BatchedLossVecEnv need the same spaces (config)")
            units.append(u)
        self.units: list[LossDesignEnv] = units
        self.multi_task = multi_task
        self.evaluator: EvaluatorLike = evaluator if evaluator is not None else units[0].evaluator
        share_run = share_run and not multi_task
        self.run: RunStats = units[0].run if share_run else RunStats()
        for i, u in enumerate(units):
            u.env_index = i
            if not multi_task:
                u.evaluator = self.evaluator
            if share_run:
                u.attach_run(self.run)
        self.share_run = share_run
        if defer and multi_task:
            raise ValueError("defer=True needs one evaluator: not with multi_task")
        self.defer = defer
        self._since_flush = 0  # vec steps since the last flush: a rollout's row index
        self._waiting: list[_Waiting] = []

    def reset(self) -> VecEnvObs:
        """Reset all envs; their unknown start points are first evaluated in one batch.

        Later auto-resets find those scores in the run's memory and call nothing; only starts
        that are not fixed (``"random"`` parametric starts) are evaluated one by one.
        """
        todo: dict[str, tuple[Expr, list[LossDesignEnv]]] = {}
        # A multi-task env binds its task in reset(): the start points are evaluated there.
        for u in [] if self.multi_task else self.units:
            if not u.config.evaluate_start:
                continue
            for expr in u.start_candidates():
                if expr.key not in u.run.scores:
                    todo.setdefault(expr.key, (expr, []))[1].append(u)
        if todo:
            exprs = [e for e, _ in todo.values()]
            ctx = [
                {"episode": 0, "step": 0, "env_index": us[0].env_index, "start": True}
                for _, us in todo.values()
            ]
            results = _evaluate(self.evaluator, exprs, ctx)
            for (expr, us), r in zip(todo.values(), results, strict=True):
                runs = {id(u.run): u for u in us}  # record once per run, however shared
                for u in runs.values():
                    u.remember([expr], [r])
        return super().reset()

    def step_wait(self) -> VecEnvStepReturn:
        """Propose on every env, evaluate all candidates in one call, then step every env."""
        actions = [int(a) for a in np.asarray(self.actions).reshape(self.num_envs)]
        candidates = [u.propose(a) for u, a in zip(self.units, actions, strict=True)]
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(candidates):
            if c is None:
                continue
            if self.defer and self.units[i].generative:
                expr, state, ctx = self.units[i].defer()
                self._waiting.append(_Waiting(self._since_flush, i, expr, state, ctx))
                continue
            groups.setdefault(id(self.units[i].evaluator), []).append(i)
        self._since_flush += 1
        for idx in groups.values():
            results = _evaluate(
                self.units[idx[0]].evaluator,
                [candidates[i] for i in idx],  # type: ignore[misc]
                [self.units[i].eval_context() for i in idx],
            )
            for i, r in zip(idx, results, strict=True):
                self.units[i].provide(r)
        # The envs' step() finds their pending proposal and its result: no further calls.
        return self._step_envs()

    def _step_envs(self) -> VecEnvStepReturn:
        """``DummyVecEnv.step_wait`` without its deep copy of the info dicts.

        That copy guards against envs that reuse an info dict between steps. A
        :class:`LossDesignEnv` builds a fresh dict at every step and its values are immutable
        (text, numbers, a frozen ``EvalResult``), so a shallow copy of each dict keeps the same
        guarantee. The deep copy cost ~90 µs a step, and a grammar search steps once per token.
        """
        for i, env in enumerate(self.envs):
            obs, self.buf_rews[i], terminated, truncated, info = env.step(self.actions[i])
            self.buf_dones[i] = terminated or truncated
            # SB3's VecEnv convention for a time-limit end (as DummyVecEnv reports it).
            info["TimeLimit.truncated"] = truncated and not terminated
            if self.buf_dones[i]:
                info["terminal_observation"] = obs
                obs, self.reset_infos[i] = env.reset()
            self.buf_infos[i] = info
            self._save_obs(i, obs)
        return (
            self._obs_from_buf(),
            np.copy(self.buf_rews),
            np.copy(self.buf_dones),
            [dict(info) for info in self.buf_infos],
        )

    def flush(self) -> list[tuple[int, int, float, EvalResult]]:
        """Score the waiting expressions in one evaluator call and start a new window.

        Returns:
            ``(row, env, reward, result)`` per waiting expression: ``row`` counts the vec steps
            since the previous flush (the step that finished the expression), ``env`` is the
            env's index, ``reward`` what that step earned.
        """
        waiting, self._waiting, self._since_flush = self._waiting, [], 0
        if not waiting:
            return []
        results = _evaluate(self.evaluator, [w.expr for w in waiting], [w.ctx for w in waiting])
        return [
            (w.row, w.env, self.units[w.env].settle(w.expr, w.state, r), r)
            for w, r in zip(waiting, results, strict=True)
        ]

    def inject_best(self, expression: Expr | str, score: float) -> bool:
        """Offer a loss found elsewhere as the run's best (see :meth:`LossDesignEnv.inject_best`).

        Returns:
            Whether it became the best (of the shared run, or of any env's own run).
        """
        units = self.units[:1] if self.share_run else self.units
        return any([u.inject_best(expression, score) for u in units])

    def get_action_masks(self) -> np.ndarray:
        """Masks of all envs, shape ``(num_envs, n_actions)`` (as sb3-contrib's helper builds)."""
        return np.stack(self.env_method("action_masks"))
