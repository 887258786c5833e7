"""Tiny SB3 runs on the env: DQN, PPO and MaskablePPO learn a few steps without errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import DQN, PPO

from loss_rl.envs import BatchedLossVecEnv, LossDesignEnv
from loss_rl.envs.testing import CheapEvaluator

ALGOS: dict[str, tuple[type, dict[str, Any]]] = {
    "dqn": (DQN, {"learning_starts": 16, "buffer_size": 500, "batch_size": 16, "train_freq": 4}),
    "ppo": (PPO, {"n_steps": 16, "batch_size": 16, "n_epochs": 1}),
    "maskable_ppo": (MaskablePPO, {"n_steps": 16, "batch_size": 16, "n_epochs": 1}),
}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tiny networks: two threads only contend on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("space", ["symbolic", "parametric"])
@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_agent_learns_a_few_steps(algo: str, space: str) -> None:
    cls, kwargs = ALGOS[algo]
    ev = CheapEvaluator(full_check=False, steps=5)
    config = {"space": space, "max_steps": 6, "max_size": 12}
    vec = BatchedLossVecEnv([LossDesignEnv(config) for _ in range(2)], ev)
    model = cls("MlpPolicy", vec, seed=0, policy_kwargs={"net_arch": [32]}, **kwargs)
    model.learn(total_timesteps=128)
    assert model.num_timesteps >= 128
    assert all(n <= 2 for n in ev.calls)  # one batch per vec step
    obs = vec.reset()
    if algo == "maskable_ppo":
        action, _ = model.predict(obs, action_masks=vec.get_action_masks())
        assert vec.get_action_masks()[np.arange(2), action].all()
    else:
        action, _ = model.predict(obs)
    vec.step(action)
