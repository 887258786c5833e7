"""SB3 callbacks of a search: budget, checkpoints, progress, deferred rewards. One job each."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor

from loss_rl.envs import BatchedLossVecEnv
from loss_rl.evaluation import Evaluator


@dataclass(frozen=True)
class Progress:
    """A snapshot of a running search, handed to progress reporters.

    Attributes:
        trained: Inner trainings spent (the budget's unit), earlier sessions included.
        budget: The run's budget of inner trainings.
        proposed: Candidates proposed in this session.
        resolved_without_training: Share of proposals answered by checks or the cache.
        best_score: Best validation score so far (``None`` before the first).
        best_expression: The loss that reached it.
        evals_per_second: Inner trainings per second of wall time in this session.
        elapsed: Seconds since this session started.
    """

    trained: int
    budget: int
    proposed: int
    resolved_without_training: float
    best_score: float | None
    best_expression: str | None
    evals_per_second: float
    elapsed: float


class SearchState:
    """Budget accounting and best-so-far of a run, shared by the search loop and its callbacks.

    Args:
        evaluator: The run's evaluator (its stats count this session).
        budget: Inner trainings allowed for the whole run.
        trained_before: Trainings recorded by earlier sessions (resume).
        max_proposals: Cap on proposals in this session, so that a policy that only revisits
            cached losses cannot stall the run (cached/rejected proposals are free but bounded).
        max_env_steps: Cap on env steps in this session (default 10 × ``max_proposals``), so
            that a policy that only takes masked no-op actions (DQN, PPO: no masks) cannot
            stall it either: those steps propose nothing.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        budget: int,
        trained_before: int = 0,
        max_proposals: int = 0,
        max_env_steps: int = 0,
    ) -> None:
        self.evaluator = evaluator
        self.budget = budget
        self.trained_before = trained_before
        self.max_proposals = max_proposals or 10 * budget
        self.max_env_steps = max_env_steps or 10 * self.max_proposals
        self.env_steps = 0
        self.best_score: float | None = None
        self.best_expression: str | None = None
        self.started = time.perf_counter()

    @property
    def trained(self) -> int:
        """Trainings spent by the run so far.

        With multi-fidelity evaluation (``evaluation.fidelity``) a training is counted in
        optimiser steps: the run has spent ``n`` trainings once it has taken ``n`` full-length
        trainings' worth of steps (earlier sessions included, from the ledger's rungs), so a
        budget buys the same compute with and without fidelity levels.
        """
        # getattr: a stand-in evaluator (tests, pretraining's) may not count steps at all.
        spent = getattr(self.evaluator, "training_equivalents", None)
        if spent is not None:
            return int(spent)
        return self.trained_before + self.evaluator.stats.trained

    @property
    def done(self) -> bool:
        """Budget spent, or too many proposals (or env steps) without progress."""
        return (
            self.trained >= self.budget
            or self.evaluator.stats.proposed >= self.max_proposals
            or self.env_steps >= self.max_env_steps
        )

    @property
    def stop_reason(self) -> str | None:
        """Why the session stopped short of the budget, in words; ``None`` if it did not.

        ``None`` while the run can go on and once the budget is spent; otherwise the cap that
        ended it, with its counts (what ``summary.json`` records as ``stopped``). A search that
        hits the proposal cap has found few new losses for many proposals: the search space is
        (nearly) exhausted, or the policy keeps proposing losses already scored.
        """
        if self.trained >= self.budget:
            return None
        st = self.evaluator.stats
        if st.proposed >= self.max_proposals:
            return (
                f"proposal cap: {st.proposed} proposals, only {st.trained} new losses (the space "
                "is exhausted, or the policy keeps proposing losses already scored); "
                f"{self.trained} of {self.budget} trainings spent"
            )
        if self.env_steps >= self.max_env_steps:
            return (
                f"env-step cap: {self.env_steps} env steps, {st.proposed} proposals (the policy "
                f"keeps taking actions that propose nothing); {self.trained} of {self.budget} "
                "trainings spent"
            )
        return None

    def observe(self, score: float | None, expression: str) -> None:
        """Update the best-so-far with one result."""
        if score is not None and (self.best_score is None or score > self.best_score):
            self.best_score, self.best_expression = score, expression

    def progress(self) -> Progress:
        """Current snapshot."""
        el = time.perf_counter() - self.started
        st = self.evaluator.stats
        return Progress(
            trained=self.trained,
            budget=self.budget,
            proposed=st.proposed,
            resolved_without_training=st.resolved_without_training,
            best_score=self.best_score,
            best_expression=self.best_expression,
            evals_per_second=st.trained / el if el > 0 else 0.0,
            elapsed=el,
        )


class BudgetCallback(BaseCallback):
    """Feeds step results into :class:`SearchState` and stops training when the budget is spent."""

    def __init__(self, state: SearchState) -> None:
        super().__init__()
        self.state = state

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", [])
        self.state.env_steps += len(infos)
        for info in infos:
            res = info.get("result")
            if res is not None:
                self.state.observe(res.score, res.expression)
        return not self.state.done


class DeferredRewardCallback(BaseCallback):
    """Scores a rollout's deferred expressions at its end and writes their rewards into it.

    With a :class:`~loss_rl.envs.BatchedLossVecEnv` built with ``defer=True`` (grammar space),
    an episode's last step earns 0 while its expression waits; at the end of each rollout this
    callback has the vec env score all waiting expressions in one evaluator call
    (:meth:`~loss_rl.envs.BatchedLossVecEnv.flush`), adds each reward to the rollout buffer at
    the step that earned it, and recomputes the returns and advantages (SB3 computed them just
    before with the placeholder rewards). An on-policy algorithm then updates on the true
    rewards; subclasses that post-process the rollout after ``collect_rollouts`` (e.g.
    :class:`~loss_rl.agents.RiskSeekingPPO`) see them too. Expressions still waiting when the
    search stops mid-rollout are never scored (nothing was computed for them).

    Args:
        state: The search's budget and best-so-far (fed with the scored results).
        vec: The deferring vectorized env.
    """

    def __init__(self, state: SearchState, vec: BatchedLossVecEnv) -> None:
        super().__init__()
        self.state = state
        self.vec = vec

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        settled = self.vec.flush()
        if not settled:
            return
        model = self.model
        buffer = model.rollout_buffer  # type: ignore[attr-defined]
        for row, env, reward, result in settled:
            buffer.rewards[row, env] += reward
            self.state.observe(result.score, result.expression)
        with th.no_grad():
            last = model.policy.predict_values(  # type: ignore[operator]
                obs_as_tensor(model._last_obs, model.device)  # type: ignore[arg-type]
            )
        buffer.compute_returns_and_advantage(
            last_values=last,
            dones=model._last_episode_starts,  # type: ignore[arg-type]
        )


class ProgressCallback(BaseCallback):
    """Calls ``report(progress)`` at most every ``every_seconds`` (the CLI renders it with rich)."""

    def __init__(
        self, state: SearchState, report: Callable[[Progress], None], every_seconds: float = 0.5
    ) -> None:
        super().__init__()
        self.state = state
        self.report = report
        self.every = every_seconds
        self._last = 0.0

    def _on_step(self) -> bool:
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self.report(self.state.progress())
        return True

    def _on_training_end(self) -> None:
        self.report(self.state.progress())


class CheckpointCallback(BaseCallback):
    """Saves the agent (and DQN's replay buffer) every ``every_steps`` vec-env steps."""

    def __init__(self, save: Callable[[], None], every_steps: int = 50) -> None:
        super().__init__()
        self.save = save
        self.every = max(1, every_steps)
        self._calls = 0

    def _on_step(self) -> bool:
        self._calls += 1
        if self._calls % self.every == 0:
            self.save()
        return True
