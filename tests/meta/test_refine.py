"""refine / meta_train end to end on the tiny preset: sources, outputs, verification, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loss_rl._refine import meta_train, refine
from loss_rl.errors import ConfigError, LossSpecError
from loss_rl.export import export, read_spec
from loss_rl.expr import known_loss, parse
from loss_rl.neural_loss import load_neural_loss
from loss_rl.presets import load_env_preset
from loss_rl.store import CONFIG, LEDGER, Ledger, write_yaml

FAST = {"meta_steps": 2, "inner_steps": 6, "unroll": 3, "tasks_per_step": 1}


def test_refine_json_source_writes_next_to_it_and_verifies(tmp_path: Path) -> None:
    src = export(known_loss("gce", q=0.5), tmp_path / "gce.json")
    seen = []
    result = refine(src, "tiny", **FAST, verify_seeds=2, verify_steps=5, references=["ce"],
                    progress=seen.append)  # fmt: skip
    out = tmp_path / "gce.refined.json"
    assert result.paths == {"json": out}
    spec = read_spec(out)
    assert spec.expression == result.refined
    assert spec.metadata["refined_from"] == str(known_loss("gce", q=0.5))
    assert set(result.summary["verification"]) == {"refined", "unrefined", "ce"}
    assert result.verification is not None and len(result.verification) == 3
    assert [p.phase for p in seen] == ["meta", "meta", "verify"]
    # The additive 1 of GCE cannot move the training: reported, and kept as written.
    assert [c["index"] for c in result.no_gradient_constants] == [0]
    assert str(result.refined).startswith("(1 - p_y^")
    json.dumps(result.summary)  # plain data


def test_refine_expression_goes_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = refine("0.5 * max(-log_p_y, -1)", "tiny", **FAST, verify_seeds=0)
    assert result.paths["json"] == tmp_path / "loss.refined.json"
    dead = result.no_gradient_constants
    assert [(c["index"], c["reason"]) for c in dead] == [(1, "no_gradient")]
    assert "-1" in dead[0]["message"] and "max(" in dead[0]["message"]
    assert result.verification is None


def _fake_run(path: Path) -> Path:
    preset = load_env_preset("tiny")
    path.mkdir()
    write_yaml(path / CONFIG, {"version": 1, "env_name": "tiny", "env": preset.to_dict(),
                               "agent": {}, "budget": 1, "seed": 0})  # fmt: skip
    Ledger(path / LEDGER).close()
    export(parse("-0.9 * log_p_y + 0.5 * (1 - p_y)"), path / "best" / "loss.json")
    return path


def test_refine_run_folder_uses_its_env_and_writes_refined(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    result = refine(run, **FAST, verify_seeds=0)
    assert result.env == "tiny"
    assert result.paths == {"json": run / "refined" / "loss.json",
                            "py": run / "refined" / "loss.py"}  # fmt: skip
    assert read_spec(result.paths["json"]).expression == result.refined


def test_bad_sources() -> None:
    with pytest.raises(LossSpecError, match="nothing to refine"):
        refine("-log_p_y", "tiny", **FAST, write=False, verify_seeds=0)
    with pytest.raises(LossSpecError, match="integer exponents"):
        refine("-log_p_y * p_y^2", "tiny", **FAST, write=False, verify_seeds=0)
    with pytest.raises(ConfigError):
        refine("0.5 * residual^2", "tiny", **FAST, write=False, verify_seeds=0)
    with pytest.raises(ConfigError, match="env"):
        refine("-0.5 * log_p_y", None, **FAST, write=False, verify_seeds=0)
    with pytest.raises(LossSpecError, match="no loss spec"):
        refine("missing.json", "tiny", **FAST, write=False, verify_seeds=0)


def test_meta_train_exports_a_loadable_neural_loss(tmp_path: Path) -> None:
    result = meta_train("tiny", **FAST, hidden=(4,), verify_seeds=2, verify_steps=5,
                        out=tmp_path)  # fmt: skip
    assert result.paths == {"json": tmp_path / "loss.json", "py": tmp_path / "loss.py"}
    back = load_neural_loss(result.paths["json"])
    assert back.architecture == result.loss.architecture
    assert set(result.summary["verification"]) == {"neural", "ce"}
    with pytest.raises(LossSpecError, match="neural loss"):
        refine(result.paths["json"], "tiny", **FAST, write=False, verify_seeds=0)
