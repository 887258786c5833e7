"""The loss-rl command line: show, export, and how bad input is reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import loss_rl
from loss_rl.cli import app
from loss_rl.errors import LossSyntaxError
from loss_rl.export import export, load_loss, read_spec
from loss_rl.expr import known_loss

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def test_show_prints_key_fingerprint_and_checks() -> None:
    result = runner.invoke(app, ["show", "-(1 - p_y)^2 * log_p_y"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for word in ("expression", "canonical key", "fingerprint", "checks", "ok"):
        assert word in out
    assert "-(1 - p_y)^2 * log_p_y" in out
    assert known_loss("focal").key in out


def test_expressions_may_start_with_a_minus(tmp_path: Path) -> None:
    out = tmp_path / "ce.json"
    result = runner.invoke(app, ["export", "-log_p_y", "--out", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert read_spec(out).expression == known_loss("ce")
    result = runner.invoke(app, ["export", "--out", str(out), "--", "-(1 - p_y) * log_p_y"])
    assert result.exit_code == 0, result.output


def test_show_lists_failed_checks() -> None:
    result = runner.invoke(app, ["show", "p_y - p_y"])
    assert result.exit_code == 0
    assert "zero_gradient" in result.stdout
    result = runner.invoke(app, ["show", "-log_p_y", "--kind", "regression"])
    assert result.exit_code == 0
    assert "kind:" in result.stdout


@pytest.mark.parametrize(
    ("source", "kind"), [("focal", None), ("huber", None), ("pred^2", "regression")]
)
def test_show_plot_writes_a_png(source: str, kind: str | None, tmp_path: Path) -> None:
    args = ["show", source, "--plot", str(tmp_path / "plots" / "loss.png")]
    result = runner.invoke(app, args + (["--kind", kind] if kind else []))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plots" / "loss.png").read_bytes().startswith(PNG)


@pytest.mark.parametrize(("fmt", "suffix"), [("json", "json"), ("py", "py"), ("torchscript", "pt")])
def test_export_known_loss_name(fmt: str, suffix: str, tmp_path: Path) -> None:
    out = tmp_path / f"gce.{suffix}"
    result = runner.invoke(app, ["export", "gce", "--format", fmt, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Wrote {out}" in result.stdout.replace("\n", "")
    if fmt == "py":
        assert "class DiscoveredLoss(torch.nn.Module)" in out.read_text()
    else:
        assert load_loss(out) is not None


def test_export_expression_spec_and_run_folder(tmp_path: Path) -> None:
    spec = tmp_path / "loss.json"
    result = runner.invoke(
        app, ["export", "0.5 * residual^2", "--out", str(spec), "--reduction", "sum"]
    )
    assert result.exit_code == 0, result.output
    assert read_spec(spec).reduction == "sum"
    # A spec file as the source keeps kind, reduction and metadata.
    run = tmp_path / "results" / "run1"
    export(known_loss("focal"), run / "best" / "loss.json", metadata={"score": 0.9})
    out = tmp_path / "best.json"
    result = runner.invoke(app, ["export", str(run), "--format", "json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["expression"] == str(known_loss("focal"))
    assert data["metadata"] == {"score": 0.9}
    result = runner.invoke(
        app, ["export", str(spec), "--format", "py", "--out", str(tmp_path / "m.py")]
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["show", "log(p_y"], "at position 7"),
        (["show", "lg(p_y)"], "unknown name 'lg'"),
        (["show", "p_y + residual"], "mixes"),
        (["export", "p", "--out", "x.json"], "sum_c"),
        (["export", "missing/loss.json", "--out", "x.json"], "no such file"),
        (["export", "-log_p_y", "--kind", "regression", "--out", "x.json"], "classification"),
        (["export", ".", "--out", "x.json"], "best/loss.json"),
    ],
)
def test_bad_input_is_one_red_line_and_exit_code_2(
    args: list[str], words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.json").exists()


def test_bad_spec_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "loss_rl.loss", "schema_version": 7, "expression": "p_y"}))
    result = runner.invoke(app, ["export", str(bad), "--out", str(tmp_path / "x.py")])
    assert result.exit_code == 2
    assert "schema_version" in result.stderr and "upgrade loss_rl" in result.stderr


def test_debug_shows_the_exception() -> None:
    result = runner.invoke(app, ["--debug", "show", "log(p_y"])
    assert result.exit_code == 1
    assert isinstance(result.exception, LossSyntaxError)


def test_usage_errors_and_help() -> None:
    result = runner.invoke(app, ["export", "ce", "--format", "onnx", "--out", "x"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "show" in result.stdout and "export" in result.stdout
    assert runner.invoke(app, []).exit_code in (0, 2)  # no command: the help


def _entry_point() -> list[str]:
    exe = shutil.which("loss-rl")
    return [exe] if exe else [sys.executable, "-m", "loss_rl.cli"]


def test_installed_entry_point_smoke(tmp_path: Path) -> None:
    # The package may not be installed in a development checkout: find it by its path then.
    env = {**os.environ, "PYTHONPATH": str(Path(loss_rl.__file__).parents[1])}
    ok = subprocess.run(
        [*_entry_point(), "export", "focal", "--format", "py", "--out", "focal.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "focal.py").is_file()
    bad = subprocess.run(
        [*_entry_point(), "show", "-(1 - p_y)^2 * lg(p_y)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("Error: unknown name 'lg'")
    assert "Traceback" not in bad.stderr
    assert bad.stdout == ""


def test_cli_choices_match_the_library() -> None:
    from loss_rl.cli import Format, Kind, Reduction
    from loss_rl.export import FORMATS, REDUCTIONS
    from loss_rl.expr import TaskKind

    assert [k.value for k in Kind] == [k.value for k in TaskKind]
    assert tuple(f.value for f in Format) == FORMATS
    assert sorted(r.value for r in Reduction) == sorted(REDUCTIONS)


def test_cli_default_env_is_the_library_default() -> None:
    from loss_rl.cli._choices import DEFAULT_ENV as CLI_DEFAULT
    from loss_rl.presets import DEFAULT_ENV, load_env_preset

    assert CLI_DEFAULT == DEFAULT_ENV
    load_env_preset(DEFAULT_ENV)  # it ships


def test_tables_keep_long_rows_on_one_line_when_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CliRunner's stdout is not a terminal, like a CI log or `| tee`: rich would assume 80
    # columns there and fold the expression over several lines.
    monkeypatch.delenv("COLUMNS", raising=False)
    source = "-(1 - p_y)^2 * log_p_y + 0.5 * (1 - p_y^0.7) * 1.5 + 0.25 * log(1 + exp(-p_y))"
    expr = loss_rl.parse(source + " + 0.125 * log_p_y * p_y")
    assert len(str(expr)) > 80 and len(expr.key) > 80
    result = runner.invoke(app, ["show", "--", str(expr)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(str(expr) in line for line in lines), result.stdout
    assert any(expr.key in line for line in lines), result.stdout
