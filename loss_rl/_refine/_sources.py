"""Where a loss comes from (an expression, a known name, a JSON spec, a run folder), and its env.

:func:`resolve_source` is the one resolver of a loss named by a user: the library's ``refine``
and the CLI's ``show``, ``export``, ``evaluate`` and ``refine`` all read losses through it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from loss_rl.errors import ConfigError, LossSpecError, RunError
from loss_rl.export import read_spec
from loss_rl.expr import KNOWN_LOSSES, Expr, TaskKind, known_loss, parse
from loss_rl.neural_loss import SCHEMA as NEURAL_SCHEMA
from loss_rl.output_paths import existing
from loss_rl.presets import EnvPreset, load_env_preset, parse_env_preset, require_code_trust
from loss_rl.store import is_run, load_run
from loss_rl.tasks import TaskConfig


@dataclass(frozen=True)
class LossSource:
    """Where a loss named by a user came from, and what its source said about it.

    Attributes:
        expr: The loss expression.
        origin: ``"expression"``, ``"known"`` (a known loss name), ``"json"`` or ``"run"``.
        path: The JSON file or run folder (``None`` for an expression or a known name).
        kind: Task kind recorded with the loss, if any.
        env: The run's env preset (run folders only).
        data_seed: The run's data seed (run folders only).
        reduction: The batch reduction recorded with the loss (``"mean"`` when none is).
        metadata: What the source recorded about the loss (a spec's metadata, a known loss's
            name and title).
    """

    expr: Expr
    origin: Literal["expression", "known", "json", "run"]
    path: Path | None = None
    kind: TaskKind | None = None
    env: Any = None
    data_seed: int | None = None
    reduction: str = "mean"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """Where the loss came from, in words (``"expression"``, ``"known loss 'gce'"``, a path)."""
        if self.origin == "known":
            return f"known loss {self.metadata.get('name')!r}"
        return str(self.path) if self.path is not None else "expression"

    def refined_path(self, out: str | Path | None = None) -> Path:
        """Where the refined loss goes.

        ``<stem>.refined.json`` next to a JSON source, ``<run>/refined/loss.json`` in a run
        folder, and ``loss.refined.json`` in the *current folder* for an expression or a known
        loss name (they have no folder of their own); into the folder ``out`` when given.
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
    """Read a loss from an expression, a known loss name, a JSON spec file or a run folder.

    The one resolver of a loss named by a user (``loss-rl show``, ``export``, ``evaluate`` and
    ``refine``). A text that names an existing file or folder is read from it; any other text is a
    known loss name or an expression, so expressions with ``/`` (``(1 - p_y^0.7) / 0.7``) and
    expressions longer than a file name work; the parser's limits apply to them.

    Raises:
        LossSpecError: for an empty source, a missing file, an invalid spec, a neural-loss spec
            (its weights are meta-trained with :func:`loss_rl.meta_train`, it has no expression),
            a folder that is not a run folder, or an expression that does not parse.
        RunError: for a run folder without a best loss yet.
    """
    if isinstance(source, Expr):
        return LossSource(source, "expression")
    text = str(source)
    if not text.strip():
        raise LossSpecError(
            "the loss is empty; give an expression (e.g. '-log_p_y'), a known loss name (e.g. "
            "gce), a JSON spec or a run folder",
            field="source",
        )
    path = Path(text)
    found = existing(path)
    if found == "dir":
        return _run_source(path)
    if found == "file":
        return _spec_source(path)
    if isinstance(source, Path) or text.endswith(".json"):
        raise LossSpecError(f"no loss spec file at {text} (no such file or folder)", field="source")
    if text in KNOWN_LOSSES:
        known = KNOWN_LOSSES[text]
        meta = {"name": text, "title": known.title}
        return LossSource(known_loss(text), "known", kind=known.kind, metadata=meta)
    try:
        return LossSource(parse(text), "expression")
    except LossSpecError as err:
        if _looks_like_path(text):
            # Meant as a path, most likely: say so, with what the parser saw.
            raise LossSpecError(
                f"no such file or folder: {text} (and as an expression: {err})", field="source"
            ) from None
        raise


def _looks_like_path(text: str) -> bool:
    """A path separator and nothing of an expression's syntax (spaces, brackets, operators)."""
    return os.sep in text and not any(c in text for c in " \t()^*+,")


def _run_source(path: Path) -> LossSource:
    """A run folder's verified best loss (``best/loss.json``), else its best ledger entry.

    A folder that is not a run but holds ``best/loss.json`` (a copied run's best) is read as
    that spec file.
    """
    if not is_run(path):
        if (path / "best" / "loss.json").is_file():
            return _spec_source(path / "best" / "loss.json")
        raise LossSpecError(
            f"{path} is a folder but not a run folder (no config.yaml and ledger.sqlite); give a "
            "run folder (its best/loss.json), a JSON spec, a known loss name or an expression",
            field="source",
        )
    run = load_run(path)
    config = run.run_config
    env = parse_env_preset(config.env, config.env_name)
    best_json = path / "best" / "loss.json"
    reduction, metadata = "mean", {}
    if best_json.is_file():
        spec = read_spec(best_json)
        expr, kind = spec.expression, spec.kind
        reduction, metadata = spec.reduction, dict(spec.metadata)
    else:
        best = run.best
        if best is None:
            raise RunError(f"{path} has no evaluated loss yet; run or resume the search first")
        expr, kind = parse(best["expression"]), env.task.kind
    return LossSource(expr, "run", path, kind, env, env.evaluation.data_seed, reduction, metadata)


def _spec_source(path: Path) -> LossSource:
    """A JSON spec file (not a neural-loss spec: those are meta-trained, not refined)."""
    if not path.is_file():
        raise LossSpecError(f"no loss spec file at {path}", field="source")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and data.get("schema") == NEURAL_SCHEMA:
        raise LossSpecError(
            f"{path} is a neural loss; its weights are learned with meta-train (load it with "
            "loss_rl.load_loss), and this command works on symbolic losses",
            field="source",
        )
    spec = read_spec(path)
    return LossSource(
        spec.expression,
        "json",
        path,
        spec.kind,
        reduction=spec.reduction,
        metadata=dict(spec.metadata),
    )


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


def resolve_env(
    env: Any, src: LossSource | None = None, *, trust_code: bool = False
) -> ResolvedEnv:
    """The env of a preset name or path, an ``EnvPreset`` or a ``TaskConfig``.

    Args:
        env: The env; ``None`` takes the run's env of a run-folder ``src``.
        src: The loss source, if any.
        trust_code: Allow the run's env to build its model with code the run folder names
            (:func:`loss_rl.presets.require_code_trust`); refused otherwise.

    Raises:
        ConfigError: if no env is given for a loss that does not come from a run folder, or the
            preset is invalid.
    """
    if env is None:
        if src is not None and src.env is not None:
            require_code_trust(src.env.task, str(src.path), trust_code)
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
