"""A user's data file as a dataset (``task.dataset.name: file``): reading, encoding, kind
inference, checks with clear errors, round trips, splitting, and paths relative to a preset.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.datasets import load_diabetes, load_wine

from loss_rl.errors import ConfigError
from loss_rl.expr import TaskKind
from loss_rl.presets import load_env_preset
from loss_rl.tasks import (
    DatasetConfig,
    TaskConfig,
    describe_file_data,
    file_sha256,
    load_raw,
    load_task,
)

WINE_NAMES = np.array(["barolo", "grignolino", "barbera"])  # sklearn's classes 0, 1, 2


def _wine_frame() -> pd.DataFrame:
    x, y = load_wine(return_X_y=True, as_frame=True)
    frame = x.copy()
    # A text feature to one-hot encode, and a text label to map to class indices.
    frame["colour"] = np.where(
        frame["alcohol"] > 13.0, "red", np.where(frame["alcohol"] > 12.3, "rose", "white")
    )
    frame["label"] = WINE_NAMES[y.to_numpy()]
    return frame


@pytest.fixture
def wine_csv(tmp_path: Path) -> Path:
    path = tmp_path / "wine.csv"
    _wine_frame().to_csv(path, index=False)
    return path


@pytest.fixture
def diabetes_csv(tmp_path: Path) -> Path:
    x, y = load_diabetes(return_X_y=True, as_frame=True, scaled=False)
    frame = x.copy()
    frame["sex"] = np.where(frame["sex"] == 1, "f", "m")
    frame["progression"] = y.astype(float)
    path = tmp_path / "diabetes.csv"
    frame.to_csv(path, index=False)
    return path


def _task(dataset: dict[str, Any], **sections: Any) -> TaskConfig:
    return TaskConfig.from_dict({"dataset": {"name": "file", **dataset}, **sections})


def _csv(tmp_path: Path, name: str, frame: pd.DataFrame | dict[str, Any]) -> Path:
    path = tmp_path / name
    pd.DataFrame(frame).to_csv(path, index=False)
    return path


def _fails(make: Callable[[], object], field: str, fragment: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field, str(info.value)
    assert fragment in str(info.value), str(info.value)
    return info.value


# --- loading and splitting -------------------------------------------------------------------


def test_csv_with_text_label_and_text_feature_loads_and_splits(wine_csv: Path) -> None:
    cfg = _task({"path": str(wine_csv), "target": "label"})
    assert cfg.kind is TaskKind.CLASSIFICATION
    assert cfg.score_metric == "accuracy"
    assert cfg.dataset.shape() == (13 + 3, 3)  # 13 numbers, colour one-hot over 3 values

    data = load_task(cfg, seed=0)
    assert len(data.train) + len(data.val) + len(data.test) == 178
    assert data.num_classes == 3 and data.num_features == 16
    assert data.train.y.dtype == torch.int64
    assert set(data.train.y.tolist()) == {0, 1, 2}
    # Standardised with the training part's statistics (_data.py, as for every dataset).
    assert torch.allclose(data.train.x.mean(0), torch.zeros(16), atol=1e-5)
    # Same config and seed: same data; another seed: another split.
    assert torch.equal(load_task(cfg, seed=0).val.x, data.val.x)
    assert not np.array_equal(load_task(cfg, seed=1).rows["val"], data.rows["val"])


def test_classes_are_numbered_in_sorted_order_of_their_names(wine_csv: Path) -> None:
    cfg = _task({"path": str(wine_csv), "target": "label"})
    raw = load_raw(cfg.dataset)
    assert raw.classes == ("barbera", "barolo", "grignolino")
    labels = pd.read_csv(wine_csv)["label"].to_numpy()
    assert np.array_equal(np.asarray(raw.classes)[raw.y], labels)
    description = describe_file_data(cfg.dataset)
    assert description["classes"] == {
        "names": ["barbera", "barolo", "grignolino"],
        "counts": [48, 59, 71],
    }


def test_text_features_are_one_hot_encoded_in_sorted_order(wine_csv: Path) -> None:
    cfg = _task({"path": str(wine_csv), "target": "label"})
    raw = load_raw(cfg.dataset)
    description = describe_file_data(cfg.dataset)
    names = description["columns"]["names"]
    assert names[-3:] == ["colour=red", "colour=rose", "colour=white"]
    assert description["columns"]["encoded"] == {"colour": ["red", "rose", "white"]}
    assert description["columns"]["source"][-1] == "colour"
    assert description["columns"]["count"] == raw.x.shape[1] == 16
    colour = pd.read_csv(wine_csv)["colour"].to_numpy()
    for j, value in enumerate(["red", "rose", "white"]):
        assert np.array_equal(raw.x[:, 13 + j], (colour == value).astype(float))
    # Numeric columns are used as they are (standardisation comes later, on the train part).
    assert np.allclose(raw.x[:, 0], pd.read_csv(wine_csv)["alcohol"].to_numpy())


def test_features_selects_columns(wine_csv: Path) -> None:
    cfg = _task({"path": str(wine_csv), "target": "label", "features": ["colour", "alcohol"]})
    assert cfg.dataset.shape() == (4, 3)
    description = describe_file_data(cfg.dataset)
    assert description["columns"]["names"] == [
        "colour=red",
        "colour=rose",
        "colour=white",
        "alcohol",
    ]


def test_regression_csv(diabetes_csv: Path) -> None:
    cfg = _task({"path": str(diabetes_csv), "target": "progression"})
    assert cfg.kind is TaskKind.REGRESSION and cfg.score_metric == "r2"
    assert cfg.dataset.shape() == (9 + 2, 1)  # sex: f / m one-hot
    data = load_task(cfg, seed=0)
    assert data.num_classes is None and data.train.y.dtype == torch.float32
    assert abs(float(data.train.y.mean())) < 1e-5  # standardised targets
    description = describe_file_data(cfg.dataset)
    y = pd.read_csv(diabetes_csv)["progression"]
    assert description["task_kind"] == "regression" and description["kind_inferred"] is True
    assert description["classes"] is None
    assert description["target_stats"]["mean"] == pytest.approx(y.mean())
    assert description["target_stats"]["std"] == pytest.approx(y.std(ddof=0))


def test_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    cfg = _task({"path": str(path)})
    assert cfg.kind is TaskKind.CLASSIFICATION and cfg.dataset.shape() == (5, 3)
    raw = load_raw(cfg.dataset)
    assert np.array_equal(raw.x, x) and np.array_equal(raw.y, y)
    data = load_task(cfg, seed=0)
    assert len(data.train) + len(data.val) + len(data.test) == 120
    description = describe_file_data(cfg.dataset)
    assert description["format"] == "npz" and description["target"] == "y"


@pytest.mark.parametrize("target", [None, -1, "3", 0])
def test_npy_takes_a_target_column(tmp_path: Path, target: str | int | None) -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(80, 4))
    path = tmp_path / "data.npy"
    np.save(path, a)
    options: dict[str, Any] = {"path": str(path)}
    if target is not None:
        options["target"] = target
    cfg = _task(options)
    j = 3 if target is None else int(target) % 4
    assert cfg.kind is TaskKind.REGRESSION and cfg.dataset.shape() == (3, 1)
    raw = load_raw(cfg.dataset)
    assert np.array_equal(raw.y, a[:, j])
    assert np.array_equal(raw.x, np.delete(a, j, axis=1))
    assert load_task(cfg, seed=0).num_features == 3


def test_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "wine.parquet"
    _wine_frame().to_parquet(path)
    cfg = _task({"path": str(path), "target": "label"})
    assert cfg.dataset.shape() == (16, 3)
    assert load_task(cfg, seed=0).num_classes == 3


def test_parquet_without_pyarrow_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1 not really parquet")

    def no_engine(*args: object, **kwargs: object) -> None:
        raise ImportError("Unable to find a usable engine; tried using: 'pyarrow'")

    monkeypatch.setattr(pd, "read_parquet", no_engine)
    _fails(
        lambda: _task({"path": str(path), "target": "y"}),
        "task.dataset.path",
        'pip install "loss-rl[parquet]"',
    )


# --- the task kind ---------------------------------------------------------------------------

KINDS = [
    ("text", ["a", "b", "c"] * 20, TaskKind.CLASSIFICATION),
    ("bool", [True, False] * 30, TaskKind.CLASSIFICATION),
    ("few integers", [0, 1, 2, 3] * 15, TaskKind.CLASSIFICATION),
    ("many integers", list(range(60)), TaskKind.REGRESSION),
    ("whole floats", [1.0, 2.0, 3.0] * 20, TaskKind.CLASSIFICATION),
    ("real floats", list(np.linspace(0, 1, 60)), TaskKind.REGRESSION),
]


@pytest.mark.parametrize(("what", "y", "kind"), KINDS, ids=[k[0] for k in KINDS])
def test_kind_is_inferred_from_the_target(
    tmp_path: Path, what: str, y: list[Any], kind: TaskKind
) -> None:
    rng = np.random.default_rng(0)
    path = _csv(tmp_path, "d.csv", {"f": rng.normal(size=len(y)), "y": y})
    cfg = _task({"path": str(path), "target": "y"})
    assert cfg.kind is kind
    description = describe_file_data(cfg.dataset)
    assert description["kind_inferred"] is True and description["task_kind"] == kind.value
    assert description["kind_reason"] in description["summary"]


def test_task_kind_overrides_the_inference(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ratings = rng.integers(1, 6, size=100)  # looks like 5 classes
    path = _csv(tmp_path, "d.csv", {"f": rng.normal(size=100), "rating": ratings})
    inferred = _task({"path": str(path), "target": "rating"})
    assert inferred.kind is TaskKind.CLASSIFICATION
    assert load_raw(inferred.dataset).classes == ("1", "2", "3", "4", "5")
    forced = _task({"path": str(path), "target": "rating", "task_kind": "regression"})
    assert forced.kind is TaskKind.REGRESSION and forced.dataset.shape() == (1, 1)
    assert np.array_equal(load_raw(forced.dataset).y, ratings.astype(float))
    assert describe_file_data(forced.dataset)["kind_inferred"] is False
    assert load_task(forced, seed=0).num_classes is None


# --- round trips, corruption -----------------------------------------------------------------


def test_round_trip_through_yaml(wine_csv: Path, tmp_path: Path) -> None:
    test = _csv(tmp_path, "test.csv", _wine_frame().iloc[:30])
    cfg = _task(
        {
            "path": str(wine_csv),
            "target": "label",
            "features": ["alcohol", "colour"],
            "task_kind": "classification",
            "test_path": str(test),
            "drop_missing": True,
            "sha256": file_sha256(wine_csv),
        },
        corruption={"kind": "symmetric", "rate": 0.2},
    )
    text = yaml.safe_dump(cfg.to_dict())
    assert TaskConfig.from_dict(yaml.safe_load(text)) == cfg
    assert cfg.to_dict()["dataset"]["features"] == ["alcohol", "colour"]
    # Built-in datasets write only their own options, as before.
    assert TaskConfig.from_dict({"dataset": "digits"}).to_dict()["dataset"] == {"name": "digits"}


def test_regression_round_trip(diabetes_csv: Path) -> None:
    cfg = _task({"path": str(diabetes_csv), "target": "progression"})
    assert TaskConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg


def test_label_noise_applies_to_a_file_dataset(wine_csv: Path) -> None:
    cfg = _task(
        {"path": str(wine_csv), "target": "label"},
        corruption={"kind": "symmetric", "rate": 0.3},
    )
    data = load_task(cfg, seed=0)
    assert data.noise.rate == pytest.approx(0.3, abs=0.02)
    raw = load_raw(cfg.dataset)
    assert np.array_equal(raw.y[data.rows["test"]], data.test.y.numpy())  # test stays clean


# --- sha256 ----------------------------------------------------------------------------------


def test_sha256_detects_a_changed_file(wine_csv: Path) -> None:
    recorded = file_sha256(wine_csv)
    assert recorded == hashlib.sha256(wine_csv.read_bytes()).hexdigest()
    same = _task({"path": str(wine_csv), "target": "label", "sha256": recorded})
    assert describe_file_data(same.dataset)["sha256"] == recorded
    frame = _wine_frame()
    frame.loc[0, "alcohol"] += 1
    frame.to_csv(wine_csv, index=False)
    err = _fails(
        lambda: _task({"path": str(wine_csv), "target": "label", "sha256": recorded.upper()}),
        "task.dataset.path",
        "changed since the run started",
    )
    assert recorded[:12] in str(err) and file_sha256(wine_csv)[:12] in str(err)
    assert "restore the file or start a new run" in str(err)


# --- test_path -------------------------------------------------------------------------------


def _train_test(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """A data file of 138 wine rows and a test file of the other 40."""
    frame = _wine_frame().sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, test = frame.iloc[:138].copy(), frame.iloc[138:].copy()
    test.loc[test.index[0], "colour"] = "orange"  # a value only the test file has
    return _csv(tmp_path, "train.csv", train), _csv(tmp_path, "test.csv", test), test


def test_test_path_rows_come_last_with_the_same_encoding(tmp_path: Path) -> None:
    train_path, test_path, test = _train_test(tmp_path)
    cfg = _task({"path": str(train_path), "target": "label", "test_path": str(test_path)})
    raw = load_raw(cfg.dataset)
    assert raw.test_rows == 40 and len(raw.y) == 178
    assert np.allclose(raw.x[138:, 0], test["alcohol"].to_numpy())
    names = describe_file_data(cfg.dataset)["columns"]["names"]
    assert names[-4:] == ["colour=orange", "colour=red", "colour=rose", "colour=white"]
    assert raw.x[138, names.index("colour=orange")] == 1.0
    assert np.array_equal(np.asarray(raw.classes)[raw.y[138:]], test["label"].to_numpy())
    described = describe_file_data(cfg.dataset)
    assert described["rows"] == 138 and described["test"]["rows"] == 40
    assert described["test"]["path"] == str(test_path)


def test_test_path_is_the_test_part(tmp_path: Path) -> None:
    train_path, test_path, test = _train_test(tmp_path)
    cfg = _task({"path": str(train_path), "target": "label", "test_path": str(test_path)})
    data = load_task(cfg, seed=0)
    assert np.array_equal(data.rows["test"], np.arange(138, 178))
    assert len(data.train) + len(data.val) == 138
    classes = np.asarray(load_raw(cfg.dataset).classes)
    assert np.array_equal(classes[data.test.y.numpy()], test["label"].to_numpy())


# --- missing values --------------------------------------------------------------------------


def _with_holes(tmp_path: Path) -> Path:
    frame = _wine_frame()
    frame.loc[[3, 7], "alcohol"] = np.nan
    frame.loc[7, "hue"] = np.inf
    frame.loc[11, "label"] = None
    return _csv(tmp_path, "holes.csv", frame)


def test_missing_values_are_an_error_naming_columns_and_rows(tmp_path: Path) -> None:
    path = _with_holes(tmp_path)
    err = _fails(
        lambda: _task({"path": str(path), "target": "label"}),
        "task.dataset.path",
        "missing or infinite values in 3 of 178 rows",
    )
    assert "'alcohol' (2)" in str(err) and "'hue' (1)" in str(err) and "'label' (1)" in str(err)
    assert "drop_missing: true" in str(err)


def test_drop_missing_drops_those_rows(tmp_path: Path) -> None:
    path = _with_holes(tmp_path)
    cfg = _task({"path": str(path), "target": "label", "drop_missing": True})
    assert len(load_raw(cfg.dataset).y) == 175
    described = describe_file_data(cfg.dataset)
    assert described["rows"] == 175 and described["rows_dropped"] == 3
    assert "3 dropped for missing values" in described["summary"]
    # Holes only in a column that is not used do not count.
    cfg = _task({"path": str(path), "target": "colour", "features": ["ash"]})
    assert describe_file_data(cfg.dataset)["rows_dropped"] == 0


# --- paths -----------------------------------------------------------------------------------


def test_env_preset_file_reads_data_next_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    _wine_frame().to_csv(folder / "data" / "wine.csv", index=False)
    _wine_frame().iloc[:30].to_csv(folder / "test.csv", index=False)
    preset = {
        "task": {
            "dataset": {
                "name": "file",
                "path": "data/wine.csv",
                "test_path": "../project/test.csv",
                "target": "label",
            },
            "training": {"steps": 5, "full_steps": 5},
        },
        "budget": 4,
    }
    (folder / "mine.yaml").write_text(yaml.safe_dump(preset), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    env = load_env_preset(Path("..") / "project" / "mine.yaml")
    assert env.task.dataset.path == str(folder / "data" / "wine.csv")
    assert env.task.dataset.test_path == str(folder / "test.csv")
    assert env.task.dataset.shape() == (16, 3)
    # config.yaml of a run holds the absolute paths: it reads back from anywhere.
    assert TaskConfig.from_dict(env.to_dict()["task"]) == env.task


def test_relative_path_in_python_is_relative_to_the_current_directory(
    wine_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(wine_csv.parent)
    cfg = DatasetConfig(name="file", path="wine.csv", target="label", features=["alcohol"])
    assert cfg.path == "wine.csv"  # kept as given
    assert cfg.features == ("alcohol",)  # a list from Python becomes a (hashable) tuple
    description = describe_file_data(cfg)
    assert description["path"] == str(wine_csv)
    assert json.loads(json.dumps(description)) == description  # plain JSON data


# --- errors ----------------------------------------------------------------------------------


def _frame(n: int = 30, **columns: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {"a": rng.normal(size=n), "b": rng.normal(size=n), **columns}


def test_config_errors_before_reading(tmp_path: Path) -> None:
    csv = str(tmp_path / "d.csv")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({}, "task.dataset.path", "needs path"),
        ({"path": str(tmp_path / "d.xlsx"), "target": "y"}, "task.dataset.path", ".csv, .parquet"),
        ({"path": csv}, "task.dataset.target", "required for a csv file"),
        ({"path": str(tmp_path / "d.npz"), "target": "y"}, "task.dataset.target", "x (features)"),
        ({"path": str(tmp_path / "d.npy"), "features": ["a"]}, "task.dataset.features", "every"),
        ({"path": str(tmp_path / "d.npy"), "target": "y"}, "task.dataset.target", "column index"),
        ({"path": csv, "target": "y", "features": []}, "task.dataset.features", "no column"),
        (
            {"path": csv, "target": "y", "features": ["a", "y"]},
            "task.dataset.features",
            "cannot also be a feature",
        ),
        ({"path": csv, "target": "y", "features": ["a", "a"]}, "task.dataset.features", "twice"),
        (
            {"path": csv, "target": "y", "test_path": str(tmp_path / "t.npz")},
            "task.dataset.test_path",
            "must be a csv file",
        ),
        ({"path": csv, "target": "y", "sha256": "abc"}, "task.dataset.sha256", "64 hex digits"),
        ({"path": csv, "target": "y", "task_kind": "ranking"}, "task.dataset.task_kind", "choose"),
        ({"path": csv, "target": "y", "seed": 3}, "task.dataset.seed", "takes only path"),
    ]
    for options, field, fragment in cases:
        _fails(lambda options=options: _task(options), field, fragment)  # type: ignore[misc]
    # File options on a built-in dataset are refused, as any foreign option is.
    _fails(
        lambda: TaskConfig.from_dict({"dataset": {"name": "digits", "path": csv}}),
        "task.dataset.path",
        "takes no options",
    )
    _fails(
        lambda: TaskConfig.from_dict({"dataset": {"name": "digits", "drop_missing": False}}),
        "task.dataset.drop_missing",
        "takes no options",
    )


def test_missing_and_empty_files(tmp_path: Path) -> None:
    _fails(
        lambda: _task({"path": str(tmp_path / "nowhere.csv"), "target": "y"}),
        "task.dataset.path",
        f"file not found: {tmp_path / 'nowhere.csv'}",
    )
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _fails(lambda: _task({"path": str(empty), "target": "y"}), "task.dataset.path", "is empty")
    header = tmp_path / "header.csv"
    header.write_text("a,b,y\n")
    _fails(lambda: _task({"path": str(header), "target": "y"}), "task.dataset.path", "no data rows")
    _fails(
        lambda: _task({"path": str(tmp_path), "target": "y"}), "task.dataset.path", "unsupported"
    )


def test_column_errors(tmp_path: Path) -> None:
    path = str(_csv(tmp_path, "d.csv", _frame(y=[0, 1, 2] * 10)))
    err = _fails(
        lambda: _task({"path": path, "target": "label"}),
        "task.dataset.target",
        "column 'label' not found in d.csv",
    )
    assert "its columns are: 'a', 'b', 'y'" in str(err)
    _fails(
        lambda: _task({"path": path, "target": "y", "features": ["a", "c"]}),
        "task.dataset.features",
        "column(s) 'c' not found in d.csv",
    )
    only = str(_csv(tmp_path, "only.csv", {"y": [0, 1] * 10}))
    _fails(lambda: _task({"path": only, "target": "y"}), "task.dataset.path", "no column besides")
    ids = str(_csv(tmp_path, "ids.csv", _frame(id=[f"u{i}" for i in range(30)], y=[0, 1] * 15)))
    _fails(
        lambda: _task({"path": ids, "target": "y"}),
        "task.dataset.features",
        "column 'id' holds 30 distinct text values",
    )


def test_class_errors(tmp_path: Path) -> None:
    one = str(_csv(tmp_path, "one.csv", _frame(y=["spam"] * 30)))
    _fails(lambda: _task({"path": one, "target": "y"}), "task.dataset.target", "single class")
    rare = str(_csv(tmp_path, "rare.csv", _frame(y=["a"] * 14 + ["b"] * 14 + ["c"] * 2)))
    err = _fails(
        lambda: _task({"path": rare, "target": "y"}),
        "task.dataset.target",
        "class(es) 'c' (2) of target 'y' have fewer than 3 rows",
    )
    assert "train, val and test parts" in str(err)


def test_text_regression_target(tmp_path: Path) -> None:
    path = str(_csv(tmp_path, "d.csv", _frame(y=["low", "high"] * 15)))
    _fails(
        lambda: _task({"path": path, "target": "y", "task_kind": "regression"}),
        "task.dataset.task_kind",
        "holds text (e.g. 'low')",
    )


def test_test_file_errors(tmp_path: Path) -> None:
    path = str(_csv(tmp_path, "d.csv", _frame(y=["a", "b"] * 15)))
    lacking = str(_csv(tmp_path, "t1.csv", {"a": [1.0, 2.0], "y": ["a", "b"]}))
    _fails(
        lambda: _task({"path": path, "target": "y", "test_path": lacking}),
        "task.dataset.test_path",
        "t1.csv lacks column(s) 'b' of d.csv",
    )
    no_target = str(_csv(tmp_path, "t0.csv", _frame(2)))
    _fails(
        lambda: _task({"path": path, "target": "y", "test_path": no_target}),
        "task.dataset.test_path",
        "t0.csv lacks column(s) 'y' of d.csv",
    )
    unseen = str(_csv(tmp_path, "t2.csv", _frame(4, y=["a", "b", "z", "a"])))
    _fails(
        lambda: _task({"path": path, "target": "y", "test_path": unseen}),
        "task.dataset.test_path",
        "class(es) 'z' of t2.csv do not occur in d.csv",
    )
    holes = _frame(4, y=["a", "b", "a", "b"])
    holes["a"][1] = np.nan
    holed = str(_csv(tmp_path, "t3.csv", holes))
    _fails(
        lambda: _task({"path": path, "target": "y", "test_path": holed}),
        "task.dataset.test_path",
        "t3.csv has missing or infinite values in 1 of 4 rows",
    )


def test_array_file_errors(tmp_path: Path) -> None:
    def npz(name: str, **arrays: np.ndarray) -> str:
        np.savez(tmp_path / name, **arrays)  # type: ignore[arg-type]
        return str(tmp_path / name)

    x, y = np.zeros((10, 2)), np.arange(10) % 2
    _fails(
        lambda: _task({"path": npz("a.npz", x=x, labels=y)}),
        "task.dataset.path",
        "lacks array(s) 'y'",
    )
    _fails(
        lambda: _task({"path": npz("b.npz", x=x, y=y[:9])}),
        "task.dataset.path",
        "x has 10 rows but y has 9",
    )
    _fails(
        lambda: _task({"path": npz("c.npz", x=np.zeros(10), y=y)}),
        "task.dataset.path",
        "it must be 2-D [samples, features]",
    )
    np.save(tmp_path / "flat.npy", np.zeros(10))
    _fails(
        lambda: _task({"path": str(tmp_path / "flat.npy")}),
        "task.dataset.path",
        "an .npy dataset is 2-D",
    )
    np.save(tmp_path / "wide.npy", np.zeros((10, 3)))
    _fails(
        lambda: _task({"path": str(tmp_path / "wide.npy"), "target": 5}),
        "task.dataset.target",
        "column 5 is out of range",
    )
    (tmp_path / "text.npy").write_text("not numpy")
    _fails(
        lambda: _task({"path": str(tmp_path / "text.npy")}),
        "task.dataset.path",
        "cannot read text.npy as a NumPy file",
    )
