"""BatchedLossVecEnv: one evaluator call per step, auto-reset, masks, seeding, wrappers."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor

from loss_rl.envs import BatchedLossVecEnv, LossDesignEnv
from loss_rl.envs.testing import CheapEvaluator
from loss_rl.presets import ENV_ID
from tests.envs.helpers import HashEvaluator, TableEvaluator


def _vec(n: int, evaluator: Any, **config: Any) -> BatchedLossVecEnv:
    return BatchedLossVecEnv(
        [LossDesignEnv(config, render_mode="ansi") for _ in range(n)], evaluator
    )


def _valid_actions(vec: BatchedLossVecEnv, rng: np.random.Generator) -> np.ndarray:
    masks = vec.get_action_masks()
    return np.array([rng.choice(np.flatnonzero(m[1:])) + 1 for m in masks])  # never stop


@pytest.mark.parametrize("space", ["symbolic", "parametric"])
def test_one_evaluate_call_per_step_with_all_candidates(space: str) -> None:
    ev = CheapEvaluator(full_check=False, steps=3)
    vec = _vec(4, ev, space=space, max_steps=50)
    vec.seed(0)
    vec.reset()
    assert ev.calls == [1]  # the shared CE start, evaluated once for all envs
    rng = np.random.default_rng(0)
    for step in range(1, 6):
        vec.step(_valid_actions(vec, rng))
        assert ev.calls[-1] == 4 and len(ev.calls) == 1 + step
        assert [c["env_index"] for c in ev.contexts[-1]] == [0, 1, 2, 3]
        assert all(c["step"] == step for c in ev.contexts[-1])
    # Invalid actions and stop send nothing: only the two real candidates are batched.
    masks = vec.get_action_masks()
    actions = _valid_actions(vec, rng)
    actions[0] = 0  # stop
    actions[2] = int(np.flatnonzero(~masks[2])[-1])  # masked
    _, _, dones, infos = vec.step(actions)
    assert ev.calls[-1] == 2
    assert dones[0] and not dones[1] and infos[2]["invalid"]


def test_auto_reset_terminal_observation_and_shared_run() -> None:
    ev = HashEvaluator(reference=0.0)
    vec = _vec(3, ev, max_steps=2, reward="score")
    vec.seed(1)
    obs = vec.reset()
    assert obs.shape == (3, *vec.observation_space.shape)
    rng = np.random.default_rng(1)
    vec.step(_valid_actions(vec, rng))
    calls = len(ev.calls)
    obs, _, dones, infos = vec.step(_valid_actions(vec, rng))
    assert dones.all() and len(ev.calls) == calls + 1  # auto-resets cost no extra call
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"]
        term = info["terminal_observation"]
        assert term.shape == vec.observation_space.shape and not np.array_equal(term, obs[i])
    units = vec.units
    assert all(u.run is vec.run for u in units)
    assert vec.run.best_score == max(s for s in vec.run.scores.values() if s is not None)


def test_step_infos_match_dummy_vec_env_and_are_the_callers() -> None:
    """The step without SB3's deep copy returns what DummyVecEnv returns, infos owned by us."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    def envs() -> list[gym.Env]:
        return [
            LossDesignEnv({"max_steps": 3, "reward": "score"}, evaluator=HashEvaluator())
            for _ in range(3)
        ]

    ours = BatchedLossVecEnv(envs(), share_run=False)  # as DummyVecEnv: a run per env
    plain = DummyVecEnv([lambda e=e: e for e in envs()])  # type: ignore[misc]
    for vec in (ours, plain):
        vec.seed(4)
        vec.reset()
    rng = np.random.default_rng(4)
    for _ in range(7):  # through two auto-resets
        actions = _valid_actions(ours, rng)
        a, b = ours.step(actions), plain.step(actions)
        for x, y in zip(a[:3], b[:3], strict=True):
            assert np.array_equal(x, y)
        for info, ref in zip(a[3], b[3], strict=True):
            assert info.keys() == ref.keys()
            for k, v in info.items():
                if isinstance(v, np.ndarray):
                    assert np.array_equal(v, ref[k])
                elif k != "result" and not k.startswith("n_"):
                    # (counters: the batched env evaluates the start points once, in reset)
                    assert v == ref[k], k
        a[3][0]["score"] = "changed by the caller"
        assert ours.buf_infos[0].get("score") != "changed by the caller"


def test_masks_helpers_render_and_seed() -> None:
    vec = _vec(2, TableEvaluator(), start=["library"], start_mode="random")
    assert is_masking_supported(vec)
    vec.seed(5)
    first = vec.reset()
    masks = get_action_masks(vec)
    assert masks.shape == (2, vec.action_space.n) and masks.dtype == bool
    np.testing.assert_array_equal(masks, vec.get_action_masks())
    texts = vec.env_method("render")
    assert all("loss" in t for t in texts)
    vec.render()  # ansi: delegated to the envs, nothing to tile
    vec.seed(5)
    np.testing.assert_array_equal(vec.reset(), first)  # a seed reproduces the starts


def test_wrapped_envs_and_make_vec_env() -> None:
    ev = TableEvaluator()
    vec = make_vec_env(
        ENV_ID,
        n_envs=2,
        env_kwargs={"config": {"max_steps": 2}, "render_mode": "ansi"},
        vec_env_cls=BatchedLossVecEnv,
        vec_env_kwargs={"evaluator": ev},
    )
    assert isinstance(vec.envs[0], Monitor)
    vec.reset()
    rng = np.random.default_rng(0)
    vec.step(_valid_actions(vec, rng))
    _, _, dones, infos = vec.step(_valid_actions(vec, rng))
    assert dones.all() and all("r" in info["episode"] for info in infos)  # Monitor statistics
    assert ev.calls[-2:] == [2, 2]


def test_rejects_foreign_or_mismatched_envs() -> None:
    with pytest.raises(TypeError, match="LossDesignEnv"):
        BatchedLossVecEnv([lambda: gym.make("CartPole-v1")])
    with pytest.raises(ValueError, match="same spaces"):
        BatchedLossVecEnv(
            [LossDesignEnv({"max_size": 8}), LossDesignEnv({"max_size": 9})], TableEvaluator()
        )


def test_shared_run_survives_seeded_resets_and_takes_injected_best() -> None:
    vec = _vec(2, TableEvaluator(reference=0.5), start_best_prob=1.0)
    assert vec.inject_best("(1 - p_y^0.5) / 0.5", 0.9)  # e.g. from a resumed run's ledger
    vec.seed(0)
    vec.reset()
    assert vec.run.best_score == 0.9
    assert vec.env_method("render")[1].count("(1 - p_y^0.5) / 0.5") == 2  # started there
    assert not vec.inject_best("-log_p_y", 0.2)


def test_unshared_runs_still_batch_start_evaluations() -> None:
    ev = TableEvaluator()
    vec = BatchedLossVecEnv(
        [LossDesignEnv({"start": ["ce", "gce"], "start_mode": "cycle"}) for _ in range(3)],
        ev,
        share_run=False,
    )
    vec.reset()
    assert ev.calls == [2]  # CE and GCE once, for every env's own run
    assert all(len(u.run.scores) == 2 for u in vec.units)
    assert len({id(u.run) for u in vec.units}) == 3
