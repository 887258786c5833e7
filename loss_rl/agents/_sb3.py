"""Stable-Baselines3 agents (DQN, PPO, MaskablePPO): their config, construction, save and load.

An agent preset ``agents/<algo>.yaml`` (read by :func:`loss_rl.presets.load_agent_config`) maps
env preset names to hyper-parameters; the ``default`` section applies to every env and a section
named after the env preset overrides it::

    default:
      n_envs: 8           # environments stepped together (one evaluator batch per step)
      policy: MlpPolicy
      learning_rate: 3.0e-4
    digits_noisy:
      ent_coef: 0.02

Every other key is passed to the SB3 constructor and validated against its signature.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from loss_rl.errors import ConfigError
from loss_rl.schema import check_choice, check_int, check_keys, fail

try:
    from sb3_contrib import MaskablePPO
except ImportError:  # pragma: no cover - sb3-contrib is a declared dependency
    MaskablePPO = None  # type: ignore[assignment,misc]

ALGOS: dict[str, type[BaseAlgorithm]] = {"dqn": DQN, "ppo": PPO}
if MaskablePPO is not None:
    ALGOS["maskable_ppo"] = MaskablePPO

# Keys owned by loss_rl (not passed to SB3).
_OWN_KEYS = {"algo", "n_envs", "policy"}
# SB3 constructor arguments that the search sets itself.
_RESERVED = {"env", "seed", "tensorboard_log", "verbose", "device", "_init_setup_model"}


@dataclass
class AgentConfig:
    """A resolved agent preset.

    Attributes:
        algo: ``dqn`` | ``ppo`` | ``maskable_ppo`` (SB3 agents) or ``random`` | ``evolution`` |
            ``optuna`` (baselines).
        n_envs: Environments stepped together (candidates per evaluator batch).
        policy: SB3 policy name.
        hyperparams: Remaining SB3 constructor arguments.
        source: Where the preset came from.
    """

    algo: str
    n_envs: int = 8
    policy: str = "MlpPolicy"
    hyperparams: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def is_baseline(self) -> bool:
        """Whether this is a non-RL baseline searcher (random, evolution, optuna)."""
        return self.algo not in ALGOS

    @property
    def min_budget(self) -> int:
        """Fewest inner trainings with which the agent learns at all.

        PPO updates its policy after ``n_steps × n_envs`` proposals and DQN starts learning after
        ``learning_starts`` transitions; a smaller budget would end before either (each proposal
        costs at most one training, so this many trainings guarantee that many proposals).
        """
        import inspect

        if self.is_baseline:
            return 1
        params = inspect.signature(ALGOS[self.algo].__init__).parameters
        if self.algo == "dqn":
            starts = self.hyperparams.get("learning_starts", params["learning_starts"].default)
            return max(int(starts), self.n_envs)
        n_steps = self.hyperparams.get("n_steps", params["n_steps"].default)
        return int(n_steps) * self.n_envs

    @property
    def uses_masks(self) -> bool:
        """Whether the algorithm consumes ``action_masks()``."""
        return self.algo == "maskable_ppo"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``config.yaml``."""
        out: dict[str, Any] = {"algo": self.algo, "n_envs": self.n_envs}
        if not self.is_baseline:
            out["policy"] = self.policy
        return {**out, **self.hyperparams}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> AgentConfig:
        """Validate a flat mapping (``algo`` plus hyper-parameters).

        Raises:
            ConfigError: naming the field for an unknown algorithm, key or bad value.
        """
        from loss_rl.agents.baselines import BASELINES, baseline_options

        data = dict(data)
        algo = str(data.pop("algo", ""))
        check_choice(
            algo,
            "agent.algo",
            [*ALGOS, *BASELINES],
            "unknown agent {value!r}; choose one of {choices}",
        )
        n_envs = data.pop("n_envs", 8)
        check_int(n_envs, "agent.n_envs", 1, message="must be an integer >= 1, got {value!r}")
        if algo in BASELINES:
            baseline_options(algo, data)  # validates
            return cls(algo, n_envs, "", data, source)
        policy = data.pop("policy", "MlpPolicy")
        if not isinstance(policy, str):
            fail("agent.policy", "must be a policy name such as MlpPolicy")
        # The SB3 constructor's own arguments, less those the search sets itself.
        params = set(inspect.signature(ALGOS[algo].__init__).parameters)
        allowed = sorted(params - _RESERVED - {"self", "policy"})
        check_keys(
            data,
            allowed,
            "agent",
            f"{algo} takes no hyper-parameter {{key!r}}; allowed: {{allowed}}",
        )
        return cls(algo, n_envs, policy, data, source)


def make_agent(
    config: AgentConfig, env: VecEnv, *, seed: int = 0, tensorboard_log: str | None = None
) -> BaseAlgorithm:
    """Build a fresh SB3 agent on ``env`` from ``config``."""
    cls = ALGOS[config.algo]
    try:
        return cls(config.policy, env, seed=seed, verbose=0, device="cpu",
                   tensorboard_log=tensorboard_log, **config.hyperparams)  # fmt: skip
    except (TypeError, ValueError, AssertionError) as err:
        raise ConfigError(f"{config.algo} rejected its hyper-parameters: {err}", "agent") from err


AGENT_FILE = "agent.zip"
REPLAY_FILE = "replay_buffer.pkl"


def save_agent(model: BaseAlgorithm, folder: Path) -> None:
    """Write ``folder/agent.zip`` (and DQN's replay buffer) atomically: a kill mid-write never
    leaves half a file, so an interrupted run resumes from its last checkpoint."""
    tmp = folder / "agent.tmp.zip"
    model.save(str(tmp))
    os.replace(tmp, folder / AGENT_FILE)
    if hasattr(model, "save_replay_buffer"):
        tmp_buffer = folder / "replay_buffer.tmp.pkl"
        model.save_replay_buffer(str(tmp_buffer))
        os.replace(tmp_buffer, folder / REPLAY_FILE)


def load_agent(algo: str, path: str | Path, env: VecEnv | None = None) -> BaseAlgorithm:
    """Load a saved agent (``agent.zip``), attaching ``env`` when given."""
    if algo not in ALGOS:
        raise ConfigError(f"unknown algorithm {algo!r}", field="agent.algo")
    return ALGOS[algo].load(str(path), env=env, device="cpu")
