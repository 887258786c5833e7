"""The ML3-style neural loss: multi-class, JSON round trip, standalone module in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loss_rl.errors import LossSpecError
from loss_rl.neural_loss import (
    NeuralLoss,
    export_neural_loss,
    load_neural_loss,
    neural_loss_from_dict,
    neural_loss_to_dict,
)


def _trained_like(seed: int = 1) -> NeuralLoss:
    """A loss with non-trivial weights everywhere (the CE start has a zero last layer)."""
    loss = NeuralLoss((8, 4), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in loss.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return loss


def _inputs(c: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(c)
    z = torch.randn(6, c, generator=g) * 3
    z[0, 0] = 80.0  # saturated probabilities stay finite (log p clamped in the features)
    return z, torch.randint(0, c, (6,), generator=g)


def test_starts_as_cross_entropy_and_is_multiclass() -> None:
    loss = NeuralLoss(reduction="none")
    for c in (2, 3, 10):
        z, y = _inputs(c)
        torch.testing.assert_close(
            loss(z, y), torch.nn.functional.cross_entropy(z, y, reduction="none")
        )
    z, y = _inputs(4)
    soft = torch.nn.functional.one_hot(y, 4).float()
    torch.testing.assert_close(loss(z, soft), loss(z, y))
    pop = torch.stack([z, z * 2])  # leading population dimension
    assert loss(pop, y).shape == (2, 6)


def test_json_round_trip_is_exact(tmp_path: Path) -> None:
    loss = _trained_like()
    path = export_neural_loss(loss, tmp_path / "loss.json", metadata={"env": "x"})
    spec = json.loads(path.read_text())
    assert spec["schema"] == "loss_rl.neural_loss" and spec["schema_version"] == 1
    assert spec["architecture"]["hidden"] == [8, 4]
    back = load_neural_loss(path)
    for c in (2, 5):
        z, y = _inputs(c)
        assert torch.equal(back.per_sample(z, y), loss.per_sample(z, y))
    assert torch.equal(neural_loss_from_dict(neural_loss_to_dict(loss)).per_sample(z, y),
                       loss.per_sample(z, y))  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.update(schema="loss_rl.loss"), "schema"),
        (lambda s: s.update(schema_version=99), "schema_version"),
        (lambda s: s["weights"].pop("layers.0.bias"), "weights.layers.0.bias"),
        (lambda s: s["weights"].update({"layers.0.bias": [1.0]}), "weights.layers.0.bias"),
        (lambda s: s["weights"].update({"extra": [1.0]}), "weights.extra"),
        (lambda s: s["architecture"].update(hidden="8"), "architecture.hidden"),
    ],
)
def test_bad_specs_name_the_field(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    spec = neural_loss_to_dict(_trained_like())
    mutate(spec)
    with pytest.raises(LossSpecError) as err:
        neural_loss_from_dict(spec)
    assert err.value.field == field


_CHILD = """
import importlib.util, json, sys
import torch
spec = importlib.util.spec_from_file_location("exported_loss", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
data = json.loads(open(sys.argv[2]).read())
crit = mod.DiscoveredLoss(reduction="none")
out = {}
for key, (z, y) in data.items():
    out[key] = crit(torch.tensor(z), torch.tensor(y)).tolist()
mean = mod.DiscoveredLoss()(torch.tensor(data["c5"][0]), torch.tensor(data["c5"][1]))
out["mean"] = float(mean)
out["modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "loss_rl")
print(json.dumps(out))
"""


def test_standalone_module_matches_in_a_fresh_process(tmp_path: Path) -> None:
    loss = _trained_like(seed=4)
    py = export_neural_loss(loss, tmp_path / "loss.py")
    assert "import loss_rl" not in py.read_text() and "pickle" not in py.read_text()
    data = {f"c{c}": [t.tolist() for t in _inputs(c)] for c in (2, 5)}
    (tmp_path / "inputs.json").write_text(json.dumps(data))
    res = subprocess.run([sys.executable, "-c", _CHILD, str(py), str(tmp_path / "inputs.json")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["modules"] == []  # only torch was imported
    for c in (2, 5):
        z, y = _inputs(c)
        assert out[f"c{c}"] == loss.per_sample(z, y).tolist()
    z, y = _inputs(5)
    assert out["mean"] == pytest.approx(float(loss(z, y).detach()), rel=1e-6)


def test_load_loss_dispatches_neural_specs(tmp_path: Path) -> None:
    from loss_rl.export import load_loss

    loss = _trained_like(seed=2)
    path = export_neural_loss(loss, tmp_path / "neural.json")
    back = load_loss(path)
    assert isinstance(back, NeuralLoss)
    z, y = _inputs(3)
    assert torch.equal(back(z, y), loss(z, y))
