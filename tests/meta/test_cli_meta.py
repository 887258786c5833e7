"""`loss-rl refine` and `loss-rl meta-train` end to end on the tiny preset (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from loss_rl.cli import app


def test_refine_cli_writes_a_verified_spec(tmp_path: Path) -> None:
    spec = tmp_path / "gce.json"
    from loss_rl import export, known_loss

    export(known_loss("gce", q=0.5), spec, format="json")
    res = CliRunner().invoke(app, ["refine", str(spec), "--env", "tiny", "--meta-steps", "2",
                                   "--inner-steps", "10", "--seeds", "2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = tmp_path / "gce.refined.json"
    assert out.is_file() and "refined" in res.output
    data = json.loads(out.read_text())
    assert data["schema"] == "loss_rl.loss" and data["expression"]


def test_meta_train_cli_exports_json_and_py(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["meta-train", "--env", "tiny", "--meta-steps", "2",
                                   "--inner-steps", "10", "--seeds", "2",
                                   "--out", str(tmp_path / "m")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m" / "loss.json").is_file() and (tmp_path / "m" / "loss.py").is_file()
    from loss_rl import load_loss

    crit = load_loss(tmp_path / "m" / "loss.json")
    import torch

    assert torch.isfinite(crit(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])))


def test_refine_cli_bad_source_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["refine", "p_y +", "--env", "tiny"])
    assert res.exit_code == 2
    assert "expected" in res.output
