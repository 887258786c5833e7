"""load_task: deterministic splits, corruption of the training part (and, for label noise, the
validation labels: ``tests/tasks/test_val_noise.py``), never of the test part; train-only scaling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from loss_rl.errors import ConfigError
from loss_rl.expr import TaskKind
from loss_rl.tasks import TaskConfig, derive_seed, load_raw, load_task

CORRUPTIONS = [
    {"kind": "none"},
    {"kind": "symmetric", "rate": 0.4},
    {"kind": "pairflip", "rate": 0.3},
    {"kind": "imbalance", "ratio": 10},
    {"kind": "subsample", "fraction": 0.3},
    {"kind": "subsample", "per_class": 7},
]


def _cfg(dataset: str = "digits", **sections: object) -> TaskConfig:
    return TaskConfig.from_dict({"dataset": dataset, **sections})


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_test_is_never_corrupted_and_val_only_by_label_noise(
    corruption: dict[str, object],
) -> None:
    data = load_task(_cfg(corruption=corruption), seed=3)
    raw = load_raw(data.config.dataset)
    # Label noise corrupts the validation labels too by default; nothing else touches them.
    assert (data.val_noise is not None) == (corruption["kind"] in ("symmetric", "pairflip"))
    for part in ("val", "test"):
        rows = data.rows[part]
        expected = raw.y[rows]
        if part == "val" and data.val_noise is not None:
            assert np.array_equal(data.val_noise.clean_y, expected)
            expected = np.where(data.val_noise.corrupted, data.val.y.numpy(), expected)
        assert torch.equal(data.split(part).y, torch.from_numpy(expected))
        restored = data.split(part).x.double().numpy() * data.feature_std + data.feature_mean
        np.testing.assert_allclose(restored, raw.x[rows], atol=1e-4)
    # The three parts are disjoint.
    all_rows = np.concatenate(list(data.rows.values()))
    assert len(np.unique(all_rows)) == len(all_rows)
    assert np.array_equal(data.rows["train"], data.noise.indices)


def test_split_and_noise_are_deterministic_per_seed() -> None:
    cfg = _cfg(corruption={"kind": "symmetric", "rate": 0.4})
    a, b, c = load_task(cfg, 1), load_task(cfg, 1), load_task(cfg, 2)
    assert torch.equal(a.train.y, b.train.y) and torch.equal(a.val.x, b.val.x)
    assert not np.array_equal(a.rows["val"], c.rows["val"])
    assert not np.array_equal(a.noise.corrupted, c.noise.corrupted)
    # A fresh cache gives the same realisation (determinism is not a caching artefact).
    from loss_rl.tasks._data import _load, _task_data

    _load.cache_clear()
    _task_data.cache_clear()
    assert torch.equal(load_task(cfg, 1).train.y, a.train.y)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8])
def test_symmetric_noise_rate_is_realised_exactly(rate: float) -> None:
    data = load_task(_cfg(corruption={"kind": "symmetric", "rate": rate}), seed=0)
    noisy = data.train.y.numpy()
    clean = data.noise.clean_y
    assert np.array_equal(noisy != clean, data.noise.corrupted)
    assert data.noise.corrupted.sum() == round(rate * len(clean))
    assert data.noise.rate == pytest.approx(rate, abs=1 / len(clean))
    # Flipped labels are spread over the other classes.
    if rate:
        assert len(np.unique(noisy[data.noise.corrupted])) == data.num_classes


def test_pairflip_moves_each_class_to_the_next() -> None:
    data = load_task(_cfg(corruption={"kind": "pairflip", "rate": 0.3}), seed=0)
    c = data.num_classes
    assert c is not None
    flipped = data.noise.corrupted
    clean, noisy = data.noise.clean_y, data.train.y.numpy()
    assert np.array_equal(noisy[flipped], (clean[flipped] + 1) % c)
    for k in range(c):
        in_class = clean == k
        assert flipped[in_class].sum() == round(0.3 * in_class.sum())


def test_imbalance_follows_the_long_tail_profile() -> None:
    clean = load_task(_cfg(), seed=0)
    data = load_task(_cfg(corruption={"kind": "imbalance", "ratio": 10}), seed=0)
    before = np.bincount(clean.train.y.numpy())
    after = np.bincount(data.train.y.numpy())
    n_max = before.max()
    expected = np.minimum(before, np.round(n_max * 10.0 ** (-np.arange(10) / 9)).astype(int))
    assert np.array_equal(after, expected)
    assert after[0] / after[-1] == pytest.approx(10, rel=0.15)
    assert len(data.noise.dropped) == before.sum() - after.sum()


def test_subsample_per_class_and_fraction() -> None:
    per = load_task(_cfg(corruption={"kind": "subsample", "per_class": 7}), seed=0)
    assert np.all(np.bincount(per.train.y.numpy()) == 7)
    frac = load_task(_cfg("diabetes", corruption={"kind": "subsample", "fraction": 0.25}), 0)
    full = load_task(_cfg("diabetes"), 0)
    assert len(frac.train) == round(0.25 * len(full.train))
    assert len(frac.val) == len(full.val)


def test_standardisation_is_fitted_on_train_only() -> None:
    data = load_task(_cfg("wine"), seed=0)
    x = data.train.x.double()
    assert torch.allclose(x.mean(0), torch.zeros(x.shape[1], dtype=torch.float64), atol=1e-5)
    assert torch.allclose(
        x.std(0, unbiased=False), torch.ones(x.shape[1], dtype=torch.float64), atol=1e-4
    )
    raw = load_raw(data.config.dataset)
    np.testing.assert_allclose(data.feature_mean, raw.x[data.rows["train"]].mean(0))
    # Val has its own statistics: not exactly centred with train's mean.
    assert data.val.x.double().mean(0).abs().max() > 1e-3


def test_regression_targets_are_standardised_with_train_statistics() -> None:
    corruption = {"kind": "symmetric", "rate": 0.2, "val": "clean"}
    data = load_task(_cfg("diabetes", corruption=corruption), seed=0)
    assert data.kind is TaskKind.REGRESSION and data.num_classes is None
    assert data.train.y.dtype == torch.float32
    assert float(data.train.y.double().mean()) == pytest.approx(0, abs=1e-5)
    raw = load_raw(data.config.dataset)
    restored = data.val.y.double().numpy() * data.target_std + data.target_mean
    np.testing.assert_allclose(restored, raw.y[data.rows["val"]], rtol=1e-5)
    assert data.noise.corrupted.sum() > 0


def test_stratified_split_keeps_class_proportions() -> None:
    data = load_task(_cfg(split={"val": 100, "test": 0.2}), seed=5)
    raw = load_raw(data.config.dataset)
    share = np.bincount(raw.y) / len(raw.y)
    val_counts = np.bincount(data.val.y.numpy(), minlength=10)
    assert len(data.val) == 100
    assert np.all(np.abs(val_counts - 100 * share) <= 1.5)


@pytest.mark.parametrize(
    ("name", "kind", "features"),
    [
        ("digits", TaskKind.CLASSIFICATION, 64),
        ("breast_cancer", TaskKind.CLASSIFICATION, 30),
        ("wine", TaskKind.CLASSIFICATION, 13),
        ("iris", TaskKind.CLASSIFICATION, 4),
        ("diabetes", TaskKind.REGRESSION, 10),
        ("synthetic_classification", TaskKind.CLASSIFICATION, 20),
        ("synthetic_regression", TaskKind.REGRESSION, 20),
    ],
)
def test_bundled_and_synthetic_datasets(name: str, kind: TaskKind, features: int) -> None:
    data = load_task(_cfg(name), seed=0)
    assert data.kind is kind and data.num_features == features
    assert data.train.x.dtype == torch.float32
    assert len(data.train) + len(data.val) + len(data.test) == len(load_raw(data.config.dataset).y)


def test_mnist1d_is_generated_offline_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loss_rl.tasks import _datasets

    monkeypatch.setenv("LOSS_RL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the mnist1d package's default download path is the cwd

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("MNIST-1D must never be downloaded")

    monkeypatch.setattr("mnist1d.data.get_dataset", no_network)
    cfg = _cfg({"name": "mnist1d", "num_samples": 200, "seed": 3})  # type: ignore[arg-type]
    _datasets.load_raw.cache_clear()
    data = load_task(cfg, seed=0)
    assert data.num_features == 40 and data.num_classes == 10
    cached = list((tmp_path / "cache").glob("mnist1d_*.npz"))
    assert len(cached) == 1
    assert not list(tmp_path.glob("*.pkl"))
    # Second load (fresh process cache) reads the file instead of regenerating.
    _datasets.load_raw.cache_clear()
    monkeypatch.setattr(_datasets, "_generate_mnist1d", no_network)
    again = _datasets.load_raw(cfg.dataset)
    assert np.array_equal(again.y, load_raw(cfg.dataset).y)
    _datasets.load_raw.cache_clear()


def test_mnist1d_generation_leaves_global_rngs_alone() -> None:
    import random

    from loss_rl.tasks._datasets import _generate_mnist1d

    np.random.seed(123)
    random.seed(123)
    _generate_mnist1d(50, 1)
    assert np.random.randint(1 << 30) == np.random.RandomState(123).randint(1 << 30)
    assert random.random() == random.Random(123).random()


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"dataset": "iris", "split": {"val": 144, "test": 4}}, "task.split"),
        ({"dataset": "iris", "split": {"val": 100, "test": 50}}, "task.split.val"),
        (
            {"dataset": "digits", "corruption": {"kind": "imbalance", "ratio": 1000}},
            "task.corruption.ratio",
        ),
        (
            {"dataset": "iris", "corruption": {"kind": "subsample", "fraction": 0.01}},
            "task.corruption.fraction",
        ),
        (
            {"dataset": "breast_cancer", "corruption": {"kind": "symmetric", "rate": 0.6}},
            "task.corruption.rate",
        ),
        (
            {
                "dataset": {
                    "name": "synthetic_classification",
                    "num_classes": 8,
                    "num_informative": 2,
                }
            },
            "task.dataset.num_informative",
        ),
    ],
)
def test_impossible_tasks_fail_with_the_field(sections: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_task(TaskConfig.from_dict(sections), seed=0)
    assert info.value.field == field


def test_seeds_must_be_non_negative_integers() -> None:
    with pytest.raises(ConfigError, match="seeds"):
        load_task(_cfg(), seed=-1)
    assert derive_seed(0, "data") != derive_seed(0, "init") != derive_seed(1, "init")


def test_provided_task_data_is_returned_by_load_task() -> None:
    # An executor ships the driver's loaded data to its workers (Ray's object store).
    from loss_rl.tasks._data import _PROVIDED, has_task_data, provide_task_data

    cfg = TaskConfig.from_dict({"dataset": {"name": "iris"}, "split": {"val": 0.25, "test": 0.25}})
    import copy

    data = load_task(cfg, 7)
    shipped = copy.copy(data)  # another object: load_task's own cache would return `data`
    assert not has_task_data(cfg, 7)
    try:
        provide_task_data(cfg, 7, shipped)
        assert has_task_data(cfg, 7)
        assert load_task(cfg, 7) is shipped
        assert load_task(cfg, 8) is not shipped
    finally:
        _PROVIDED.clear()
