"""``task.corruption.val``: label noise corrupts the validation labels too (unless ``clean``).

The validation corruption uses its own random stream, so the split, the training part and the
test part are bit-identical between ``val: noisy`` and ``val: clean``; the test part is never
corrupted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import yaml

from loss_rl.errors import ConfigError
from loss_rl.tasks import CorruptionConfig, TaskConfig, TaskData, derive_seed, load_raw, load_task


def _cfg(dataset: str, **corruption: Any) -> TaskConfig:
    return TaskConfig.from_dict({"dataset": dataset, "corruption": corruption})


def _raw_y(data: TaskData, part: str) -> np.ndarray:
    return load_raw(data.config.dataset).y[data.rows[part]]


# ---------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
def test_label_noise_defaults_to_noisy_val(kind: str) -> None:
    cfg = _cfg("digits", kind=kind, rate=0.2)
    assert cfg.corruption.val is None
    assert cfg.corruption.noisy_val is True
    assert _cfg("digits", kind=kind, rate=0.2, val="noisy").corruption.noisy_val is True
    assert _cfg("digits", kind=kind, rate=0.2, val="clean").corruption.noisy_val is False


@pytest.mark.parametrize(
    "corruption",
    [
        {"kind": "none"},
        {"kind": "imbalance", "ratio": 10},
        {"kind": "subsample", "fraction": 0.5},
        {"kind": "subsample", "per_class": 5},
    ],
)
def test_other_kinds_have_clean_val_and_reject_the_option(corruption: dict[str, Any]) -> None:
    assert _cfg("digits", **corruption).corruption.noisy_val is False
    for val in ("noisy", "clean"):
        with pytest.raises(ConfigError) as info:
            _cfg("digits", **corruption, val=val)
        assert info.value.field == "task.corruption.val"
        assert "task.corruption.val" in str(info.value)
        assert "remove 'val'" in str(info.value)
        assert "symmetric" in str(info.value) and "pairflip" in str(info.value)
    # Built directly, the same check applies.
    with pytest.raises(ConfigError) as info:
        CorruptionConfig(**corruption, val="clean")
    assert info.value.field == "task.corruption.val"


@pytest.mark.parametrize("bad", ["dirty", "Noisy", "", 1, True])
def test_a_bad_val_value_names_the_field_and_the_choices(bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        _cfg("digits", kind="symmetric", rate=0.2, val=bad)
    assert info.value.field == "task.corruption.val"
    assert "'noisy'" in str(info.value) and "'clean'" in str(info.value)


def test_a_bad_val_value_is_refused_when_built_directly() -> None:
    with pytest.raises(ConfigError) as info:
        CorruptionConfig(kind="pairflip", rate=0.2, val="dirty")  # type: ignore[arg-type]
    assert info.value.field == "task.corruption.val"
    assert "'noisy'" in str(info.value) and "'clean'" in str(info.value)


@pytest.mark.parametrize("val", ["noisy", "clean"])
@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
def test_val_round_trips_through_the_dict_form(kind: str, val: str) -> None:
    cfg = _cfg("wine", kind=kind, rate=0.2, val=val)
    plain = cfg.to_dict()
    assert plain["corruption"] == {"kind": kind, "rate": 0.2, "val": val}
    again = TaskConfig.from_dict(yaml.safe_load(yaml.safe_dump(plain)))
    assert again == cfg
    assert again.corruption.val == val
    assert again.to_dict() == plain


def test_an_unset_val_is_not_written_and_an_old_dict_loads_with_the_default() -> None:
    # A run folder written before the option existed stores no ``val``.
    old = {"dataset": {"name": "digits"}, "corruption": {"kind": "symmetric", "rate": 0.4}}
    cfg = TaskConfig.from_dict(old)
    assert cfg.corruption.val is None and cfg.corruption.noisy_val is True
    assert cfg.to_dict()["corruption"] == {"kind": "symmetric", "rate": 0.4}
    assert TaskConfig.from_dict(cfg.to_dict()) == cfg
    # Kinds without label noise never write it either.
    assert (
        "val" not in TaskConfig.from_dict({"corruption": {"kind": "none"}}).to_dict()["corruption"]
    )


# ---------------------------------------------------------------------------------------------
# Data


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4])
def test_default_symmetric_val_noise_is_realised_exactly(rate: float) -> None:
    data = load_task(_cfg("digits", kind="symmetric", rate=rate), seed=0)
    noise = data.val_noise
    assert noise is not None and noise.kind == "symmetric"
    clean, noisy = _raw_y(data, "val"), data.val.y.numpy()
    assert np.array_equal(noise.indices, data.rows["val"])
    assert np.array_equal(noise.clean_y, clean)
    assert np.array_equal(noisy != clean, noise.corrupted)
    assert noise.corrupted.sum() == round(rate * len(data.val))
    assert noise.rate == pytest.approx(rate, abs=1 / len(data.val))
    assert len(noise.dropped) == 0
    # The test part is never corrupted.
    assert torch.equal(data.test.y, torch.from_numpy(_raw_y(data, "test")))


def test_clean_val_keeps_the_raw_labels() -> None:
    data = load_task(_cfg("digits", kind="symmetric", rate=0.4, val="clean"), seed=0)
    assert data.val_noise is None
    assert torch.equal(data.val.y, torch.from_numpy(_raw_y(data, "val")))
    assert torch.equal(data.test.y, torch.from_numpy(_raw_y(data, "test")))
    assert data.noise.corrupted.sum() == round(0.4 * len(data.train))  # training still noisy


@pytest.mark.parametrize(
    ("dataset", "corruption"),
    [
        ("digits", {"kind": "symmetric", "rate": 0.4}),
        ("wine", {"kind": "pairflip", "rate": 0.3}),
        ("diabetes", {"kind": "symmetric", "rate": 0.3}),
    ],
)
@pytest.mark.parametrize("seed", [0, 5])
def test_noisy_val_leaves_split_train_and_test_bit_identical(
    dataset: str, corruption: dict[str, Any], seed: int
) -> None:
    noisy = load_task(_cfg(dataset, **corruption), seed)  # the default
    explicit = load_task(_cfg(dataset, **corruption, val="noisy"), seed)
    clean = load_task(_cfg(dataset, **corruption, val="clean"), seed)
    assert noisy.val_noise is not None and clean.val_noise is None
    assert noisy.val_noise.corrupted.any()
    for part in ("train", "val", "test"):
        assert np.array_equal(noisy.rows[part], clean.rows[part])
        assert torch.equal(noisy.split(part).x, clean.split(part).x)
    assert torch.equal(noisy.train.y, clean.train.y)
    assert torch.equal(noisy.test.y, clean.test.y)
    assert not torch.equal(noisy.val.y, clean.val.y)
    assert np.array_equal(noisy.noise.indices, clean.noise.indices)
    assert np.array_equal(noisy.noise.clean_y, clean.noise.clean_y)
    assert np.array_equal(noisy.noise.corrupted, clean.noise.corrupted)
    assert np.array_equal(noisy.feature_mean, clean.feature_mean)
    assert np.array_equal(noisy.feature_std, clean.feature_std)
    assert (noisy.target_mean, noisy.target_std) == (clean.target_mean, clean.target_std)
    # Writing the default gives the same realisation as leaving it out.
    assert torch.equal(explicit.val.y, noisy.val.y)
    assert explicit.val_noise is not None
    assert np.array_equal(explicit.val_noise.corrupted, noisy.val_noise.corrupted)


def test_pairflip_val_noise_moves_each_class_to_the_next() -> None:
    data = load_task(_cfg("digits", kind="pairflip", rate=0.3), seed=1)
    c = data.num_classes
    noise = data.val_noise
    assert c is not None and noise is not None
    clean, noisy = noise.clean_y, data.val.y.numpy()
    flipped = noise.corrupted
    assert flipped.any()
    assert np.array_equal(noisy[flipped], (clean[flipped] + 1) % c)
    assert np.array_equal(noisy[~flipped], clean[~flipped])
    for k in range(c):
        in_class = clean == k
        assert flipped[in_class].sum() == round(0.3 * in_class.sum())


def test_regression_val_noise_draws_targets_from_the_val_part() -> None:
    data = load_task(_cfg("diabetes", kind="symmetric", rate=0.3), seed=2)
    noise = data.val_noise
    assert noise is not None
    clean = _raw_y(data, "val")
    assert np.array_equal(noise.clean_y, clean)
    # Targets keep the training scaling (from the training targets only).
    restored = data.val.y.double().numpy() * data.target_std + data.target_mean
    np.testing.assert_allclose(restored[~noise.corrupted], clean[~noise.corrupted], rtol=1e-5)
    changed = restored[noise.corrupted]
    assert len(changed) > 0
    # Every corrupted target is the (clean) target of another validation sample.
    gaps = np.abs(changed[:, None] - clean[None, :]).min(axis=1)
    assert np.all(gaps <= 1e-4 * np.abs(changed) + 1e-6)
    assert noise.corrupted.sum() <= round(0.3 * len(clean))


def test_val_noise_has_its_own_stream_and_is_deterministic() -> None:
    assert derive_seed(0, "val-noise") not in {derive_seed(0, s) for s in ("data", "init")}
    cfg = _cfg("digits", kind="symmetric", rate=0.4)
    a, b = load_task(cfg, 1), load_task(cfg, 2)
    assert a.val_noise is not None and b.val_noise is not None
    from loss_rl.tasks._data import _load, _task_data

    _load.cache_clear()
    _task_data.cache_clear()
    again = load_task(cfg, 1)
    assert again is not a
    assert torch.equal(again.val.y, a.val.y)
    assert again.val_noise is not None
    assert np.array_equal(again.val_noise.corrupted, a.val_noise.corrupted)
    assert not np.array_equal(a.rows["val"], b.rows["val"])
