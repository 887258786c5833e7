"""The loss-design MDP: a gymnasium env whose state is a loss and whose reward is its score.

- :class:`LossDesignEnv` (registered as ``"loss_rl/LossDesign-v0"``; kwargs ``config`` and
  ``evaluator``) with two search spaces, ``symbolic`` and ``parametric``;
- :class:`EnvConfig`, its validated configuration;
- :class:`BatchedLossVecEnv`, an SB3 ``VecEnv`` that evaluates the candidates of all its envs in
  one evaluator call;
- :class:`RunStats`, run-level memory (best so far) shared by the envs of a search;
- :class:`TaskSwitcher` / :class:`TaskSchedule` / :class:`TaskBinding`: one episode per task of a
  suite, for pretraining across tasks;
- :mod:`loss_rl.envs.testing`: :class:`~loss_rl.envs.testing.CheapEvaluator` for tests.
"""

import gymnasium

from loss_rl.envs._config import EnvConfig
from loss_rl.envs._env import LossDesignEnv, RunStats
from loss_rl.envs._multitask import TaskBinding, TaskSchedule, TaskSwitcher
from loss_rl.envs._reward import REWARD_MODES
from loss_rl.envs._terms import DEFAULT_PARAM_GRIDS, DEFAULT_TERMS, TERMS
from loss_rl.envs._vec_env import BatchedLossVecEnv

ENV_ID = "loss_rl/LossDesign-v0"

if ENV_ID not in gymnasium.registry:  # importing twice (or reloading) must not re-register
    gymnasium.register(
        id=ENV_ID,
        entry_point="loss_rl.envs._env:LossDesignEnv",
        # Run-level memory (best so far) and the evaluator's cache make a repeated step differ.
        nondeterministic=True,
    )


def _register_presets() -> None:
    # One id per shipped env preset, scored by the real evaluator of its task.
    from loss_rl.presets import list_presets

    for name in list_presets("envs"):
        env_id = f"loss_rl/{name}-v0"
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="loss_rl._search:make_env",
                               kwargs={"preset": name}, nondeterministic=True)  # fmt: skip


_register_presets()

__all__ = [
    "DEFAULT_PARAM_GRIDS",
    "DEFAULT_TERMS",
    "ENV_ID",
    "REWARD_MODES",
    "TERMS",
    "BatchedLossVecEnv",
    "EnvConfig",
    "LossDesignEnv",
    "RunStats",
    "TaskBinding",
    "TaskSchedule",
    "TaskSwitcher",
]
