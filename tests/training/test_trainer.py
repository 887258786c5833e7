"""The batched trainer: equivalence with a plain loop, isolation, pairing, results, bad input."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import loss_rl.training._trainer as trainer_module
from loss_rl.errors import ConfigError
from loss_rl.expr import Expr, known_loss, parse
from loss_rl.tasks import TaskConfig, load_task
from loss_rl.training import TrainResult, train, train_reference
from loss_rl.training._trainer import _Run

POISON = "-sum_c(square(square(exp(z))))"  # drives logits up: the loss explodes, then overflows


def _task(dataset: str = "wine", **sections: Any) -> TaskConfig:
    base: dict[str, Any] = {
        "dataset": dataset,
        "model": {"widths": [16, 16]},
        "training": {"batch_size": 32},
    }
    base.update(sections)
    return TaskConfig.from_dict(base)


ADAM = {"optimizer": "adam", "lr": 0.01, "batch_size": 32, "weight_decay": 1e-3}
SGD = {
    "optimizer": "sgd",
    "lr": 0.05,
    "batch_size": 32,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 1e-3,
}
CLASSIFICATION_LOSSES = ["ce", "gce", "focal", "mae", "label_smoothing", "taylor_glo"]
REGRESSION_LOSSES = ["mse", "huber", "log_cosh", "quantile"]


def _assert_matches_reference(
    losses: list[Expr], task: TaskConfig, steps: int, seeds: list[int], atol: float
) -> None:
    run = _Run(losses, task, seeds, None)
    run.fit(steps)
    metrics = run.metrics("val")
    for m in range(run.n):
        cand, s = run.loss.order[m // len(seeds)], m % len(seeds)
        module, ref_metrics = train_reference(losses[cand], task, steps, seeds[s])
        for name, ref in module.state_dict().items():
            got = run.model.state_dict(m)[name]
            assert torch.allclose(got, ref, rtol=1e-4, atol=atol), (
                str(losses[cand]),
                name,
                (got - ref).abs().max(),
            )
        for name, value in ref_metrics["val"].items():
            assert float(metrics[name][m]) == pytest.approx(value, rel=1e-3, abs=1e-4), name


@pytest.mark.parametrize("training", [ADAM, SGD], ids=["adam", "sgd"])
def test_classification_matches_plain_loop(training: dict[str, Any]) -> None:
    task = _task(training=training)
    losses = [known_loss(n) for n in CLASSIFICATION_LOSSES] + [known_loss("gce", q=0.4)]
    _assert_matches_reference(losses, task, 25, [0, 1], atol=2e-5)


@pytest.mark.parametrize("training", [ADAM, SGD], ids=["adam", "sgd"])
def test_regression_matches_plain_loop(training: dict[str, Any]) -> None:
    task = _task("diabetes", training={**training, "lr": 0.01})
    losses = [known_loss(n) for n in REGRESSION_LOSSES]
    _assert_matches_reference(losses, task, 25, [3], atol=2e-5)


@pytest.mark.parametrize("activation", ["tanh", "gelu", "silu", "elu", "leaky_relu", "sigmoid"])
def test_every_activation_matches_plain_loop(activation: str) -> None:
    task = _task("iris", model={"widths": [8], "activation": activation})
    _assert_matches_reference([known_loss("ce"), known_loss("mae")], task, 10, [0], atol=2e-5)


@pytest.mark.parametrize(
    "model", [{"kind": "linear"}, {"kind": "cnn1d", "channels": [4, 4], "kernel_sizes": [3, 3]}]
)
def test_linear_and_cnn_match_plain_loop(model: dict[str, Any]) -> None:
    task = TaskConfig.from_dict(
        {
            "dataset": {"name": "synthetic_classification", "num_samples": 300, "num_features": 12},
            "model": model,
            "training": {"batch_size": 32},
        }
    )
    _assert_matches_reference([known_loss("ce"), known_loss("poly1")], task, 10, [0, 1], atol=2e-5)


def test_poisoned_candidate_is_isolated_bit_for_bit() -> None:
    task = TaskConfig.from_dict({"dataset": "digits"})  # MLP 64-64, Adam 1e-2, batch 128
    base: list[Expr] = [known_loss("ce"), known_loss("gce"), parse("1 - p_y"), known_loss("focal")]
    poisoned = [*base[:2], parse(POISON), base[3]]
    seeds = [0, 1]
    clean_run, bad_run = _Run(base, task, seeds, None), _Run(poisoned, task, seeds, None)
    clean_run.fit(30)
    bad_run.fit(30)
    assert clean_run.loss.order == bad_run.loss.order  # same layout: row m is the same model
    for m in range(bad_run.n):
        cand = bad_run.loss.order[m // len(seeds)]
        same = all(
            torch.equal(a[m], b[m])
            for a, b in zip(clean_run.model.params, bad_run.model.params, strict=True)
        )
        if cand == 2:
            assert bad_run.diverged_at[m] is not None
            assert all(torch.isfinite(p[m]).all() for p in bad_run.model.params)  # frozen
        else:
            assert same and bad_run.diverged_at[m] is None

    results = train(poisoned, task, 30, seeds, workers=0)
    for r in results:
        if r.candidate == 2:
            assert r.status == "diverged" and r.score is None and r.metrics == {}
            assert r.diverged_at is not None and 0 < r.diverged_at < 30
            # Caught while still finite: its loss passes the explosion bound before it overflows.
            assert r.reason.startswith(f"loss exploded at step {r.diverged_at}")
        else:
            assert r.ok and r.score is not None and r.diverged_at is None


def test_results_are_candidate_major_deterministic_and_paired() -> None:
    task = _task()
    losses = [known_loss("ce"), known_loss("mae"), known_loss("ce")]
    seeds = [4, 9]
    a = train(losses, task, 20, seeds, splits=("val", "test"), workers=0)
    b = train(losses, task, 20, seeds, splits=("val", "test"), workers=0)
    assert [(r.candidate, r.seed) for r in a] == [(c, s) for c in range(3) for s in seeds]
    assert [r.metrics for r in a] == [r.metrics for r in b]
    # Same loss + same seed = same init, data and minibatches: identical model.
    assert a[0].metrics == a[4].metrics and a[1].metrics == a[5].metrics
    assert a[0].metrics != a[1].metrics
    assert set(a[0].metrics) == {"val", "test"}
    assert a[0].score == a[0].metrics["val"]["accuracy"]
    assert all(isinstance(r, TrainResult) and r.seconds > 0 and r.steps == 20 for r in a)


def test_data_seed_fixes_the_data_across_training_seeds() -> None:
    task = _task(corruption={"kind": "symmetric", "rate": 0.3})
    run = _Run([known_loss("ce")], task, [0, 1, 2], data_seed=5)
    assert run.data.shared
    own = _Run([known_loss("ce")], task, [0, 1, 2], data_seed=None)
    assert not own.data.shared
    assert torch.equal(own.data.datas[1].train.y, load_task(task, 1).train.y)
    # Training seeds still differ in initialisation.
    assert not torch.equal(run.model.params[0][0], run.model.params[0][1])
    results = train(
        [known_loss("ce"), known_loss("mae")],
        task,
        10,
        [0, 1, 2],
        data_seed=5,
        splits=("val", "train"),
        workers=0,
    )
    assert all(r.ok for r in results) and len({r.score for r in results}) > 1


def test_batched_results_do_not_depend_on_the_batch() -> None:
    task = _task()
    losses = [known_loss("ce"), known_loss("gce"), known_loss("gce", q=0.3)]
    together = train(losses, task, 20, [0], workers=0)
    for i, loss in enumerate(losses):
        alone = train([loss], task, 20, [0], workers=0)[0]
        for k, v in alone.metrics["val"].items():
            assert together[i].metrics["val"][k] == pytest.approx(v, rel=1e-4, abs=1e-5)


def test_minibatches_gathered_in_blocks_train_as_gathered_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Blocks of a few steps (so that block edges fall mid-run, and a run continued from a
    # saved state starts mid-block) train bit for bit as blocks of one step.
    task = _task(training={**ADAM, "batch_size": 16})
    losses = [known_loss("ce"), known_loss("gce"), known_loss("gce", q=0.3)]
    data = load_task(task, 0)
    row = data.train.x[0].numel() * 2 * 16  # inputs of one step: 2 seeds x 16 rows

    def run(elements: int) -> list[TrainResult]:
        monkeypatch.setattr(trainer_module, "_GATHER_BLOCK_ELEMENTS", elements)
        first = train(losses, task, 11, [0, 1], workers=0, keep_state=True)
        start = [r.state for r in first]
        assert all(st is not None for st in start)
        return first + train(losses, task, 25, [0, 1], workers=0, start=start)  # type: ignore[arg-type]

    blocks, single = run(7 * row), run(1)
    for a, b in zip(blocks, single, strict=True):
        assert a.ok and a.metrics == b.metrics and a.score == b.score


def test_invalid_candidates_never_raise() -> None:
    task = _task()
    losses: list[Any] = [known_loss("ce"), known_loss("mse"), parse("p"), "ce"]
    results = train(losses, task, 5, [0], workers=0)
    assert results[0].ok
    for r in results[1:]:
        assert (
            r.status == "diverged"
            and r.diverged_at == 0
            and r.reason.startswith(("invalid", "not a"))
        )


def test_early_stopping_keeps_the_best_checkpoint() -> None:
    task = _task(
        corruption={"kind": "symmetric", "rate": 0.6},
        training={"batch_size": 32, "lr": 0.05, "patience": 1, "eval_every": 5},
    )
    results = train([known_loss("ce")], task, 200, [0, 1], workers=0)
    assert all(r.ok for r in results)
    assert any(r.steps < 200 for r in results)  # CE memorises noise: validation stops improving


def test_regression_scores_and_negated_metrics() -> None:
    task = _task("diabetes", metric="neg_mae")
    (r,) = train([known_loss("mse")], task, 30, [0], splits=("test", "val"), workers=0)
    assert r.score == -r.metrics["test"]["mae"]
    assert set(r.metrics["val"]) == {"mse", "mae", "r2"}


def test_zero_steps_and_empty_candidates() -> None:
    task = _task()
    assert train([], task, 10, [0]) == []
    (r,) = train([known_loss("ce")], task, 0, [0], workers=0)
    assert r.ok and r.steps == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"steps": -1}, "steps"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [-2]}, "seeds"),
        ({"seeds": [1.5]}, "seeds"),
        ({"splits": ("dev",)}, "splits"),
        ({"splits": ()}, "splits"),
        ({"task": {"dataset": "digits"}}, "task"),
        ({"data_seed": -1}, "seeds"),
    ],
)
def test_bad_arguments_raise_config_errors(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {
        "candidates": [known_loss("ce")],
        "task": _task(),
        "steps": 5,
        "seeds": [0],
        "workers": 0,
    }
    args.update(kwargs)
    with pytest.raises(ConfigError) as info:
        train(**args)
    assert info.value.field == field


@pytest.mark.slow
def test_worker_processes_agree_with_in_process_training() -> None:
    task = TaskConfig.from_dict({"dataset": "digits"})
    losses = [known_loss(n) for n in ("ce", "gce", "mae", "focal")] + [parse(POISON)]
    from loss_rl.training import shutdown_workers, start_workers

    assert start_workers(2) == 2
    local = train(losses, task, 20, [0, 1], workers=0)
    pooled = train(losses, task, 20, [0, 1], workers=2)
    shutdown_workers()
    assert [(r.candidate, r.seed, r.status, r.diverged_at) for r in local] == [
        (r.candidate, r.seed, r.status, r.diverged_at) for r in pooled
    ]
    assert local[-1].status == "diverged"
    for a, b in zip(local, pooled, strict=True):
        for k, v in a.metrics.get("val", {}).items():
            assert b.metrics["val"][k] == pytest.approx(v, rel=1e-4, abs=1e-5)
