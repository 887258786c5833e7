"""``--device`` / ``executor.device``: checked before any work, recorded, honoured on CPU.

The GPU path itself is tested in tests/training/test_device.py (skipped without CUDA).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from loss_rl import Search
from loss_rl.cli import app
from loss_rl.errors import ConfigError
from loss_rl.evaluation import InProcessExecutor
from loss_rl.executors import ExecutorConfig, make_executor
from loss_rl.expr import known_loss
from loss_rl.tasks import TaskConfig

runner = CliRunner()
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSS_RL_WORKERS", "0")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "CUDA", 3, ""])
def test_a_malformed_device_names_the_field(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"executor\.device.*cpu, cuda, cuda:N or auto"):
        ExecutorConfig.from_dict({"device": bad})


def test_device_is_an_inprocess_setting() -> None:
    with pytest.raises(ConfigError, match=r"executor\.device.*inprocess executor only"):
        ExecutorConfig.from_dict({"name": "ray", "device": "cuda"})
    with pytest.raises(ConfigError, match="--device applies to the inprocess executor"):
        ExecutorConfig.from_dict({"name": "ray"}).override(device="cpu")


def test_device_is_recorded_and_reaches_the_executor() -> None:
    cfg = ExecutorConfig.from_dict({}).override(device="auto")
    assert cfg.to_dict() == {"name": "inprocess", "device": "auto"}
    assert ExecutorConfig.from_dict({}).to_dict() == {"name": "inprocess"}  # unchanged default
    executor = make_executor(cfg)
    assert isinstance(executor, InProcessExecutor) and executor.device == "auto"


def test_explicit_cpu_trains_exactly_like_the_default() -> None:
    task = TaskConfig.from_dict({"dataset": "digits", "training": {"steps": 20}})
    losses = [known_loss("ce"), known_loss("gce")]
    default = InProcessExecutor().run(losses, task, 20, [0, 1], data_seed=0)
    cpu = InProcessExecutor(device="cpu").run(losses, task, 20, [0, 1], data_seed=0)
    assert [r.metrics for r in cpu] == [r.metrics for r in default]


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")
def test_a_missing_gpu_stops_the_search_before_its_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^device: CUDA is not available.*cpu or auto"):
        Search.create("tiny", "random", budget=4, out=tmp_path, name="x", device="cuda")
    assert not (tmp_path / "x").exists()
    result = runner.invoke(
        app,
        [
            "search",
            "--env",
            "tiny",
            "--agent",
            "random",
            "--budget",
            "4",
            "--device",
            "cuda",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "device" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")
def test_a_preset_asking_for_a_missing_gpu_names_its_field(tmp_path: Path) -> None:
    preset = yaml.safe_load((Path(__file__).parents[1] / "envs" / "tiny.yaml").read_text())
    preset["executor"] = {"device": "cuda"}
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(preset))
    with pytest.raises(ConfigError, match=r"^env\.executor\.device: CUDA is not available"):
        Search.create(str(path), "random", budget=4, out=tmp_path / "runs")


def test_auto_searches_on_the_cpu_here(tmp_path: Path) -> None:
    device = "auto" if NO_CUDA else "cpu"
    run = Search.create("tiny", "random", budget=4, out=tmp_path, name="auto", device=device).run(
        verify_top=False
    )
    config = yaml.safe_load((run.path / "config.yaml").read_text())
    assert config["executor"] == {"name": "inprocess", "device": device}
    assert run.summary["evaluations"]["trained"] >= 4
