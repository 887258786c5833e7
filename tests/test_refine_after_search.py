"""Constants refined after the search: verified next to the unrefined loss, reported apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loss_rl import Search
from loss_rl.errors import ConfigError
from loss_rl.presets import load_env_preset

REPO = Path(__file__).resolve().parent.parent


def _preset(tmp_path: Path, **verification: object) -> Path:
    data = yaml.safe_load((REPO / "envs" / "tiny.yaml").read_text())
    data["space"]["start"] = ["gce"]  # a start loss with a constant to refine (q)
    data["verification"].update(verification)
    path = tmp_path / "tiny_refine.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_refinement_is_verified_beside_the_unrefined_candidate(tmp_path: Path) -> None:
    env = _preset(tmp_path, refine_constants=True, refine_meta_steps=2)
    run = Search.create(env, "random", budget=6, out=tmp_path, name="r").run()
    assert run.summary is not None
    ver = run.summary["verification"]
    ref = ver["refinement"]
    assert ref is not None and ref["meta_steps"] == 2
    rows = {r["loss"]: r for r in ver["table"]}
    assert rows[ref["row"]]["expression"] == ref["source"]
    if ref["changed"]:
        assert rows["refined"]["expression"] == ref["refined"]
        assert ref["test_ci95"][0] <= ref["test_diff"] <= ref["test_ci95"][1]
        assert ref["val_diff"] == pytest.approx(
            rows["refined"]["val_mean"] - rows[ref["row"]]["val_mean"]
        )
    else:
        assert "refined" not in rows and ref["test_diff"] is None


def test_refinement_is_off_by_default_and_validated(tmp_path: Path) -> None:
    assert load_env_preset("tiny").verification.refine_constants is False
    with pytest.raises(ConfigError, match=r"verification\.refine_meta_steps"):
        load_env_preset(_preset(tmp_path, refine_constants=True, refine_meta_steps=0))
