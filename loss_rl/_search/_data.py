"""A search on the user's own data: an env preset whose task reads a file, and its run records.

``loss-rl search --data PATH --target COL`` and ``loss_rl.search(data=..., target=...)`` take
everything but the data from an env preset (the default preset for classification, ``diabetes``
for regression, or the one named): its search space, agent-facing settings, model, training
budget and verification. The data's task kind is inferred from the target unless given; label
noise is never injected into user data (a YAML preset with a ``file`` dataset may still ask for
it, for benchmarks).

Data given in memory (a DataFrame, or ``(X, y)`` arrays) is written into the run folder
(``data/data.csv`` or ``data/data.npz``), so that the run can be resumed and inspected from its
folder alone. Every run on a file records its path, size, SHA-256, columns and task kind in
``data.json`` and its SHA-256 in ``config.yaml``: ``loss-rl resume`` refuses a file that changed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loss_rl.errors import ConfigError
from loss_rl.presets import DEFAULT_ENV, EnvPreset, load_env_preset, parse_env_preset
from loss_rl.store import DATA_RECORD
from loss_rl.tasks import (
    DEFAULT_METRIC,
    FILE_DATASET,
    METRICS,
    DatasetConfig,
    describe_file_data,
    file_sha256,
)

DATA_FOLDER = "data"
"""Where data given in memory is written inside the run folder."""

REGRESSION_ENV = "diabetes"
"""The env preset a regression dataset takes its space and settings from by default."""


@dataclass(frozen=True)
class DataSpec:
    """The user's data, as given to :func:`loss_rl.search` or ``loss-rl search --data``.

    Attributes:
        source: A file (CSV, Parquet, ``.npz``, ``.npy``), a pandas DataFrame, or ``(X, y)``.
        target: The label column (CSV/Parquet/DataFrame; a column index for ``.npy``).
        kind: ``"classification"`` or ``"regression"``; ``None``: inferred from the target.
        val_fraction: Fraction of the rows held out for validation (the search's reward).
        test: A separate test file with the same columns (else a fraction is drawn).
        drop_missing: Leave out rows with missing or infinite values instead of refusing them.
        features: Feature columns (default: every other column).
    """

    source: Any
    target: str | int | None = None
    kind: str | None = None
    val_fraction: float | None = None
    test: str | Path | None = None
    drop_missing: bool = False
    features: tuple[str, ...] | None = None


def _in_memory(source: Any, target: str | int | None, folder: Path) -> tuple[Path, str | None]:
    """Write a DataFrame or ``(X, y)`` to ``folder``; the file and the target to read back."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        if target is None:
            raise ConfigError(
                "a DataFrame needs target=: the name of its label column", field="target"
            )
        path = folder / "data.csv"
        source.to_csv(path, index=False)
        return path, str(target)
    if isinstance(source, tuple) and len(source) == 2:
        x, y = (np.asarray(a) for a in source)
        if target is not None:
            raise ConfigError("(X, y) data has no columns: remove target=", field="target")
        path = folder / "data.npz"
        np.savez(path, x=x, y=y)
        return path, None
    raise ConfigError(
        f"data must be a file path, a pandas DataFrame or an (X, y) pair, got "
        f"{type(source).__name__}",
        field="data",
    )


def _dataset(spec: DataSpec, path: Path, target: str | int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": FILE_DATASET, "path": str(path)}
    if target is not None:
        out["target"] = target
    if spec.features is not None:
        out["features"] = list(spec.features)
    if spec.kind is not None:
        out["task_kind"] = spec.kind
    if spec.test is not None:
        out["test_path"] = str(Path(spec.test).resolve())
    if spec.drop_missing:
        out["drop_missing"] = True
    return out


class PreparedData:
    """The data of a new run, checked before its folder exists; moved in once it does.

    Args:
        spec: The user's data.
        env: The env preset named by the user (``None``: by the task kind).
    """

    def __init__(self, spec: DataSpec, env: str | Path | None) -> None:
        self._tmp: Path | None = None
        try:
            self._prepare(spec, env)
        except BaseException:
            self.discard()  # bad data given in memory leaves no temporary copy behind
            raise

    def _prepare(self, spec: DataSpec, env: str | Path | None) -> None:
        source = spec.source
        if isinstance(source, (str, Path)):
            path, target = Path(source).resolve(), spec.target
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix="loss_rl_data_"))
            path, target = _in_memory(source, spec.target, self._tmp)
        if spec.val_fraction is not None and not 0 < spec.val_fraction < 1:
            raise ConfigError(
                f"must be a fraction in (0, 1), got {spec.val_fraction!r}", field="val_fraction"
            )
        dataset = _dataset(spec, path, target)
        # Reading the file here raises the data's errors (missing file, unknown column, NaN,
        # one class, ...) before anything is written.
        cfg = DatasetConfig.from_dict(dataset)
        describe_file_data(cfg)  # reads and checks the whole file (and its test file)
        kind = cfg.kind
        base = load_env_preset(env if env is not None else _default_env(kind.value))
        if base.task.kind is not kind:
            raise ConfigError(
                f"the data is a {kind.value} task but env preset {base.name!r} is for "
                f"{base.task.kind.value}; choose a {kind.value} preset (e.g. "
                f"{_default_env(kind.value)}), or give the data's kind (--kind / kind=)",
                field="env",
            )
        dataset["sha256"] = file_sha256(path)
        self.preset = _with_data(base, dataset, spec.val_fraction, stem=Path(path).stem)
        self.description = describe_file_data(self.preset.task.dataset)

    def move_into(self, run_dir: Path) -> EnvPreset:
        """Move in-memory data into ``run_dir``, write ``data.json``; the preset to record."""
        preset = self.preset
        if self._tmp is not None:
            dest = run_dir / DATA_FOLDER
            dest.mkdir()
            moved = {}
            for f in self._tmp.iterdir():
                target = dest / f.name
                shutil.move(str(f), target)
                moved[str(f)] = str(target)
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            task = preset.task.to_dict()
            task["dataset"]["path"] = moved[task["dataset"]["path"]]
            preset = parse_env_preset({**preset.to_dict(), "task": task}, preset.name)
            self.description = describe_file_data(preset.task.dataset)
        (run_dir / DATA_RECORD).write_text(json.dumps(self.description, indent=2))
        return preset

    def discard(self) -> None:
        """Remove the temporary copy of in-memory data (a run that was not created)."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _default_env(kind: str) -> str:
    return DEFAULT_ENV if kind == "classification" else REGRESSION_ENV


def _with_data(
    base: EnvPreset, dataset: Mapping[str, Any], val_fraction: float | None, stem: str
) -> EnvPreset:
    """``base`` with its task's dataset replaced by ``dataset`` (no injected label noise)."""
    task = base.task.to_dict()
    task["dataset"] = dict(dataset)
    task["corruption"] = {"kind": "none"}
    split = dict(task.get("split") or {})
    if val_fraction is not None:
        split["val"] = float(val_fraction)
    task["split"] = split
    kind = DatasetConfig.from_dict(dataset).kind
    metric = task.get("metric")
    if metric is not None and metric not in METRICS[kind]:
        task["metric"] = DEFAULT_METRIC[kind]
    env = base.to_dict()
    env["task"] = task
    env["description"] = f"{stem}: the user's data, with {base.name}'s search settings"
    return parse_env_preset(env, f"data-{stem}")


def model_spec(model: Any) -> dict[str, Any]:
    """A task's ``model:`` section from ``model=`` of :func:`loss_rl.search`.

    Args:
        model: A mapping (a ``model:`` section, e.g. ``{"kind": "mlp", "widths": [128]}``) or a
            module-level function ``f(num_features, num_outputs) -> torch.nn.Module``, recorded
            by name (``module:function``, or ``file.py:function`` for a script's own function)
            so that the run folder says which code builds its model.

    Raises:
        ConfigError: for a lambda, a nested function or another object that has no importable
            name (field ``model``).
    """
    if isinstance(model, Mapping):
        return dict(model)
    if not callable(model):
        raise ConfigError(
            f"model must be a model: section (a mapping) or a function returning a "
            f"torch.nn.Module, got {type(model).__name__}",
            field="model",
        )
    qualname = getattr(model, "__qualname__", "")
    module = getattr(model, "__module__", None)
    if not qualname or "<" in qualname or module is None:
        raise ConfigError(
            f"{model!r} has no importable name: define the model function at the top level of "
            "a module or script (a run folder records it as module:function)",
            field="model",
        )
    if module == "__main__":
        import sys

        main = getattr(sys.modules.get("__main__"), "__file__", None)
        if main is None:
            raise ConfigError(
                "a model function defined interactively cannot be recorded; put it in a .py "
                "file and import it",
                field="model",
            )
        module = str(Path(main).resolve())
    return {"kind": "module", "factory": f"{module}:{qualname}"}


def with_model(preset: EnvPreset, model: Any) -> EnvPreset:
    """``preset`` with its task's model replaced (see :func:`model_spec`)."""
    task = preset.task.to_dict()
    task["model"] = model_spec(model)
    return parse_env_preset({**preset.to_dict(), "task": task}, preset.name)
