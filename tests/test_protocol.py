"""The honest protocol: checkpoint selection, tuned references that never see test, the verdict.

Checkpoint selection is checked against its definition: a training with ``select: best`` ends
with the parameters of its best validation check, which are the parameters of the same
training stopped at that step (minibatch schedules and optimiser states are prefixes of longer
ones), so each check's score is measured independently by training to that step with
``select: last``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pytest

from loss_rl.evaluation import InProcessExecutor
from loss_rl.expr import known_loss, parse
from loss_rl.presets import load_env_preset
from loss_rl.store import RunConfig
from loss_rl.store._config import CONFIG_VERSION
from loss_rl.tasks import TaskConfig
from loss_rl.training import TrainResult, train, train_reference
from loss_rl.verify import verify

# Digits with 40 % symmetric noise and a high learning rate: CE memorises the wrong labels, so
# its validation accuracy peaks early and then falls — the case checkpoint selection is for.
NOISY = {
    "dataset": {"name": "digits"},
    "corruption": {"kind": "symmetric", "rate": 0.4, "val": "clean"},
    "model": {"kind": "mlp", "widths": [32]},
    "training": {"lr": 0.03, "steps": 160, "full_steps": 160, "eval_every": 20},
}


def _task(**training: object) -> TaskConfig:
    return TaskConfig.from_dict({**NOISY, "training": {**NOISY["training"], **training}})


def test_selection_keeps_the_best_validation_checkpoint() -> None:
    seeds = [0, 1]
    best = train([known_loss("ce")], _task(), 160, seeds, splits=("val", "test"), workers=0)
    checks = list(range(20, 161, 20))
    by_step = {
        k: train(
            [known_loss("ce")], _task(select="last"), k, seeds, splits=("val", "test"), workers=0
        )
        for k in checks
    }
    picked_early = False
    for i, seed in enumerate(seeds):
        val = [by_step[k][i].metrics["val"]["accuracy"] for k in checks]
        want = checks[int(np.argmax(val))]  # argmax: the earliest on a tie, as the trainer
        r = best[i]
        assert r.seed == seed and r.selected_step == want
        assert r.score == pytest.approx(max(val), abs=1e-9)
        # Test is reported at the selected checkpoint, not at the last step.
        assert r.metrics["test"] == pytest.approx(by_step[want][i].metrics["test"], abs=1e-9)
        picked_early |= want < 160
    # The constructed case must exercise selection: some seed peaks before the last step.
    assert picked_early
    assert all(r.selected_step is None for r in by_step[160])


def test_selection_beats_or_equals_the_last_step_on_validation() -> None:
    exprs = [known_loss("ce"), known_loss("gce")]
    best = train(exprs, _task(), 160, [0, 1, 2], workers=0)
    last = train(exprs, _task(select="last"), 160, [0, 1, 2], workers=0)
    for b, lst in zip(best, last, strict=True):
        assert b.score is not None and lst.score is not None
        assert b.score >= lst.score - 1e-12


def test_the_plain_loop_selects_the_same_checkpoint() -> None:
    task = _task()
    batched = train([known_loss("ce")], task, 160, [3], splits=("val", "test"), workers=0)[0]
    _, plain = train_reference(known_loss("ce"), task, 160, 3, splits=("val", "test"))
    assert plain["val"]["accuracy"] == pytest.approx(batched.metrics["val"]["accuracy"], abs=1e-6)
    assert plain["test"]["accuracy"] == pytest.approx(batched.metrics["test"]["accuracy"], abs=1e-6)


def test_patience_needs_selection() -> None:
    from loss_rl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"task\.training\.patience"):
        _task(select="last", patience=2)


class _Scrambled:
    """An executor whose *test* metrics are nonsense: tuning must not notice them."""

    def __init__(self, shift: float) -> None:
        self.inner = InProcessExecutor()
        self.shift = shift

    def run(
        self,
        candidates: Sequence[object],
        task: TaskConfig,
        steps: int,
        seeds: Sequence[int],
        data_seed: int | None,
        splits: Sequence[str] = ("val",),
    ) -> list[TrainResult]:
        out = self.inner.run(candidates, task, steps, seeds, data_seed, splits=splits)
        rng = np.random.default_rng(int(self.shift * 1000))
        scrambled = []
        for r in out:
            if r.status != "ok":
                scrambled.append(r)
                continue
            test = {k: float(rng.uniform()) for k in r.metrics["test"]}
            metrics = {**r.metrics, "test": test}
            scrambled.append(dataclasses.replace(r, metrics=metrics, score=test["accuracy"]))
        return scrambled


def test_reference_tuning_never_looks_at_test() -> None:
    task = _task(steps=60, full_steps=60)
    refs = ["ce", "gce", "focal"]
    kwargs = {"seeds": 2, "references": refs, "data_seed": 0}
    honest = verify({}, task, **kwargs)
    a = verify({}, task, executor=_Scrambled(0.1), **kwargs)
    b = verify({}, task, executor=_Scrambled(0.7), **kwargs)
    # Same choices whatever the test scores say ...
    assert honest.attrs["tuning"] == a.attrs["tuning"] == b.attrs["tuning"]
    # ... while the test scores did reach the table (the scrambling is not a no-op).
    assert not np.allclose(honest.sort_values("loss")["mean"], a.sort_values("loss")["mean"])
    # Every grid point trained on every seed, and the count says so.
    assert honest.attrs["tuning_trainings"] == (1 + 4 + 4) * 2
    assert honest.attrs["trainings"] == honest.attrs["tuning_trainings"]
    for name in ("gce", "focal"):
        grid = honest.attrs["tuning"][name]["grid"]
        chosen = honest.attrs["tuning"][name]["chosen"]
        top = max(grid, key=lambda g: (g["ok"], g["val_mean"]))
        assert chosen == top["params"]
        row = honest[honest["loss"] == name].iloc[0]
        assert row["params"] == ", ".join(f"{k}={v:g}" for k, v in chosen.items())


def test_untuned_references_train_the_defaults_only() -> None:
    task = _task(steps=40, full_steps=40)
    table = verify({}, task, seeds=2, references=["ce", "gce"], tune_references=False)
    assert table.attrs["tuning_trainings"] == 0
    assert table.attrs["tuning"]["gce"]["chosen"] == {"q": 0.7}
    assert len(table.attrs["tuning"]["gce"]["grid"]) == 1


def test_verification_marks_a_known_loss_and_compares_with_the_best_reference() -> None:
    task = _task(steps=40, full_steps=40)
    found = {"found_1": parse("0.25 * sum_c(abs(p - t))"), "found_2": parse("(1 - p_y^0.6) / 0.6")}
    table = verify(found, task, seeds=3, references=["ce", "mae", "gce"])
    rows = table.set_index("loss")
    assert rows.loc["found_1", "known_as"] == "mae up to scale (×0.25)"
    assert rows.loc["found_2", "known_as"] == ""
    assert rows.loc["gce", "known_as"] == ""  # references are what they are
    best = table.attrs["best_reference"]
    assert best in {"ce", "mae", "gce"}
    per_seed = table.attrs["per_seed"]
    diff = np.nanmean(np.array(per_seed["found_2"]) - np.array(per_seed[best]))
    assert rows.loc["found_2", "diff_vs_best_ref"] == pytest.approx(diff)
    low, high = rows.loc["found_2", ["diff_vs_best_ref_low", "diff_vs_best_ref_high"]]
    assert low <= diff <= high or math.isnan(low)


def test_a_version_1_run_config_keeps_the_protocol_it_ran_with() -> None:
    preset = load_env_preset("digits_noisy")
    env = preset.to_dict()
    env["task"]["training"].pop("select")
    env["verification"].pop("tune_references")
    old = {
        "version": 1,
        "env_name": "digits_noisy",
        "env": env,
        "agent": {},
        "budget": 5,
        "seed": 0,
    }
    cfg = RunConfig.from_dict(old)
    assert cfg.version == CONFIG_VERSION == 2
    assert cfg.env["task"]["training"]["select"] == "last"
    assert cfg.env["task"]["corruption"]["val"] == "clean"
    assert cfg.env["verification"]["tune_references"] is False
    task = TaskConfig.from_dict(cfg.env["task"])
    assert task.training.select == "last" and not task.corruption.noisy_val
    # A current config is read as written.
    new = {**old, "version": 2, "env": preset.to_dict()}
    assert RunConfig.from_dict(new).env["task"]["training"]["select"] == "best"


def test_the_default_preset_uses_the_honest_protocol() -> None:
    from loss_rl.presets import DEFAULT_ENV

    preset = load_env_preset(DEFAULT_ENV)
    assert preset.task.training.select == "best"
    assert preset.task.corruption.noisy_val
    assert preset.verification.seeds >= 10 and preset.verification.tune_references
    from loss_rl.tasks import load_task

    # One point of accuracy is at least 10 validation samples.
    assert len(load_task(preset.task, 0).val) >= 1000
