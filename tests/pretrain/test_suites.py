"""Task suites: loading, per-task presets, and the errors users hit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loss_rl.errors import ConfigError
from loss_rl.presets import list_suites, load_env_preset, load_suite

TASK = {
    "dataset": {"name": "iris"},
    "corruption": {"kind": "none"},
    "split": {"val": 0.25, "test": 0.25},
    "model": {"kind": "mlp", "widths": [8]},
    "training": {"steps": 30, "full_steps": 40},
}


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_shipped_suites_load_with_one_kind_and_shared_space() -> None:
    assert {"classification", "tiny"} <= set(list_suites())
    s = load_suite("classification")
    assert len(s.tasks) >= 6
    assert s.kind == "classification"
    # A preset task is the env preset's task exactly (the transfer benchmark relies on it).
    assert s.task("digits_sym40").task == load_env_preset("digits_noisy").task
    assert all(p.space == s.space for p in s.tasks.values())
    assert s.task("digits_pair30").task.corruption.kind == "pairflip"


def test_defaults_merge_under_inline_tasks_and_corruption_replaces_whole() -> None:
    s = load_suite("classification")
    t = s.task("digits_linear_sym40").task
    assert t.model.kind == "linear"  # the task's model replaces the default MLP
    assert t.training.steps == 200  # from defaults
    assert t.corruption.rate == 0.4


def test_a_suite_task_is_an_env_preset_by_name() -> None:
    p = load_env_preset("tiny:wine_sym30")
    assert p.name == "tiny:wine_sym30"
    assert p.task.dataset.name == "wine"
    with pytest.raises(ConfigError, match=r"no task 'nope'.*iris_sym20"):
        load_env_preset("tiny:nope")


def test_without_leaves_tasks_out_and_refuses_fewer_than_two() -> None:
    s = load_suite("tiny")
    assert list(s.without(["wine_clean"]).tasks) == ["iris_sym20", "iris_clean", "wine_sym30"]
    assert "wine_clean" in s.tasks  # the original is untouched
    with pytest.raises(ConfigError, match="at least two"):
        s.without(["iris_sym20", "iris_clean", "wine_sym30"])


def test_suite_round_trips_through_to_dict() -> None:
    from loss_rl.presets import parse_suite

    s = load_suite("tiny")
    again = parse_suite(s.to_dict(), s.name)
    assert {k: v.task for k, v in again.tasks.items()} == {k: v.task for k, v in s.tasks.items()}
    assert again.pretrain_space == s.pretrain_space


@pytest.mark.parametrize(
    ("data", "field", "hint"),
    [
        ({"tasks": {"a": TASK}}, "suite.tasks", "at least two tasks"),
        (
            {
                "tasks": {
                    "a": TASK,
                    "b": {**TASK, "dataset": {"name": "diabetes"}, "metric": "neg_mse"},
                }
            },
            "suite.tasks",
            "mixes task kinds",
        ),
        (
            {"tasks": {"a": TASK, "b": {**TASK, "dataset": {"name": "digitz"}}}},
            "suite.tasks.b.dataset.name",
            "unknown dataset",
        ),
        (
            {"tasks": {"a": TASK, "b": TASK}, "pretrain_space": {"terms": ["ce"]}},
            "suite.pretrain_space",
            "layout",
        ),
        ({"tasks": {"a": TASK, "b": TASK}, "colour": 1}, "suite.colour", "unknown key"),
        ({"tasks": {"a": TASK, "b": {"preset": "tiny", "model": {}}}}, "suite.tasks.b", "preset"),
    ],
)
def test_bad_suites_name_the_field(tmp_path: Path, data: dict, field: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=hint) as err:
        load_suite(_write(tmp_path, data))
    assert err.value.field == field


def test_unknown_suite_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="classification"):
        load_suite("nope")
