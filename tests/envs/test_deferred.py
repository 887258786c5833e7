"""Deferred rewards: a rollout's finished grammar expressions scored in one evaluator call."""

from __future__ import annotations

import numpy as np
from sb3_contrib import MaskablePPO

from loss_rl.agents import SearchState
from loss_rl.agents.callbacks import DeferredRewardCallback
from loss_rl.envs import BatchedLossVecEnv, LossDesignEnv
from loss_rl.envs.testing import CheapEvaluator

CFG = {"space": "grammar", "max_size": 6, "constants": [0.5, 1], "start": ["ce"]}


def _random_actions(vec: BatchedLossVecEnv, rng: np.random.Generator) -> np.ndarray:
    masks = vec.get_action_masks()
    return np.array([rng.choice(np.flatnonzero(m)) for m in masks])


def test_flush_scores_every_waiting_expression_once_with_the_rewards_it_would_have_earned() -> None:
    rng = np.random.default_rng(0)
    deferred_ev, direct_ev = CheapEvaluator(full_check=False), CheapEvaluator(full_check=False)
    deferred = BatchedLossVecEnv([LossDesignEnv(CFG) for _ in range(4)], deferred_ev, defer=True)
    direct = BatchedLossVecEnv([LossDesignEnv(CFG) for _ in range(4)], direct_ev)
    deferred.reset()
    direct.reset()
    n_start = len(deferred_ev.calls)
    ended: dict[tuple[int, int], float] = {}
    for row in range(12):
        actions = _random_actions(deferred, rng)
        _, r_def, done_def, _ = deferred.step(actions)
        _, r_dir, done_dir, _ = direct.step(actions)
        # Same episode boundaries; the deferring env pays nothing yet.
        assert (done_def == done_dir).all()
        assert (r_def[done_def] == 0).all()
        for env in np.flatnonzero(done_dir):
            ended[(row, int(env))] = float(r_dir[env])
    assert len(deferred_ev.calls) == n_start  # nothing scored while the rollout runs
    settled = deferred.flush()
    assert len(deferred_ev.calls) == n_start + 1  # one call for the whole rollout
    assert {(row, env): reward for row, env, reward, _ in settled} == ended
    assert deferred.flush() == []  # a new, empty window
    assert deferred.run.n_evaluations == direct.run.n_evaluations


def test_callback_writes_the_rewards_into_the_rollout_before_the_update() -> None:
    ev = CheapEvaluator(full_check=False, steps=5)
    vec = BatchedLossVecEnv([LossDesignEnv(CFG) for _ in range(4)], ev, defer=True)
    model = MaskablePPO(
        "MlpPolicy",
        vec,
        seed=0,
        gamma=1.0,
        gae_lambda=1.0,
        n_steps=8,
        batch_size=16,
        n_epochs=1,
        policy_kwargs={"net_arch": [16]},
    )
    state = SearchState(ev, budget=10_000)  # type: ignore[arg-type]
    seen: list[np.ndarray] = []

    class Spy(DeferredRewardCallback):
        def _on_rollout_end(self) -> None:
            super()._on_rollout_end()
            seen.append(self.model.rollout_buffer.rewards.copy())  # type: ignore[attr-defined]

    model.learn(total_timesteps=64, callback=[Spy(state, vec)])
    assert seen and all((r != 0).any() for r in seen)  # terminal rewards arrived in the buffer
    assert len(ev.calls) == 1 + len(seen)  # the reset's start batch, then one per rollout
    assert state.best_score is not None
