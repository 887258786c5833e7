"""Continuing a population from saved states equals training it straight through."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from loss_rl.errors import ConfigError
from loss_rl.expr import known_loss, parse
from loss_rl.tasks import TaskConfig
from loss_rl.training import TrainResult, states_from_bytes, states_to_bytes, train

LOSSES = [known_loss("ce"), known_loss("focal"), parse("-log(p_y + 0.1)")]
SEEDS = [0, 1]


def _task(**training: Any) -> TaskConfig:
    return TaskConfig.from_dict(
        {
            "dataset": "wine",
            "corruption": {"kind": "symmetric", "rate": 0.4},
            "model": {"widths": [16]},
            "training": {"batch_size": 32, "lr": 0.02, **training},
        }
    )


def _same(a: list[TrainResult], b: list[TrainResult]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.candidate, x.seed, x.status, x.steps) == (y.candidate, y.seed, y.status, y.steps)
        assert x.selected_step == y.selected_step
        assert x.score == pytest.approx(y.score, rel=1e-5, abs=1e-6)
        for name, value in x.metrics["val"].items():
            assert y.metrics["val"][name] == pytest.approx(value, rel=1e-4, abs=1e-5), name


@pytest.mark.parametrize(
    "training",
    [
        {"select": "last"},
        {"select": "best", "eval_every": 10},  # rung 25 is off the check grid
        {"select": "best", "eval_every": 5, "patience": 5},
        {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "lr": 0.05},
    ],
)
def test_continuing_from_a_rung_equals_training_straight_through(training: dict[str, Any]) -> None:
    task = _task(**training)
    straight = train(LOSSES, task, 60, SEEDS, workers=0)
    rung0 = train(LOSSES, task, 25, SEEDS, workers=0, keep_state=True)
    assert all(r.state is not None and r.state.step == 25 for r in rung0)
    states = [r.state for r in rung0]
    resumed = train(LOSSES, task, 60, SEEDS, workers=0, start=states, keep_state=True)  # type: ignore[arg-type]
    _same(straight, resumed)
    # The continuation trained 35 steps on top of the states, not 35 steps from scratch.
    fresh = train(LOSSES, task, 35, SEEDS, workers=0, keep_state=True)
    moved = 0
    for r, f in zip(resumed, fresh, strict=True):
        assert r.state is not None and f.state is not None and r.state.step == 60
        # (A model early stopping has stopped moving, so only the others can tell.)
        if r.state.stopped_at is None or r.state.stopped_at > 35:
            assert not torch.equal(r.state.params[0], f.state.params[0])
            moved += 1
    assert moved or "patience" in training


def test_promoting_a_subset_through_bytes_and_workers_equals_straight() -> None:
    task = _task(select="best", eval_every=10)
    straight = train(LOSSES, task, 50, SEEDS, workers=0)
    rung0 = train(LOSSES, task, 20, SEEDS, workers=0, keep_state=True)
    keep = [2, 0]  # a different batch, in another order: rows are matched by candidate
    blob = states_to_bytes([r.state for c in keep for r in rung0[c * 2 : c * 2 + 2]])  # type: ignore[misc]
    start = states_from_bytes(blob)
    resumed = train([LOSSES[c] for c in keep], task, 50, SEEDS, workers=2, start=start)
    for k, c in enumerate(keep):
        want = straight[c * 2 : c * 2 + 2]
        got = [TrainResult(**{**vars(r), "candidate": c}) for r in resumed[k * 2 : k * 2 + 2]]
        _same(want, got)


def test_bad_states_raise_config_errors() -> None:
    task = _task()
    rung0 = train(LOSSES[:1], task, 10, SEEDS, workers=0, keep_state=True)
    states = [r.state for r in rung0]
    with pytest.raises(ConfigError):
        train(LOSSES[:1], task, 5, SEEDS, workers=0, start=states)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        train(LOSSES[:1], task, 20, SEEDS, workers=0, start=states[:1])  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        states_from_bytes(b"not a state")
