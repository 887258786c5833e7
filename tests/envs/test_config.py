"""EnvConfig: defaults, round trips, and bad values that name the offending field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from loss_rl.envs import EnvConfig, LossDesignEnv
from loss_rl.errors import ConfigError
from loss_rl.expr import TaskKind


def test_defaults_and_round_trip() -> None:
    cfg = EnvConfig()
    assert cfg.space == "symbolic" and cfg.kind is TaskKind.CLASSIFICATION
    assert cfg.reward == "best_gain" and cfg.start_points == ("ce",)
    data = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))  # plain YAML data
    assert EnvConfig.from_dict(data) == cfg
    assert EnvConfig.from_dict(None) == cfg
    assert EnvConfig.from_dict({"kind": "regression"}).start_points == ("mse",)


def test_lists_become_tuples_and_overrides_round_trip() -> None:
    cfg = EnvConfig.from_dict(
        {
            "space": "parametric",
            "terms": ["ce", "gce"],
            "param_grids": {"q": [0.2, 0.8], "gce.q": [0.3, 0.7]},
            "start": "gce",
            "task_features": [0.5, -1.0],
        }
    )
    assert cfg.terms == ("ce", "gce") and cfg.start == ("gce",)
    assert cfg.param_grid("gce", "q") == (0.3, 0.7)
    assert EnvConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(max_steps=3).max_steps == 3


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"space": "tree"}, "env.space"),
        ({"kind": "ranking"}, "env.kind"),
        ({"max_stepz": 3}, "env.max_stepz"),
        ({"max_steps": 0}, "env.max_steps"),
        ({"max_steps": True}, "env.max_steps"),
        ({"min_steps": 5, "max_steps": 3}, "env.min_steps"),
        ({"max_size": 1}, "env.max_size"),
        ({"leaves": ["pred"]}, "env.leaves"),
        ({"leaves": "p_y"}, "env.leaves"),
        ({"ops": ["erf"]}, "env.ops"),
        ({"kind": "regression", "ops": ["sum_c"]}, "env.ops"),
        ({"constants": [1e9]}, "env.constants"),
        ({"on_reject": "bounce"}, "env.on_reject"),
        ({"terms": ["mse"]}, "env.terms"),
        ({"terms": ["ce", "ce"]}, "env.terms"),
        ({"weight_grid": [0.5, 1.0]}, "env.weight_grid"),
        ({"weight_grid": [0.0, 1.0, 0.5]}, "env.weight_grid"),
        ({"param_grids": {"q": [0.0, 0.5]}}, "env.param_grids.q"),
        ({"param_grids": {"zeta": [1.0]}}, "env.param_grids.zeta"),
        ({"param_grids": {"ce.q": [0.5]}}, "env.param_grids.ce.q"),
        ({"param_grids": {"gamma": "high"}}, "env.param_grids.gamma"),
        ({"start": ["nonsense("]}, "env.start"),
        ({"start": ["mse"]}, "env.start"),
        ({"start": ["p"]}, "env.start"),  # a per-class vector
        ({"start": ["log_p_y * 2"]}, ""),  # fine: valid structurally
        ({"start": ["taylor_glo"]}, "env.start"),  # 65 nodes > max_size
        ({"start": []}, "env.start"),
        ({"start": ["random"]}, "env.start"),
        ({"space": "parametric", "start": ["sce"]}, "env.start"),
        ({"space": "parametric", "start": ["smooth"]}, "env.start"),
        ({"start_mode": "shuffle"}, "env.start_mode"),
        ({"start_best_prob": 2.0}, "env.start_best_prob"),
        ({"evaluate_start": "yes"}, "env.evaluate_start"),
        ({"reward": "accuracy"}, "env.reward"),
        ({"best_scope": "forever"}, "env.best_scope"),
        ({"gain_clip": 0.0}, "env.gain_clip"),
        ({"invalid_penalty": -1.0}, "env.invalid_penalty"),
        ({"revisit_penalty": float("nan")}, "env.revisit_penalty"),
        ({"task_features": [100.0]}, "env.task_features"),
        ({"task_features": "abc"}, "env.task_features"),
    ],
)
def test_bad_config_names_the_field(data: dict[str, Any], field: str) -> None:
    if not field:
        EnvConfig.from_dict(data)
        return
    with pytest.raises(ConfigError) as info:
        EnvConfig.from_dict(data)
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_prefix_and_other_entry_points() -> None:
    with pytest.raises(ConfigError) as info:
        EnvConfig.from_dict({"reward": "x"}, prefix="env.space")
    assert info.value.field == "env.space.reward"
    with pytest.raises(ConfigError) as info:
        EnvConfig.from_dict(["space"])  # type: ignore[arg-type]
    assert info.value.field == "env"
    with pytest.raises(ConfigError, match=r"env\.space"):
        EnvConfig(space="tree")
    with pytest.raises(ConfigError, match=r"env\.max_size"):
        LossDesignEnv({"max_size": 0})
