"""YAML presets → validated configs: env presets, task suites, agent presets, the MDP of each.

- ``envs/<name>.yaml``: an :class:`EnvPreset` (task, space, evaluation, verification, budget,
  executor), loaded by name or path with :func:`load_env_preset`;
- ``envs/suites/<name>.yaml``: a :class:`Suite` of tasks sharing one MDP; each task is also an
  env preset ``<suite>:<task>``;
- ``agents/<algo>.yaml``: an :class:`~loss_rl.agents.AgentConfig` via :func:`load_agent_config`;
- :func:`env_config` / :func:`run_env_config`: the MDP of a preset or of a run;
  :func:`make_env` and :func:`register_envs`: the gymnasium ids ``loss_rl/<preset>-v0``.
"""

from loss_rl.presets._env import (
    MAX_BUDGET,
    EnvPreset,
    EvaluationConfig,
    VerificationConfig,
    check_budget,
    load_env_file,
    parse_env_preset,
)
from loss_rl.presets._files import PresetKind, find_preset, list_presets, load_yaml, preset_dirs
from loss_rl.presets._load import load_agent_config, load_env_preset
from loss_rl.presets._mdp import (
    DEFAULT_ENV,
    ENV_ID,
    env_config,
    make_env,
    register_envs,
    run_env_config,
    task_features,
)
from loss_rl.presets._suite import (
    Suite,
    find_suite,
    list_suites,
    load_suite,
    load_suite_task,
    parse_suite,
    suite_dirs,
)
from loss_rl.presets._trust import TRUST_HINT, code_of, require_code_trust

__all__ = [
    "DEFAULT_ENV",
    "ENV_ID",
    "MAX_BUDGET",
    "TRUST_HINT",
    "EnvPreset",
    "EvaluationConfig",
    "PresetKind",
    "Suite",
    "VerificationConfig",
    "check_budget",
    "code_of",
    "env_config",
    "find_preset",
    "find_suite",
    "list_presets",
    "list_suites",
    "load_agent_config",
    "load_env_file",
    "load_env_preset",
    "load_suite",
    "load_suite_task",
    "load_yaml",
    "make_env",
    "parse_env_preset",
    "parse_suite",
    "preset_dirs",
    "register_envs",
    "require_code_trust",
    "run_env_config",
    "suite_dirs",
    "task_features",
]
