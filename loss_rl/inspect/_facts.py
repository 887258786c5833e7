"""Run facts: what a run folder holds, which policy it used, and the MDP it was searched in.

Every read of a run's ``config.yaml`` by the inspection goes through here. Ledger views and
plots must work on any run folder, also an interrupted one or one from a newer loss_rl, so they
read the raw mapping (:attr:`loss_rl.store.Run.config`) leniently; rebuilding the policy's MDP
needs a config this version understands (:class:`loss_rl.store.RunConfig`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from loss_rl.errors import LossRLError, RunError
from loss_rl.store import AGENT_ZIP, CONFIG_VERSION, Run

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

    from loss_rl.agents import AgentConfig
    from loss_rl.envs import EnvConfig
    from loss_rl.presets import EnvPreset

AGENT_FILE = AGENT_ZIP


def env_preset(run: Run) -> EnvPreset:
    """The run's env preset, validated (task, space, evaluation settings).

    Raises:
        KeyError: if the config has no ``env``.
        ConfigError: if the preset does not validate.
    """
    from loss_rl.presets import parse_env_preset

    if not run.env:
        raise KeyError("env")
    return parse_env_preset(run.env, run.env_name or "")


def is_baseline(run: Run) -> bool:
    """Whether the run's agent is a non-RL baseline (random, evolution, optuna): no policy."""
    from loss_rl.agents import ALGOS

    return str(run.algo) not in ALGOS


def missing(run: Run) -> list[str]:
    """What this run lacks for a full inspection, as sentences (empty for a complete run)."""
    notes = []
    version = run.config_version
    if version > CONFIG_VERSION:
        notes.append(
            f"config.yaml was written by a newer loss_rl (config version {version}, this one "
            f"reads {CONFIG_VERSION}): policy inspection skipped; ledger views still shown"
        )
    if run.summary is None:
        notes.append(
            "no summary.json: the run was interrupted (or is still running); counts come from "
            "the ledger, wall time from its timestamps, and there is no verification table"
        )
    elif run.summary.get("status") != "finished":
        notes.append(f"the run's status is {run.summary.get('status')!r}: resume it to finish")
    elif not run.summary.get("verification"):
        notes.append("no verification table in summary.json (verification was skipped)")
    if is_baseline(run):
        notes.append(
            f"no policy: {run.algo} is a baseline searcher, it has no agent.zip to inspect"
        )
    elif policy_file(run) is None:
        notes.append("no agent.zip: the run stopped before its first checkpoint; no policy")
    return notes


def policy_file(run: Run) -> Path | None:
    """The policy a run used: its ``agent.zip``, or for a ``--no-train`` rollout the policy it
    rolled out (``config.init_agent``, e.g. a pretrained one); ``None`` if there is none."""
    if is_baseline(run):
        return None
    own = run.path / AGENT_FILE
    if own.is_file():
        return own
    try:
        config = run.run_config
    except RunError:
        return None
    if config.init_agent and not config.train and Path(config.init_agent).is_file():
        return Path(config.init_agent)
    return None


def load_policy(run: Run) -> BaseAlgorithm | None:
    """The SB3 agent of ``run`` (see :func:`policy_file`; ``None`` for baselines or without one).

    The policy is read as data (:func:`loss_rl.agents.load_agent`): the agent is rebuilt from
    its agent config on the run's MDP (an env without evaluator: enough to predict), so opening
    someone else's run folder runs none of its code.

    Raises:
        RunError: if the policy file exists but cannot be loaded, or the MDP cannot be rebuilt.
        ConfigError: if the agent config of the policy does not validate.
    """
    path = policy_file(run)
    if path is None:
        return None
    from stable_baselines3.common.vec_env import DummyVecEnv

    from loss_rl.agents import load_agent
    from loss_rl.envs import LossDesignEnv

    cfg = env_config(run)
    agent = _policy_agent_config(run, path)
    # As many envs as the agent trained with: SB3 checks its batch sizes against that count.
    vec = DummyVecEnv([lambda: LossDesignEnv(cfg)] * agent.n_envs)
    try:
        return load_agent(agent, path, vec)
    except LossRLError:
        raise
    except Exception as err:  # a truncated or foreign zip, or weights of another layout
        raise RunError(f"{path} cannot be loaded: {err}") from err


def _policy_agent_config(run: Run, path: Path) -> AgentConfig:
    """The agent config ``path`` was trained with: the run's own, or for a ``--no-train``
    rollout of another policy, the one on that policy's card (a pretrained policy's)."""
    from loss_rl.agents import AgentConfig
    from loss_rl.agents.cards import read_card

    if path != run.path / AGENT_FILE:
        card = read_card(path)
        if card is not None and isinstance(card.get("agent"), dict):
            return AgentConfig.from_dict(card["agent"], source=str(path))
    return AgentConfig.from_dict(run.run_config.agent, source=str(run.path))


def env_config(run: Run) -> EnvConfig:
    """The MDP the run's agent saw (the preset's space and the task descriptor it recorded).

    Raises:
        RunError: if the config is from a newer loss_rl or cannot rebuild the MDP.
    """
    from loss_rl.presets import run_env_config

    try:
        return run_env_config(run.run_config)
    except LossRLError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise RunError(f"{run.path}/config.yaml cannot rebuild the MDP: {err}") from err


def reward_config(run: Run) -> EnvConfig | None:
    """The MDP config without the task descriptor (no dataset load); ``None`` if unreadable."""
    from loss_rl.envs import EnvConfig

    try:
        preset = env_preset(run)
        space = {**preset.space, "kind": preset.task.kind.value}
        return EnvConfig.from_dict(space, prefix="env.space")
    except (LossRLError, KeyError, TypeError, ValueError):
        return None
