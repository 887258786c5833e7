"""``train(..., device=...)``: resolving the device, the CPU default, and CUDA when there is one.

The CUDA tests run only on a machine with a GPU; everything else (the device setting, errors
without CUDA, the CPU path unchanged by an explicit ``device="cpu"``) runs everywhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from loss_rl.errors import ConfigError
from loss_rl.expr import Expr, known_loss, parse
from loss_rl.tasks import TaskConfig
from loss_rl.training import ModelState, TrainResult, _trainer, resolve_device, train

HERE = __name__  # factories below are named "<this module>:<function>"
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")

POISON = "-sum_c(square(square(exp(z))))"  # as in test_trainer: the loss explodes, then overflows
LOSSES: list[Expr] = [known_loss("ce"), known_loss("focal"), parse("-log(p_y + 0.1)")]
SEEDS = [0, 1]


def _task(dataset: str = "digits", **training: Any) -> TaskConfig:
    return TaskConfig.from_dict(
        {
            "dataset": dataset,
            "model": {"widths": [16]},
            "training": {"batch_size": 32, "lr": 0.01, **training},
        }
    )


def make_mlp(num_features: int, num_outputs: int) -> nn.Module:
    """A small ``module`` model (no randomness: CPU and GPU runs are comparable)."""
    return nn.Sequential(nn.Linear(num_features, 16), nn.Tanh(), nn.Linear(16, num_outputs))


def make_dropout(num_features: int, num_outputs: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(num_features, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, num_outputs)
    )


def _in_process_workers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the worker pool run its chunks in this process; returns the chunk counts seen."""
    calls: list[int] = []

    def run_chunks(fn: Any, payloads: Sequence[tuple[Any, ...]]) -> list[Any]:
        calls.append(len(payloads))
        return [fn(*p) for p in payloads]

    monkeypatch.setattr(_trainer, "run_chunks", run_chunks)
    return calls


def _identical(a: Sequence[TrainResult], b: Sequence[TrainResult]) -> None:
    """Everything but the wall time equal, saved states bit for bit."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        fields = ("candidate", "seed", "status", "metrics", "score", "diverged_at", "steps")
        assert [getattr(x, f) for f in fields] == [getattr(y, f) for f in fields]
        assert (x.reason, x.selected_step) == (y.reason, y.selected_step)
        assert (x.state is None) == (y.state is None)
        if x.state is not None and y.state is not None:
            _same_state(x.state, y.state)


def _same_state(x: ModelState, y: ModelState) -> None:
    assert (x.step, x.loss_bound, x.best_score, x.best_step, x.waits, x.stopped_at) == (
        y.step,
        y.loss_bound,
        y.best_score,
        y.best_step,
        y.waits,
        y.stopped_at,
    )
    for group in ("params", "optimizer", "best_params"):
        xs, ys = getattr(x, group), getattr(y, group)
        assert len(xs) == len(ys)
        assert all(torch.equal(s, t) for s, t in zip(xs, ys, strict=True)), group


def _close(got: Sequence[TrainResult], want: Sequence[TrainResult], rel: float = 1e-3) -> None:
    """Same statuses and steps; metrics within float rounding of another device's kernels."""
    assert len(got) == len(want)
    for x, y in zip(got, want, strict=True):
        assert (x.candidate, x.seed, x.status, x.steps) == (y.candidate, y.seed, y.status, y.steps)
        assert x.diverged_at == y.diverged_at
        assert set(x.metrics) == set(y.metrics)
        for split, values in y.metrics.items():
            for name, value in values.items():
                assert x.metrics[split][name] == pytest.approx(value, rel=rel, abs=rel / 10), (
                    x.candidate,
                    x.seed,
                    split,
                    name,
                )


def _on_cpu(results: Sequence[TrainResult]) -> None:
    for r in results:
        assert all(isinstance(v, float) for m in r.metrics.values() for v in m.values())
        if r.state is not None:
            tensors = [*r.state.params, *r.state.optimizer, *r.state.best_params]
            assert tensors and all(t.device.type == "cpu" for t in tensors)


# ---------------------------------------------------------------------------------------------
# resolve_device


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_cpu_settings_resolve_to_the_cpu(device: str | torch.device | None) -> None:
    assert resolve_device(device) == torch.device("cpu")


def test_auto_follows_cuda_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    # Resolving creates no tensor and does not initialise CUDA, so this works on any build.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_index_is_checked_against_the_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="no GPU cuda:2") as err:
        resolve_device("cuda:2")
    assert err.value.field == "device"


@pytest.mark.skipif(CUDA, reason="tests the machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_without_cuda_is_a_config_error(device: str | torch.device) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available") as err:
        resolve_device(device)
    assert err.value.field == "device"
    assert "use device: cpu or auto" in str(err.value)


@pytest.mark.parametrize("device", ["tpu", "cuda:x", 3, True, "", "mps", "meta", 1.5])
def test_other_devices_are_config_errors(device: Any) -> None:
    with pytest.raises(ConfigError, match="unknown device") as err:
        resolve_device(device)
    assert err.value.field == "device"


# ---------------------------------------------------------------------------------------------
# train on the CPU


@pytest.mark.parametrize(
    "training", [{}, {"select": "best", "eval_every": 5, "patience": 2}], ids=["last", "best"]
)
def test_explicit_cpu_is_the_default_bit_for_bit(training: dict[str, Any]) -> None:
    task = _task(**training)
    kwargs: dict[str, Any] = {"splits": ("val", "test"), "workers": 0, "keep_state": True}
    default = train(LOSSES, task, 15, SEEDS, **kwargs)
    for device in ("cpu", torch.device("cpu")):
        _identical(train(LOSSES, task, 15, SEEDS, device=device, **kwargs), default)
    _on_cpu(default)


def test_cpu_still_splits_over_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _in_process_workers(monkeypatch)
    task = _task()
    default = train(LOSSES, task, 10, SEEDS, workers=2)
    assert calls == [2]
    _identical(train(LOSSES, task, 10, SEEDS, workers=2, device="cpu"), default)
    assert calls == [2, 2]


def test_auto_without_cuda_trains_on_the_cpu() -> None:
    if CUDA:
        pytest.skip("auto picks the GPU here")
    task = _task()
    default = train(LOSSES[:2], task, 10, SEEDS, workers=0)
    _identical(train(LOSSES[:2], task, 10, SEEDS, workers=0, device="auto"), default)


@pytest.mark.skipif(CUDA, reason="tests the machine without CUDA")
def test_train_on_cuda_without_cuda_raises_before_training() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available") as err:
        train(LOSSES, _task(), 10, SEEDS, workers=0, device="cuda")
    assert err.value.field == "device"


def test_train_with_a_bad_device_raises() -> None:
    with pytest.raises(ConfigError) as err:
        train(LOSSES, _task(), 10, SEEDS, workers=0, device="tpu")
    assert err.value.field == "device"


# ---------------------------------------------------------------------------------------------
# train on a GPU


@needs_cuda
@pytest.mark.parametrize(
    "training",
    [
        {},
        {"select": "best", "eval_every": 5, "patience": 3},
        {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "lr": 0.05},
    ],
    ids=["adam", "best", "sgd"],
)
def test_cuda_matches_cpu(training: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    task = _task(**training)
    cpu = train(LOSSES, task, 20, SEEDS, splits=("val", "test"), workers=0)
    calls = _in_process_workers(monkeypatch)
    gpu = train(LOSSES, task, 20, SEEDS, splits=("val", "test"), workers=4, device="cuda")
    assert calls == []  # the GPU trains the whole population in this process
    _close(gpu, cpu)
    assert all(r.ok for r in gpu)
    _on_cpu(gpu)


@needs_cuda
@pytest.mark.parametrize(
    "model",
    [
        {"kind": "linear"},
        {"kind": "cnn1d", "channels": [4], "kernel_sizes": [3]},
        {"kind": "module", "factory": f"{HERE}:make_mlp"},
    ],
    ids=["linear", "cnn1d", "module"],
)
def test_cuda_matches_cpu_for_every_model_kind(
    model: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # cuDNN convolutions use TF32 by default (about 1e-3 relative error per product); compare
    # float32 with float32 (the new precision API: mixing it with allow_tf32 raises).
    monkeypatch.setattr(torch.backends.cudnn.conv, "fp32_precision", "ieee")
    task = TaskConfig.from_dict(
        {"dataset": "wine", "model": model, "training": {"batch_size": 32, "lr": 0.01}}
    )
    cpu = train(LOSSES, task, 15, SEEDS, workers=0)
    gpu = train(LOSSES, task, 15, SEEDS, device="cuda")
    _close(gpu, cpu)


@needs_cuda
def test_cuda_regression_matches_cpu() -> None:
    task = _task("diabetes")
    losses = [known_loss("mse"), known_loss("huber")]
    cpu = train(losses, task, 15, SEEDS, workers=0)
    _close(train(losses, task, 15, SEEDS, device="cuda"), cpu)


@needs_cuda
@pytest.mark.parametrize(
    "training", [{}, {"select": "best", "eval_every": 5}], ids=["last", "best"]
)
def test_cuda_states_come_back_on_cpu_and_continue_on_cuda(training: dict[str, Any]) -> None:
    task = _task(**training)
    straight = train(LOSSES, task, 30, SEEDS, device="cuda")
    rung = train(LOSSES, task, 12, SEEDS, device="cuda", keep_state=True)
    _on_cpu(rung)
    states = [r.state for r in rung]
    assert all(s is not None and s.step == 12 for s in states)
    resumed = train(LOSSES, task, 30, SEEDS, device="cuda", start=states)  # type: ignore[arg-type]
    _close(resumed, straight)
    # CUDA states continue on the CPU too (same models, another device's rounding).
    _close(train(LOSSES, task, 30, SEEDS, workers=0, start=states), straight)  # type: ignore[arg-type]


@needs_cuda
def test_cuda_dropout_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    task = TaskConfig.from_dict(
        {
            "dataset": "wine",
            "model": {"kind": "module", "factory": f"{HERE}:make_dropout"},
            "training": {"batch_size": 32},
        }
    )
    cpu_state, gpu_state = torch.get_rng_state(), torch.cuda.get_rng_state()
    a = train(LOSSES, task, 10, SEEDS, device="cuda")
    b = train(LOSSES, task, 10, SEEDS, device="cuda")
    assert torch.equal(torch.get_rng_state(), cpu_state)
    assert torch.equal(torch.cuda.get_rng_state(), gpu_state)
    assert [r.metrics for r in a] == [r.metrics for r in b]
    assert all(r.ok for r in a)


@needs_cuda
def test_diverging_candidate_is_isolated_on_cuda() -> None:
    task = TaskConfig.from_dict({"dataset": "digits"})  # MLP 64-64, Adam 1e-2, batch 128
    base: list[Expr] = [known_loss("ce"), known_loss("gce"), parse("1 - p_y"), known_loss("focal")]
    poisoned = [*base[:2], parse(POISON), base[3]]
    clean = train(base, task, 30, SEEDS, device="cuda")
    results = train(poisoned, task, 30, SEEDS, device="cuda")
    for r, c in zip(results, clean, strict=True):
        if r.candidate == 2:
            assert r.status == "diverged" and r.score is None and r.metrics == {}
            assert r.diverged_at is not None and 0 < r.diverged_at < 30
            assert r.reason.startswith(f"loss exploded at step {r.diverged_at}")
        else:  # rows never mix: the others are what they are without the poison
            assert r.ok
            _close([r], [c], rel=1e-6)


# Tensor factories that place their result on the default device unless told otherwise.
_FACTORIES = {
    torch.zeros,
    torch.ones,
    torch.full,
    torch.empty,
    torch.empty_strided,
    torch.arange,
    torch.tensor,
    torch.as_tensor,
    torch.randn,
    torch.rand,
    torch.randint,
    torch.randperm,
    torch.eye,
    torch.linspace,
}
# The two that stay on the CPU on purpose: the row index used to stack the initial models (on
# the CPU, before they move), and the minibatch order (drawn on the CPU so every device trains
# on the same batches, then moved in one copy).
_CPU_ON_PURPOSE = {("_population.py", "as_tensor"), ("_reference.py", "randperm")}


class _FactoryWatch(TorchFunctionMode):
    """Notes each factory call from ``loss_rl/training`` made without an explicit ``device``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _FACTORIES and "device" not in kwargs:
            frame = sys._getframe(1)
            while frame is not None and f"{os.sep}torch{os.sep}" in frame.f_code.co_filename:
                frame = frame.f_back
            if frame is not None and f"loss_rl{os.sep}training" in frame.f_code.co_filename:
                self.seen.add((os.path.basename(frame.f_code.co_filename), func.__name__))
        return func(*args, **kwargs)


def test_every_tensor_the_trainer_makes_follows_device() -> None:
    # On a CPU-only machine a forgotten ``device=`` is invisible (everything is on the CPU);
    # this finds it: every factory call of the trainer must say where its tensor goes.
    watch = _FactoryWatch()
    cls = [*LOSSES, parse("sum_c(abs(p - t))"), parse(POISON), known_loss("label_smoothing")]
    with watch:
        first = train(
            cls,
            _task(steps=20, eval_every=10, patience=3),
            20,
            SEEDS,
            splits=("val", "test"),
            workers=0,
            device="cpu",
            keep_state=True,
        )
        states = [r.state for r in first[:2]]
        train(cls[:1], _task(steps=30), 30, SEEDS, workers=0, device="cpu", start=states)
        train(
            [parse("residual^2"), parse("abs(residual)")],
            _task("diabetes"),
            10,
            [3],
            workers=0,
            device="cpu",
            data_seed=1,
        )
    assert watch.seen - _CPU_ON_PURPOSE == set(), sorted(watch.seen)
    assert watch.seen  # the watch sees factory calls at all (the CPU-on-purpose ones)
