"""Where a loss to refine comes from (an expression, a JSON spec, a run folder), and its env."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from loss_rl.errors import ConfigError, LossSpecError, RunError
from loss_rl.export import read_spec
from loss_rl.expr import Expr, TaskKind, parse
from loss_rl.neural_loss import SCHEMA as NEURAL_SCHEMA
from loss_rl.presets import EnvPreset, load_env_preset, parse_env_preset
from loss_rl.store import is_run, load_run
from loss_rl.tasks import TaskConfig


@dataclass(frozen=True)
class LossSource:
    """Where a loss to refine came from.

    Attributes:
        expr: The loss expression.
        origin: ``"expression"``, ``"json"`` or ``"run"``.
        path: The JSON file or run folder (``None`` for a bare expression).
        kind: Task kind recorded with the loss, if any.
        env: The run's env preset (run folders only).
        data_seed: The run's data seed (run folders only).
    """

    expr: Expr
    origin: Literal["expression", "json", "run"]
    path: Path | None = None
    kind: TaskKind | None = None
    env: Any = None
    data_seed: int | None = None

    def refined_path(self, out: str | Path | None = None) -> Path:
        """Where the refined loss goes.

        ``<stem>.refined.json`` next to a JSON source, ``<run>/refined/loss.json`` in a run
        folder, ``./loss.refined.json`` for an expression (or into ``out`` when given).
        """
        if self.origin == "run":
            assert self.path is not None
            name = "loss.json"
            folder = self.path / "refined"
        elif self.origin == "json":
            assert self.path is not None
            name = f"{self.path.stem}.refined.json"
            folder = self.path.parent
        else:
            name, folder = "loss.refined.json", Path.cwd()
        return (Path(out) if out is not None else folder) / name


def resolve_source(source: str | Path | Expr) -> LossSource:
    """Read the loss to refine from an expression, a JSON spec file or a run folder.

    Raises:
        LossSpecError: for a missing file, an invalid spec, a neural-loss spec (its weights are
            meta-trained with :func:`loss_rl.meta_train`, not refined) or an expression that
            does not parse.
        RunError: for a run folder without a best loss yet.
    """
    if isinstance(source, Expr):
        return LossSource(source, "expression")
    path = Path(source)
    if path.is_dir():
        return _run_source(path)
    if path.suffix == ".json" or path.is_file():
        return _spec_source(path)
    return LossSource(parse(str(source)), "expression")


def _run_source(path: Path) -> LossSource:
    """A run folder's verified best loss (``best/loss.json``), else its best ledger entry."""
    if not is_run(path):
        raise LossSpecError(
            f"{path} is a folder but not a run folder (no config.yaml and ledger.sqlite)",
            field="source",
        )
    run = load_run(path)
    config = run.run_config
    env = parse_env_preset(config.env, config.env_name)
    best_json = path / "best" / "loss.json"
    if best_json.is_file():
        spec = read_spec(best_json)
        expr, kind = spec.expression, spec.kind
    else:
        best = run.best
        if best is None:
            raise RunError(f"{path} has no evaluated loss yet; run or resume the search first")
        expr, kind = parse(best["expression"]), env.task.kind
    return LossSource(expr, "run", path, kind, env, env.evaluation.data_seed)


def _spec_source(path: Path) -> LossSource:
    """A JSON spec file (not a neural-loss spec: those are meta-trained, not refined)."""
    if not path.is_file():
        raise LossSpecError(f"no loss spec file at {path}", field="source")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and data.get("schema") == NEURAL_SCHEMA:
        raise LossSpecError(
            f"{path} is a neural loss; its weights are learned with meta-train, refine works on "
            "symbolic losses",
            field="source",
        )
    spec = read_spec(path)
    return LossSource(spec.expression, "json", path, spec.kind)


@dataclass(frozen=True)
class ResolvedEnv:
    """The task a loss is learned on, and the data seed its verification uses.

    Attributes:
        name: Env preset name (``"task"`` for a bare ``TaskConfig``).
        task: The task.
        data_seed: Seed of the data split (the search's, so that test stays unseen).
    """

    name: str
    task: TaskConfig
    data_seed: int


def resolve_env(env: Any, src: LossSource | None = None) -> ResolvedEnv:
    """The env of a preset name or path, an ``EnvPreset`` or a ``TaskConfig``.

    Args:
        env: The env; ``None`` takes the run's env of a run-folder ``src``.
        src: The loss source, if any.

    Raises:
        ConfigError: if no env is given for a loss that does not come from a run folder, or the
            preset is invalid.
    """
    if env is None:
        if src is not None and src.env is not None:
            return ResolvedEnv(src.env.name, src.env.task, int(src.data_seed or 0))
        raise ConfigError(
            "give an env preset (e.g. digits_noisy) for a loss that does not come from a run "
            "folder",
            field="env",
        )
    if isinstance(env, TaskConfig):
        return ResolvedEnv("task", env, 0)
    if isinstance(env, EnvPreset):
        return ResolvedEnv(env.name, env.task, int(env.evaluation.data_seed))
    preset = load_env_preset(env)
    return ResolvedEnv(preset.name, preset.task, int(preset.evaluation.data_seed))
