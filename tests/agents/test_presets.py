"""Agent presets: shipped YAML resolves for every algorithm; bad presets name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from loss_rl.agents import ALGOS, AgentConfig
from loss_rl.errors import ConfigError
from loss_rl.presets import find_preset, list_presets, load_agent_config


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_every_algorithm_has_a_shipped_preset(algo: str) -> None:
    cfg = load_agent_config(algo, "digits_noisy")
    assert cfg.algo == algo and cfg.n_envs >= 1
    tiny = load_agent_config(algo, "tiny")
    assert tiny.n_envs <= cfg.n_envs  # the env section overrides `default`
    assert AgentConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_listing_and_unknown_names() -> None:
    assert {"dqn", "ppo", "maskable_ppo"} <= set(list_presets("agents"))
    with pytest.raises(ConfigError, match=r"unknown agent preset 'sac'.*available"):
        find_preset("agents", "sac")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"algo": "a2c"}, "agent.algo"),
        ({"algo": "ppo", "n_envs": 0}, "agent.n_envs"),
        ({"algo": "ppo", "learnin_rate": 0.1}, "agent.learnin_rate"),
        ({"algo": "dqn", "n_epochs": 8}, "agent.n_epochs"),
        ({"algo": "ppo", "seed": 3}, "agent.seed"),
    ],
)
def test_bad_agent_config_names_the_field(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        AgentConfig.from_dict(data)
    assert info.value.field == field


def test_agent_preset_from_a_path(tmp_path: Path) -> None:
    p = tmp_path / "mine.yaml"
    p.write_text("default:\n  algo: ppo\n  n_envs: 2\n  n_steps: 4\n")
    cfg = load_agent_config(p)
    assert cfg.algo == "ppo" and cfg.n_envs == 2 and cfg.hyperparams == {"n_steps": 4}
    p.write_text("default: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_agent_config(p)
