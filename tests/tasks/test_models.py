"""build_model: shapes, seeded initialisation, bad sizes."""

from __future__ import annotations

import pytest
import torch

from loss_rl.errors import ConfigError
from loss_rl.tasks import ModelConfig, build_model


@pytest.mark.parametrize(
    ("spec", "features", "outputs", "shape"),
    [
        (ModelConfig(), 64, 10, (5, 10)),
        (ModelConfig(kind="linear"), 13, 3, (5, 3)),
        (ModelConfig(widths=(8, 8, 8), activation="gelu"), 4, 1, (5,)),
        (ModelConfig(kind="cnn1d"), 40, 10, (5, 10)),
        (ModelConfig(kind="cnn1d", channels=(4,), kernel_sizes=(3,), stride=1), 9, 1, (5,)),
    ],
)
def test_output_shapes(
    spec: ModelConfig, features: int, outputs: int, shape: tuple[int, ...]
) -> None:
    model = build_model(spec, features, outputs, seed=0)
    assert model(torch.randn(5, features)).shape == shape


def test_seeded_init_is_deterministic_and_private() -> None:
    state = torch.random.get_rng_state()
    a = build_model(ModelConfig(), 64, 10, seed=1)
    b = build_model(ModelConfig(), 64, 10, seed=1)
    c = build_model(ModelConfig(), 64, 10, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    # PyTorch's default bounds: uniform in ±1/sqrt(fan_in).
    first = a[0].weight
    assert first.abs().max() <= 1 / 8 and first.abs().max() > 0.1


def test_impossible_cnn_is_a_config_error() -> None:
    spec = ModelConfig(kind="cnn1d", channels=(4, 4), kernel_sizes=(9, 9), stride=4, padding=0)
    with pytest.raises(ConfigError) as info:
        build_model(spec, 12, 2)
    assert info.value.field == "task.model.kernel_sizes[1]"
