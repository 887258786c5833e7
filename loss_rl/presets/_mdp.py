"""From presets to the MDP: the env config of a preset or a run, and the gymnasium ids.

Importing this module imports neither gymnasium's envs nor SB3: the env and evaluator are
imported when an env is made, so that ``import loss_rl`` can register the ids cheaply.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium

from loss_rl.presets._env import EnvPreset, parse_env_preset
from loss_rl.presets._files import list_presets
from loss_rl.presets._load import load_env_preset
from loss_rl.tasks import TaskConfig

if TYPE_CHECKING:
    from loss_rl.envs import EnvConfig, LossDesignEnv
    from loss_rl.store import RunConfig

DEFAULT_ENV = "synthetic_noisy"
"""The env preset of ``loss-rl search`` without ``--env``."""

ENV_ID = "loss_rl/LossDesign-v0"
"""Gymnasium id of the bare MDP (kwargs ``config`` and ``evaluator``)."""


def task_features(task: TaskConfig, data_seed: int = 0) -> list[float]:
    """The task descriptor without landmarks (see :mod:`loss_rl.descriptors`)."""
    from loss_rl.descriptors import meta_features

    return meta_features(task, data_seed)


def env_config(preset: EnvPreset, features: list[float] | None = None) -> EnvConfig:
    """The MDP configuration of an env preset: its space, the task's kind and descriptor.

    Args:
        preset: The env preset.
        features: A task descriptor measured by a run (landmarks included), used instead of the
            preset's own and of the meta-features alone.
    """
    from loss_rl.envs import EnvConfig

    space = {**preset.space, "kind": preset.task.kind.value}
    if features:
        space["task_features"] = list(features)
    elif "task_features" not in space:
        space["task_features"] = task_features(preset.task, preset.evaluation.data_seed)
    return EnvConfig.from_dict(space, prefix="env.space")


def run_env_config(config: RunConfig) -> EnvConfig:
    """The MDP a search run's agent saw: the preset's space and the descriptor it recorded."""
    return env_config(parse_env_preset(config.env, config.env_name), config.task_features)


def make_env(preset: str | Path = DEFAULT_ENV, **kwargs: Any) -> LossDesignEnv:
    """A :class:`~loss_rl.envs.LossDesignEnv` for an env preset, scored by the real evaluator.

    This is the entry point of the gymnasium ids ``loss_rl/<preset>-v0`` (e.g.
    ``gymnasium.make("loss_rl/digits_noisy-v0")``). Evaluations are cached in memory only; a
    preset's ``evaluation.fidelity`` (ASHA rungs) applies as in a search, its saved states kept
    in memory.
    """
    from loss_rl.envs import LossDesignEnv
    from loss_rl.evaluation import Evaluator
    from loss_rl.executors import make_executor

    p = load_env_preset(preset)
    executor = make_executor(p.executor)
    if p.executor is not None and p.executor.name == "ray":
        executor.start()  # type: ignore[attr-defined]  # connect now: fail here, not in a reward
    evaluator = Evaluator(
        p.task,
        seeds=p.evaluation.seeds,
        data_seed=p.evaluation.data_seed,
        executor=executor,
        fidelity=p.evaluation.fidelity,
    )
    return LossDesignEnv(env_config(p), evaluator=evaluator, **kwargs)


def register_envs() -> None:
    """Register ``loss_rl/LossDesign-v0`` and one ``loss_rl/<preset>-v0`` per shipped env preset.

    Called by ``import loss_rl``; registering twice (or after a reload) is a no-op.
    """
    # Run-level memory (best so far) and the evaluator's cache make a repeated step differ.
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(
            id=ENV_ID, entry_point="loss_rl.envs:LossDesignEnv", nondeterministic=True
        )
    for name in list_presets("envs"):
        env_id = f"loss_rl/{name}-v0"
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point="loss_rl.presets:make_env",
                kwargs={"preset": name},
                nondeterministic=True,
            )
