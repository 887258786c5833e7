"""Search a loss for the user's own data and model: the CLI path end to end, bad input, trust.

The end-to-end test is the README's "Search a loss for your data" in miniature: write a CSV
(scikit-learn's wine, 30 % of the training labels flipped, class names as text), search it from
the command line, then train a plain PyTorch model with the exported ``best/loss.py`` — which
needs only torch — in a subprocess that never imports loss_rl.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from torch import nn
from typer.testing import CliRunner

import loss_rl
from loss_rl.cli import app
from loss_rl.errors import ConfigError
from loss_rl.store import DATA_RECORD, load_run

runner = CliRunner()
NAMES = np.array(["barolo", "grignolino", "barbera"])
# tiny's search settings (2 references, 2 verification seeds, 40 steps) keep each search short.
FAST = ["--env", "tiny", "--agent", "random", "--budget", "8"]


def make_mlp(num_features: int, num_outputs: int) -> nn.Module:
    """A user's model, given to ``loss_rl.search(model=...)`` (module level: recorded by name)."""
    return nn.Sequential(nn.Linear(num_features, 16), nn.Tanh(), nn.Linear(16, num_outputs))


def _wine(tmp_path: Path) -> tuple[Path, Path]:
    """The README's CSVs (``examples/make_wine_csv.py``): noisy training file, clean test file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_wine_csv", EXAMPLES / "make_wine_csv.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(tmp_path)


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_search_a_csv_from_the_cli_then_train_with_the_exported_loss(tmp_path: Path) -> None:
    # The README's commands: write the CSVs, search, train your own model with the found loss.
    made = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_wine_csv.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    train_csv, test_csv = tmp_path / "wine_noisy.csv", tmp_path / "wine_test.csv"
    args = ["search", "--data", str(train_csv), "--target", "label", "--test", str(test_csv)]
    res = runner.invoke(app, [*args, *FAST, "--out", str(tmp_path / "runs"), "--name", "w"])
    assert res.exit_code == 0, res.output
    # The inference is printed before the search.
    assert "target 'label': classification (inferred" in res.output
    run = load_run(tmp_path / "runs" / "w")
    dataset = run.config["env"]["task"]["dataset"]
    assert dataset["name"] == "file" and dataset["path"] == str(train_csv.resolve())
    assert len(dataset["sha256"]) == 64 and dataset["test_path"] == str(test_csv.resolve())
    record = json.loads((run.path / DATA_RECORD).read_text())
    assert record["sha256"] == dataset["sha256"] and record["rows"] == 138
    assert record["task_kind"] == "classification" and record["kind_inferred"] is True
    assert sorted(record["classes"]["names"]) == sorted(NAMES)
    assert run.config["env"]["task"]["corruption"] == {"kind": "none"}  # nothing injected
    # inspect shows where the data came from.
    shown = runner.invoke(app, ["inspect", str(run.path), "--json", "--no-rollout"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["data"]["sha256"] == dataset["sha256"]
    # The exported loss trains the user's own model in a plain PyTorch loop (no loss_rl).
    script = [sys.executable, "-I", str(EXAMPLES / "train_with_loss.py")]
    proc = subprocess.run(
        [*script, str(run.path / "best" / "loss.py"), str(train_csv), str(test_csv)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    accuracy = float(proc.stdout.split()[-1])
    assert accuracy > 0.6, proc.stdout  # 3 classes: chance is 1/3


def _csv(tmp_path: Path, df: pd.DataFrame, name: str = "d.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    rng = np.random.default_rng(1)
    good = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    good["label"] = np.where(good["a"] > 0, "yes", "no")
    nan = good.copy()
    nan.loc[3, "a"] = np.nan
    one = good.assign(label="yes")
    rare = good.copy()
    rare.loc[0, "label"] = "rare"
    (tmp_path / "empty.csv").write_text("")
    np.savez(tmp_path / "bad.npz", x=rng.normal(size=(10, 3)), y=np.arange(9))
    g = str(_csv(tmp_path, good))
    return {
        "missing file": (["--data", str(tmp_path / "nope.csv"), "--target", "label"], "not found"),
        "unknown target": (["--data", g, "--target", "lbl"], "column 'lbl' not found"),
        "no target": (["--data", g], "required for a csv file"),
        "nan": (
            ["--data", str(_csv(tmp_path, nan, "nan.csv")), "--target", "label"],
            "pass --drop-missing",
        ),
        "one class": (
            ["--data", str(_csv(tmp_path, one, "one.csv")), "--target", "label"],
            "single class",
        ),
        "rare class": (
            ["--data", str(_csv(tmp_path, rare, "rare.csv")), "--target", "label"],
            "fewer than 3 rows",
        ),
        "text regression target": (
            ["--data", g, "--target", "label", "--kind", "regression"],
            "cannot be a regression target",
        ),
        "empty file": (["--data", str(tmp_path / "empty.csv"), "--target", "label"], "empty"),
        "npz length mismatch": (["--data", str(tmp_path / "bad.npz")], "10 rows but y has 9"),
        "target without data": (["--target", "label"], "give --data PATH too"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "unknown target",
        "no target",
        "nan",
        "one class",
        "rare class",
        "text regression target",
        "empty file",
        "npz length mismatch",
        "target without data",
    ],
)
def test_bad_data_exits_2_with_the_reason_and_writes_nothing(tmp_path: Path, case: str) -> None:
    args, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "runs"
    res = runner.invoke(app, ["search", *args, *FAST, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    # Named as the command line spells it, not as the YAML field behind it.
    assert "task.dataset" not in res.output
    assert not out.exists() or not any(out.iterdir())


def test_drop_missing_leaves_the_rows_out(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    df["label"] = np.where(df["a"] > 0, 1, 0)
    df.loc[[1, 2], "b"] = np.nan
    path = _csv(tmp_path, df)
    search = loss_rl.Search.create(
        "tiny", "random", budget=8, out=tmp_path, name="d", data=_spec(path, drop_missing=True)
    )
    assert search.data_record is not None and search.data_record["rows_dropped"] == 2


def _spec(path: Path, **kw: object) -> loss_rl.DataSpec:
    return loss_rl.DataSpec(path, "label", **kw)  # type: ignore[arg-type]


def test_python_api_takes_a_dataframe_and_arrays(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine

    df = load_wine(as_frame=True).frame.rename(columns={"target": "label"})
    run = loss_rl.search(
        "tiny", "random", budget=8, out=tmp_path, name="df", data=df, target="label"
    )
    path = Path(run.config["env"]["task"]["dataset"]["path"])
    # In-memory data lives in the run folder, so the folder alone can be resumed.
    assert path == run.path / "data" / "data.csv" and path.is_file()
    assert run.data is not None and run.data["rows"] == len(df)
    x, y = df.drop(columns="label").to_numpy(), df["label"].to_numpy()
    run2 = loss_rl.search("tiny", "random", budget=8, out=tmp_path, name="xy", data=(x, y))
    assert Path(run2.config["env"]["task"]["dataset"]["path"]).name == "data.npz"
    with pytest.raises(ConfigError, match="target="):
        loss_rl.search("tiny", "random", budget=8, out=tmp_path, name="bad", data=df)
    assert not (tmp_path / "bad").exists()


def test_regression_data_takes_the_regression_preset_and_metric(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120)})
    df["y"] = 2 * df["a"] - df["b"] + rng.normal(scale=0.1, size=120)
    search = loss_rl.Search.create(
        agent="random", budget=8, out=tmp_path, name="r", data=loss_rl.DataSpec(df, "y")
    )
    assert search.env_preset.task.kind.value == "regression"
    assert search.env_preset.task.score_metric == "r2"
    assert search.data_record is not None and search.data_record["kind_inferred"]


def test_resume_refuses_a_data_file_that_changed(tmp_path: Path) -> None:
    train_csv, _ = _wine(tmp_path)
    search = loss_rl.Search.create(
        "tiny", "random", budget=8, out=tmp_path, name="c", data=_spec(train_csv)
    )
    search.run(verify_top=False)
    with train_csv.open("a") as f:
        f.write(train_csv.read_text().splitlines()[1] + "\n")
    res = runner.invoke(app, ["resume", str(search.path)])
    assert res.exit_code == 2
    assert "changed since the run started" in res.output


def test_a_model_given_as_code_needs_trust_to_be_run_from_a_folder(tmp_path: Path) -> None:
    train_csv, _ = _wine(tmp_path)
    run = loss_rl.search(
        "tiny",
        "random",
        budget=8,
        out=tmp_path,
        name="m",
        data=train_csv,
        target="label",
        model=make_mlp,
    )
    model = run.config["env"]["task"]["model"]
    assert model == {"kind": "module", "factory": f"{__name__}:make_mlp"}
    # Opening the folder again would import that factory: refused without the user's word.
    with pytest.raises(ConfigError, match="trust-code") as err:
        loss_rl.Search.open(run.path)
    assert err.value.field == "trust_code"
    res = runner.invoke(app, ["resume", str(run.path)])
    assert res.exit_code == 2 and "--trust-code" in res.output
    assert loss_rl.Search.open(run.path, trust_code=True).budget == 8
    trusted = runner.invoke(app, ["resume", str(run.path), "--trust-code"])
    assert trusted.exit_code == 0, trusted.output
    with pytest.raises(ConfigError, match="trust-code"):
        loss_rl.refine(run.path, meta_steps=1, verify_seeds=0, write=False)
    # inspect still works, answering from the ledger only, and says why.
    from loss_rl.inspect import inspect_run

    ins = inspect_run(run.path)
    assert any("trains nothing new" in note for note in ins.missing)


def test_model_must_be_recordable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no importable name"):
        loss_rl.Search.create(
            "tiny", "random", budget=8, out=tmp_path, name="l", model=lambda f, o: nn.Linear(f, o)
        )
    assert not (tmp_path / "l").exists()


MODEL_FILE = """
from torch import nn


def make_model(num_features, num_outputs, hidden=8):
    return nn.Sequential(nn.Linear(num_features, hidden), nn.GELU(), nn.Linear(hidden, num_outputs))
"""


def test_a_yaml_preset_with_a_model_factory_searches_a_csv(tmp_path: Path) -> None:
    # `loss-rl search --data ... --env my.yaml` with `model: {kind: module, ...}` next to it.
    train_csv, _ = _wine(tmp_path)
    folder = tmp_path / "preset"
    folder.mkdir()
    (folder / "my_model.py").write_text(MODEL_FILE)
    import yaml

    preset = yaml.safe_load((EXAMPLES.parent / "envs" / "tiny.yaml").read_text())
    preset["task"]["model"] = {
        "kind": "module",
        "factory": "my_model.py:make_model",  # relative to the YAML file
        "kwargs": {"hidden": 12},
    }
    (folder / "my.yaml").write_text(yaml.safe_dump(preset))
    args = [
        "search",
        "--data",
        str(train_csv),
        "--target",
        "label",
        "--env",
        str(folder / "my.yaml"),
    ]
    res = runner.invoke(app, [*args, "--agent", "random", "--budget", "8", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("data-")]
    model = load_run(run_dir).config["env"]["task"]["model"]
    assert model["factory"] == f"{folder / 'my_model.py'}:make_model"
    assert model["kwargs"] == {"hidden": 12}
    ver = load_run(run_dir).summary["verification"]  # type: ignore[index]
    assert all(row["n"] == 2 for row in ver["table"])  # every loss trained the user's model
