"""TaskConfig: strict validation with dotted fields, YAML round trips."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from loss_rl.errors import ConfigError
from loss_rl.expr import TaskKind
from loss_rl.tasks import TaskConfig

GOOD: list[dict[str, Any]] = [
    {},
    {"dataset": "digits", "corruption": {"kind": "symmetric", "rate": 0.4}},
    {
        "dataset": {"name": "wine"},
        "corruption": {"kind": "pairflip", "rate": 0.2},
        "split": {"val": 30, "test": 0.25, "stratify": False},
    },
    {
        "dataset": "iris",
        "corruption": {"kind": "imbalance", "ratio": 10},
        "model": {"kind": "linear"},
        "metric": "balanced_accuracy",
    },
    {
        "dataset": "breast_cancer",
        "corruption": {"kind": "subsample", "per_class": 20},
        "training": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    },
    {
        "dataset": "diabetes",
        "corruption": {"kind": "subsample", "fraction": 0.5},
        "model": {"widths": [32], "activation": "tanh"},
        "metric": "neg_mae",
    },
    {
        "dataset": {"name": "mnist1d", "num_samples": 1000},
        "model": {"kind": "cnn1d", "channels": [8, 8], "kernel_sizes": [5, 3]},
        "training": {"steps": 100, "full_steps": 500, "patience": 3, "eval_every": 20},
    },
    {
        "dataset": {
            "name": "synthetic_classification",
            "num_classes": 3,
            "num_features": 8,
            "num_informative": 4,
            "seed": 7,
        }
    },
    {"dataset": {"name": "synthetic_regression", "noise": 0.5}, "metric": "neg_mse"},
]


@pytest.mark.parametrize("data", GOOD)
def test_round_trip_through_yaml(data: dict[str, Any]) -> None:
    cfg = TaskConfig.from_dict(data)
    text = yaml.safe_dump(cfg.to_dict())
    assert TaskConfig.from_dict(yaml.safe_load(text)) == cfg


def test_defaults_and_kind() -> None:
    cfg = TaskConfig.from_dict({})
    assert cfg.dataset.name == "digits"
    assert cfg.kind is TaskKind.CLASSIFICATION
    assert cfg.score_metric == "accuracy"
    reg = TaskConfig.from_dict({"dataset": "diabetes"})
    assert reg.kind is TaskKind.REGRESSION
    assert reg.score_metric == "r2"


BAD: list[tuple[Any, str]] = [
    ({"dataset": "imagenet"}, "task.dataset.name"),
    ({"dataset": {"name": "digits", "num_classes": 3}}, "task.dataset.num_classes"),
    (
        {"dataset": {"name": "synthetic_classification", "num_classes": 1}},
        "task.dataset.num_classes",
    ),
    ({"datasett": "digits"}, "task.datasett"),
    ({"corruption": {"kind": "symmetric"}}, "task.corruption.rate"),
    ({"corruption": {"kind": "symmetric", "rate": 1.0}}, "task.corruption.rate"),
    ({"corruption": {"kind": "symmetric", "rate": -0.1}}, "task.corruption.rate"),
    ({"corruption": {"kind": "pairflip", "rate": 0.5}}, "task.corruption.rate"),
    ({"corruption": {"kind": "imbalance", "ratio": 0.5}}, "task.corruption.ratio"),
    ({"corruption": {"kind": "symmetric", "rate": 0.2, "ratio": 3}}, "task.corruption.ratio"),
    ({"corruption": {"kind": "subsample", "fraction": 0.0}}, "task.corruption.fraction"),
    ({"corruption": {"kind": "subsample"}}, "task.corruption.fraction"),
    ({"corruption": {"kind": "subsample", "per_class": 0}}, "task.corruption.per_class"),
    ({"corruption": {"kind": "flip"}}, "task.corruption.kind"),
    ({"split": {"val": 0.6, "test": 0.5}}, "task.split.val"),
    ({"split": {"val": 0}}, "task.split.val"),
    ({"split": {"test": 1.5}}, "task.split.test"),
    ({"model": {"widths": [64, 0]}}, "task.model.widths[1]"),
    ({"model": {"widths": [-3]}}, "task.model.widths[0]"),
    ({"model": {"widths": "64"}}, "task.model.widths"),
    ({"model": {"kind": "transformer"}}, "task.model.kind"),
    ({"model": {"kind": "linear", "widths": [8]}}, "task.model.widths"),
    ({"model": {"activation": "swish"}}, "task.model.activation"),
    (
        {"model": {"kind": "cnn1d", "channels": [4], "kernel_sizes": [3, 3]}},
        "task.model.kernel_sizes",
    ),
    ({"training": {"lr": 0}}, "task.training.lr"),
    ({"training": {"lr": "fast"}}, "task.training.lr"),
    ({"training": {"steps": 10, "full_steps": 5}}, "task.training.full_steps"),
    ({"training": {"batch_size": True}}, "task.training.batch_size"),
    ({"training": {"momentum": 0.9}}, "task.training.momentum"),
    ({"training": {"optimizer": "sgd", "beta1": 0.8}}, "task.training.beta1"),
    ({"training": {"optimizer": "rmsprop"}}, "task.training.optimizer"),
    ({"metric": "r2"}, "task.metric"),
    (
        {"dataset": "diabetes", "corruption": {"kind": "pairflip", "rate": 0.2}},
        "task.corruption.kind",
    ),
    (
        {"dataset": "diabetes", "corruption": {"kind": "subsample", "per_class": 5}},
        "task.corruption.per_class",
    ),
    ([1, 2], "task"),
    ({"model": 3}, "task.model"),
]


@pytest.mark.parametrize(("data", "field"), BAD)
def test_bad_input_names_the_field(data: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        TaskConfig.from_dict(data)
    assert info.value.field == field
    assert field in str(info.value)


def test_direct_construction_is_validated_too() -> None:
    from loss_rl.tasks import CorruptionConfig, ModelConfig

    with pytest.raises(ConfigError, match=r"task\.corruption\.rate"):
        CorruptionConfig(kind="symmetric", rate=2.0)
    with pytest.raises(ConfigError, match=r"task\.model\.widths\[0\]"):
        ModelConfig(widths=(0,))
