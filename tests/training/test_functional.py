"""Any ``torch.nn.Module`` in the batched trainer: ``model: {kind: module, factory: ...}``.

Equivalence of the ``torch.func`` population (:class:`loss_rl.training.FunctionalModel`) with
the plain loop, the built-in MLP reproduced by a factory, every factory error, what is refused
under ``vmap`` (batch normalisation, buffers written in the forward pass), determinism and the
global RNG, and the MNIST-1D example.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor, nn

from loss_rl.errors import ConfigError
from loss_rl.expr import known_loss
from loss_rl.tasks import ModelConfig, TaskConfig, build_model, load_factory, load_task
from loss_rl.training import FunctionalModel, train, train_reference
from loss_rl.training._trainer import _Run

HERE = __name__  # factories below are named "<this module>:<function>"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FIELD = "task.model.factory"


# ---------------------------------------------------------------------------------------------
# Factories


def make_mlp(num_features: int, num_outputs: int, widths: tuple[int, ...] = (16, 16)) -> nn.Module:
    """The built-in ``mlp`` as a plain ``nn.Sequential`` (same layers, same draw order)."""
    layers: list[nn.Module] = []
    width = num_features
    for h in widths:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


class ConvLN(nn.Module):
    """A 1-D CNN with a LayerNorm and a GroupNorm (per-sample statistics: fine under vmap)."""

    def __init__(self, num_features: int, num_outputs: int, channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, channels, 5, stride=2, padding=2)
        length = (num_features + 4 - 5) // 2 + 1
        self.norm = nn.LayerNorm([channels, length])
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.group = nn.GroupNorm(2, channels)
        self.head = nn.Linear(channels * length, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(torch.relu(self.conv(x.unsqueeze(1))))
        h = self.group(torch.tanh(self.conv2(h)))
        return self.head(h.flatten(1))


def make_cnn(num_features: int, num_outputs: int, channels: int = 4) -> nn.Module:
    return ConvLN(num_features, num_outputs, channels)


def make_dropout(num_features: int, num_outputs: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(num_features, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, num_outputs)
    )


def make_regressor(num_features: int, num_outputs: int, squeeze: bool = False) -> nn.Module:
    """``[B, 1]`` outputs (squeezed by build_model), or ``[B]`` with ``squeeze``."""
    net = nn.Sequential(nn.Linear(num_features, 8), nn.Tanh(), nn.Linear(8, num_outputs))
    return nn.Sequential(net, nn.Flatten(0)) if squeeze else net


def make_batchnorm(num_features: int, num_outputs: int, frozen: bool = False) -> nn.Module:
    net = nn.Sequential(
        nn.Linear(num_features, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, num_outputs)
    )
    if frozen:
        net[1].eval()  # fixed statistics: a read-only affine map
    return net


def make_instancenorm(num_features: int, num_outputs: int) -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, num_features)),
        nn.InstanceNorm1d(1, track_running_stats=True),
        nn.Flatten(),
        nn.Linear(num_features, num_outputs),
    )


class _Counter(nn.Module):
    def __init__(self, num_features: int, num_outputs: int) -> None:
        super().__init__()
        self.lin = nn.Linear(num_features, num_outputs)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.lin(x)


def make_counter(num_features: int, num_outputs: int) -> nn.Module:
    return _Counter(num_features, num_outputs)


def make_frozen_first(num_features: int, num_outputs: int, all_frozen: bool = False) -> nn.Module:
    net = make_mlp(num_features, num_outputs, (8,))
    for p in net.parameters() if all_frozen else net[0].parameters():
        p.requires_grad_(False)
    return net


def make_wide(num_features: int, num_outputs: int, width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(num_features, width), nn.Linear(width, num_outputs))


def make_raising(num_features: int, num_outputs: int) -> nn.Module:
    raise ValueError("boom")


def make_not_module(num_features: int, num_outputs: int) -> Any:
    return {"weights": torch.zeros(num_features, num_outputs)}


def make_wrong_shape(num_features: int, num_outputs: int) -> nn.Module:
    return nn.Linear(num_features, num_outputs + 1)


def make_failing_forward(num_features: int, num_outputs: int) -> nn.Module:
    return nn.Linear(num_features + 1, num_outputs)


def make_lazy(num_features: int, num_outputs: int) -> nn.Module:
    return nn.LazyLinear(num_outputs)


def make_double(num_features: int, num_outputs: int) -> nn.Module:
    return nn.Linear(num_features, num_outputs).double()


NOT_CALLABLE = 42


def _task(
    factory: str,
    kwargs: dict[str, Any] | None = None,
    dataset: str = "wine",
    **training: Any,
) -> TaskConfig:
    model: dict[str, Any] = {"kind": "module", "factory": factory}
    if kwargs:
        model["kwargs"] = kwargs
    return TaskConfig.from_dict(
        {"dataset": dataset, "model": model, "training": {"batch_size": 32, **training}}
    )


# ---------------------------------------------------------------------------------------------
# Config: nothing is imported when a config is read


def test_config_reads_validates_and_round_trips_without_importing() -> None:
    before = set(sys.modules)
    cfg = _task("no_such_package.models:build", {"depth": 3, "sizes": [4, 8], "act": None})
    assert set(sys.modules) == before  # the factory is not imported, nor anything new
    assert cfg.model.runs_code and not TaskConfig().model.runs_code
    assert cfg.model.kwargs == {"depth": 3, "sizes": [4, 8], "act": None}
    assert TaskConfig.from_dict(cfg.to_dict()) == cfg
    assert hash(cfg) == hash(TaskConfig.from_dict(cfg.to_dict()))  # configs key caches
    assert cfg.to_dict()["model"] == {
        "kind": "module",
        "factory": "no_such_package.models:build",
        "kwargs": {"depth": 3, "sizes": [4, 8], "act": None},
    }
    assert ModelConfig(kind="module", factory="m:f", kwargs={"a": (1, 2)}).kwargs == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("model", "field", "message"),
    [
        ({"kind": "module"}, "task.model.factory", "required for kind 'module'"),
        ({"kind": "module", "factory": "no_colon"}, FIELD, "'package.module:function'"),
        ({"kind": "module", "factory": "a b:f"}, FIELD, "got 'a b:f'"),
        ({"kind": "module", "factory": "pkg.mod:"}, FIELD, "got 'pkg.mod:'"),
        ({"kind": "module", "factory": "m:f", "kwargs": [1]}, "task.model.kwargs", "mapping"),
        ({"kind": "module", "factory": "m:f", "widths": [8]}, "task.model.widths", "remove"),
        ({"kind": "mlp", "factory": "m:f"}, "task.model.factory", "remove 'factory'"),
        ({"kind": "mlp", "kwargs": {"a": 1}}, "task.model.kwargs", "remove 'kwargs'"),
    ],
)
def test_config_errors(model: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        TaskConfig.from_dict({"model": model})
    assert err.value.field == field


def test_kwargs_must_be_plain_data() -> None:
    with pytest.raises(ConfigError, match="plain YAML data") as err:
        ModelConfig(kind="module", factory="m:f", kwargs={"layer": {"act": nn.ReLU()}})
    assert err.value.field == "task.model.kwargs.layer.act"


def test_resolved_takes_relative_files_from_the_base_folder(tmp_path: Path) -> None:
    spec = ModelConfig(kind="module", factory="models/net.py:make")
    assert spec.resolved(tmp_path).factory == f"{tmp_path / 'models' / 'net.py'}:make"
    for unchanged in ("pkg.mod:make", f"{tmp_path / 'net.py'}:make"):
        other = ModelConfig(kind="module", factory=unchanged)
        assert other.resolved("/elsewhere") == other
    assert ModelConfig().resolved(tmp_path) == ModelConfig()


# ---------------------------------------------------------------------------------------------
# Equivalence with the plain loop


@pytest.mark.parametrize("select", ["last", "best"])
@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [("make_cnn", {"channels": 4}), ("make_mlp", {"widths": [16, 8]})],
)
def test_matches_single_model_runs(factory: str, kwargs: dict[str, Any], select: str) -> None:
    task = _task(f"{HERE}:{factory}", kwargs, select=select, eval_every=10, weight_decay=1e-3)
    losses = [known_loss("ce"), known_loss("gce"), known_loss("focal")]
    seeds, steps = [0, 1], 40
    results = train(losses, task, steps, seeds, workers=0)
    run = _Run(losses, task, seeds, None)
    run.fit(steps)
    for m in range(run.n):
        cand, s = run.loss.order[m // len(seeds)], m % len(seeds)
        module, ref = train_reference(losses[cand], task, steps, seeds[s])
        got = run.model.state_dict(m)
        assert got.keys() == module.state_dict().keys()
        for name, value in module.state_dict().items():
            assert torch.allclose(got[name], value, rtol=1e-4, atol=1e-5), (name, cand, s)
        result = results[cand * len(seeds) + s]
        assert result.ok
        for name, value in ref["val"].items():
            assert result.metrics["val"][name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
        assert (result.selected_step is None) == (select == "last")


def test_module_mlp_reproduces_the_builtin_mlp() -> None:
    builtin = TaskConfig.from_dict(
        {"dataset": "wine", "model": {"widths": [16, 16]}, "training": {"batch_size": 32}}
    )
    module = _task(f"{HERE}:make_mlp", {"widths": [16, 16]})
    # Same layers built from the same seed: the same initial parameters, bit for bit.
    a = build_model(builtin.model, 13, 3, seed=7).state_dict()
    b = build_model(module.model, 13, 3, seed=7).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [known_loss("ce"), known_loss("mae")]
    ours = train(losses, module, 60, [0, 1], splits=("val", "test"), workers=0)
    theirs = train(losses, builtin, 60, [0, 1], splits=("val", "test"), workers=0)
    for x, y in zip(ours, theirs, strict=True):
        assert x.selected_step == y.selected_step
        for split in ("val", "test"):
            for name, value in y.metrics[split].items():
                assert x.metrics[split][name] == pytest.approx(value, rel=1e-4, abs=1e-5)


def test_regression_outputs_are_squeezed() -> None:
    for squeeze in (False, True):
        task = _task(f"{HERE}:make_regressor", {"squeeze": squeeze}, dataset="diabetes")
        model = build_model(task.model, 10, 1, seed=0)
        assert model(torch.zeros(5, 10)).shape == (5,)
        results = train([known_loss("mse"), known_loss("huber")], task, 30, [3], workers=0)
        for r, loss in zip(results, ["mse", "huber"], strict=True):
            _, ref = train_reference(known_loss(loss), task, 30, 3)
            assert r.score == pytest.approx(ref["val"]["r2"], rel=1e-4, abs=1e-5)


def test_population_model_i_is_a_plain_module() -> None:
    task = _task(f"{HERE}:make_cnn")
    data = load_task(task, 0)
    inits = [build_model(task.model, 13, 3, seed=s) for s in (1, 2)]
    pop = FunctionalModel(task.model, 13, 3, inits, [0, 1, 0])
    x = data.val.x
    outs = pop.forward(x.unsqueeze(0).expand(3, *x.shape))
    for i in range(3):
        plain = pop.module(i)
        assert torch.allclose(outs[i], plain.eval()(x), atol=1e-6)
    assert pop.num_params == sum(p.numel() for p in inits[0].parameters())


# ---------------------------------------------------------------------------------------------
# Factory errors: one each, naming task.model.factory


def _raise_for(factory: str, kwargs: dict[str, Any] | None = None) -> ConfigError:
    task = _task(factory, kwargs)
    with pytest.raises(ConfigError) as err:
        build_model(task.model, 13, 3, seed=0)
    assert err.value.field == FIELD
    return err.value


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        ("no_such_module_xyz.models:make", None, "module 'no_such_module_xyz.models' not found"),
        ("missing_dir/missing.py:make", None, "file not found: missing_dir/missing.py"),
        (f"{HERE}:no_such_function", None, "has no attribute 'no_such_function'"),
        (f"{HERE}:NOT_CALLABLE", None, "is not callable \\(it is 'int'\\)"),
        (f"{HERE}:make_raising", None, "raised ValueError: boom"),
        (f"{HERE}:make_mlp", {"depth": 2}, "raised TypeError: .*unexpected keyword"),
        (f"{HERE}:make_not_module", None, "returned a dict, not a torch.nn.Module"),
        (f"{HERE}:make_wrong_shape", None, r"to \[2, 4\]; expected \[2, 3\]"),
        (f"{HERE}:make_failing_forward", None, "raised RuntimeError on a probe batch"),
        (f"{HERE}:make_double", None, "float32 parameters"),
        (f"{HERE}:make_lazy", None, "parameter 'weight' is lazy"),
        (f"{HERE}:make_wide", {"width": 80_000}, "built 1,360,003 parameters; the cap"),
    ],
)
def test_factory_errors(factory: str, kwargs: dict[str, Any] | None, message: str) -> None:
    assert re.search(message, str(_raise_for(factory, kwargs)))


def test_factory_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('bad file')\n")
    (tmp_path / "good.py").write_text(
        "from torch import nn\n\ndef make(f, c, width=4):\n"
        "    return nn.Sequential(nn.Linear(f, width), nn.Linear(width, c))\n"
    )
    err = _raise_for(f"{tmp_path / 'broken.py'}:make")
    assert "raised RuntimeError: bad file" in str(err)
    err = _raise_for(f"{tmp_path / 'good.py'}:other")
    assert "has no attribute 'other'" in str(err)
    monkeypatch.chdir(tmp_path)  # a relative path is taken from the current directory
    assert callable(load_factory("good.py:make"))
    model = build_model(_task("good.py:make", {"width": 5}).model, 13, 3, seed=0)
    assert model[0].out_features == 5


def test_train_raises_factory_errors_in_the_caller() -> None:
    with pytest.raises(ConfigError, match="raised ValueError: boom") as err:
        train([known_loss("ce")], _task(f"{HERE}:make_raising"), 5, [0], workers=0)
    assert err.value.field == FIELD


# ---------------------------------------------------------------------------------------------
# What vmap cannot train here


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("make_batchnorm", "BatchNorm1d '1' is in training mode.*LayerNorm"),
        ("make_instancenorm", "tracks running statistics in training mode"),
        ("make_counter", "changes its buffer 'calls'"),
    ],
)
def test_refused_under_vmap(factory: str, message: str) -> None:
    task = _task(f"{HERE}:{factory}")
    with pytest.raises(ConfigError, match=message) as err:
        train([known_loss("ce")], task, 5, [0], workers=0)
    assert err.value.field == FIELD
    train_reference(known_loss("ce"), task, 5, 0)  # the plain loop can train it


def test_batchnorm_in_eval_mode_trains_like_the_plain_loop() -> None:
    task = _task(f"{HERE}:make_batchnorm", {"frozen": True})
    (result,) = train([known_loss("ce")], task, 30, [0], workers=0)
    _, ref = train_reference(known_loss("ce"), task, 30, 0)
    assert result.metrics["val"]["nll"] == pytest.approx(ref["val"]["nll"], rel=1e-4)


def test_frozen_parameters_are_constants() -> None:
    task = _task(f"{HERE}:make_frozen_first")
    run = _Run([known_loss("ce")], task, [0], None)
    assert run.model.num_params == 8 * 3 + 3  # the head only
    run.fit(30)
    module, _ = train_reference(known_loss("ce"), task, 30, 0)
    for name, value in module.state_dict().items():
        assert torch.allclose(run.model.state_dict(0)[name], value, rtol=1e-4, atol=1e-5), name
    with pytest.raises(ConfigError, match="no trainable parameters") as err:
        _Run(
            [known_loss("ce")], _task(f"{HERE}:make_frozen_first", {"all_frozen": True}), [0], None
        )
    assert err.value.field == FIELD


# ---------------------------------------------------------------------------------------------
# Seeds, randomness and the global RNG


def test_same_seed_same_scores_and_the_global_rng_is_untouched() -> None:
    losses = [known_loss("ce"), known_loss("sce")]
    for factory in ("make_cnn", "make_dropout"):
        task = _task(f"{HERE}:{factory}", select="last")
        torch.manual_seed(123)
        state = torch.get_rng_state()
        first = train(losses, task, 20, [0, 1], workers=0)
        second = train(losses, task, 20, [0, 1], workers=0)
        assert torch.equal(torch.get_rng_state(), state)
        assert [r.metrics for r in first] == [r.metrics for r in second]
        a = build_model(task.model, 13, 3, seed=5).state_dict()
        assert torch.equal(torch.get_rng_state(), state)
        b = build_model(task.model, 13, 3, seed=5).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    # Different seeds: different initialisations.
    c = build_model(task.model, 13, 3, seed=6).state_dict()
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_dropout_is_on_in_training_and_off_in_evaluation() -> None:
    task = _task(f"{HERE}:make_dropout")
    inits = [build_model(task.model, 13, 3, seed=0)]
    pop = FunctionalModel(task.model, 13, 3, inits, [0, 0])
    x = torch.randn(2, 64, 13)
    train_a, train_b = pop.train_forward(x), pop.train_forward(x)
    assert not torch.equal(train_a, train_b)  # fresh masks every step
    assert not torch.equal(train_a[0], train_a[1])  # and for every copy
    out = pop.forward(x)
    assert torch.allclose(out, inits[0].eval()(x), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# The MNIST-1D example


def test_mnist1d_example_trains() -> None:
    path = EXAMPLES / "mnist1d_cnn.yaml"
    data = yaml.safe_load(path.read_text())
    before = set(sys.modules)
    task = TaskConfig.from_dict(data["task"])
    assert task.model.runs_code and set(sys.modules) == before
    task = task.replace(model=task.model.resolved(path.parent))
    assert task.model.factory == f"{EXAMPLES / 'mnist1d_cnn.py'}:make_model"
    model = build_model(task.model, 40, 10, seed=0)
    assert sum(p.numel() for p in model.parameters()) == 8010
    results = train([known_loss("ce"), known_loss("gce")], task, 20, [0], workers=0)
    assert all(r.ok and r.score is not None and r.score > 0.15 for r in results), results
