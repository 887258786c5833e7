"""Loading presets by name: env presets (suite tasks included) and agent presets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from loss_rl.errors import ConfigError
from loss_rl.output_paths import existing
from loss_rl.presets._env import EnvPreset, load_env_file
from loss_rl.presets._files import find_preset, load_yaml
from loss_rl.presets._suite import load_suite_task

if TYPE_CHECKING:
    from loss_rl.agents import AgentConfig


def load_env_preset(name_or_path: str | Path) -> EnvPreset:
    """Load and validate ``envs/<name>.yaml``, a YAML path, or a suite task ``<suite>:<task>``."""
    text = str(name_or_path)
    if ":" in text and existing(Path(text)) is None and not text.endswith((".yaml", ".yml")):
        return load_suite_task(text)
    return load_env_file(name_or_path)


def load_agent_config(name_or_path: str | Path, env_name: str = "default") -> AgentConfig:
    """Resolve an agent preset (``agents/<algo>.yaml``, rl-zoo3 style) for an env preset.

    The ``default`` section applies to every env; a section named after the env preset
    overrides it.

    Args:
        name_or_path: ``dqn`` | ``ppo`` | ``maskable_ppo`` | ``risk_seeking_ppo`` (shipped
            presets) or a YAML path.
        env_name: Env preset name whose section overrides ``default`` (for a suite task
            ``<suite>:<task>``, the suite's section applies first).

    Raises:
        ConfigError: for an unknown name, bad YAML or invalid hyper-parameters.
    """
    # Imported here: SB3 is loaded when an agent is configured, not by `import loss_rl`.
    from loss_rl.agents import AgentConfig

    path = find_preset("agents", name_or_path)
    data = load_yaml(path, "agent")
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"section {section!r} must be a mapping", field="agent")
    # A suite task "<suite>:<task>" takes its suite's section, then its own.
    suite = env_name.split(":", 1)[0] if ":" in env_name else None
    merged: dict[str, Any] = {
        **data.get("default", {}),
        **(data.get(suite, {}) if suite else {}),
        **data.get(env_name, {}),
    }
    merged.setdefault("algo", path.stem)
    return AgentConfig.from_dict(merged, source=str(path))
