"""YAML presets: finding them by name, and validating env presets.

``envs/<name>.yaml`` holds a task, a search space, evaluation and verification settings, a
budget and optionally where trainings run (``executor:``, see :mod:`loss_rl.executors`)
(:class:`EnvPreset`); ``agents/<algo>.yaml`` holds agent hyper-parameters (read by
:mod:`loss_rl.agents`). The presets live at the top of the repository (rl-zoo3 style) and are
copied into the wheel under ``loss_rl/_presets/``; a source checkout reads them from the
repository directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from loss_rl.errors import ConfigError
from loss_rl.executors._config import ExecutorConfig
from loss_rl.tasks import TaskConfig

PresetKind = Literal["envs", "agents"]


def preset_dirs(kind: PresetKind) -> list[Path]:
    """Folders searched for presets of ``kind``, in order (installed copy first)."""
    here = Path(__file__).resolve().parent
    return [p for p in (here / "_presets" / kind, here.parent / kind) if p.is_dir()]


def list_presets(kind: PresetKind) -> list[str]:
    """Names of the available presets of ``kind``."""
    names: set[str] = set()
    for d in preset_dirs(kind):
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_preset(kind: PresetKind, name_or_path: str | Path) -> Path:
    """Resolve a preset name (``digits_noisy``) or a path to a YAML file.

    Raises:
        ConfigError: naming the available presets when nothing matches.
    """
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"preset file {p} does not exist", field=kind.rstrip("s"))
        return p
    for d in preset_dirs(kind):
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    raise ConfigError(
        f"unknown {kind.rstrip('s')} preset {str(name_or_path)!r}; available: "
        f"{', '.join(list_presets(kind)) or '(none found)'}; or give a path to a YAML file",
        field=kind.rstrip("s"),
    )


def load_yaml(path: Path, field: str) -> dict[str, Any]:
    """Read a YAML mapping, turning syntax errors into :class:`ConfigError`."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}", field=field) from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level", field=field)
    return data


# ---------------------------------------------------------------------------------------------
# Env presets

_ENV_KEYS = {"description", "task", "space", "evaluation", "verification", "budget", "executor"}


@dataclass
class EvaluationConfig:
    """How the search scores a candidate.

    Attributes:
        seeds: Paired model seeds per candidate (score = mean over them).
        data_seed: Seed of the data split and corruption (fixed for the run).
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1])
    data_seed: int = 0


@dataclass
class VerificationConfig:
    """How the best candidates are re-checked at the end of a run.

    Attributes:
        top_k: Distinct best candidates (by validation score) re-trained.
        seeds: Fresh model seeds (≥ 2; 5 by default).
        references: Known losses compared against (default by task kind).
    """

    top_k: int = 3
    seeds: int = 5
    references: list[str] | None = None


@dataclass
class EnvPreset:
    """A validated env preset (``envs/<name>.yaml``)."""

    name: str
    description: str
    task: TaskConfig
    space: dict[str, Any]
    evaluation: EvaluationConfig
    verification: VerificationConfig
    budget: int
    executor: ExecutorConfig | None = None  # where trainings run; None: in-process

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``config.yaml``."""
        out = {
            "description": self.description,
            "task": self.task.to_dict(),
            "space": self.space,
            "evaluation": vars(self.evaluation),
            "verification": vars(self.verification),
            "budget": self.budget,
        }
        if self.executor is not None:
            out["executor"] = self.executor.to_dict()
        return out


def _section(data: dict[str, Any], key: str, cls: type, field_prefix: str) -> Any:
    raw = data.get(key) or {}
    if not isinstance(raw, dict):
        raise ConfigError("must be a mapping", field=f"{field_prefix}.{key}")
    allowed = set(cls.__dataclass_fields__)
    for k in raw:
        if k not in allowed:
            raise ConfigError(
                f"unknown key {k!r}; allowed: {', '.join(sorted(allowed))}",
                field=f"{field_prefix}.{key}.{k}",
            )
    obj = cls(**raw)
    for k, v in vars(obj).items():
        if k in ("seeds",) and isinstance(v, list) and not all(isinstance(s, int) for s in v):
            raise ConfigError("must be a list of integers", field=f"{field_prefix}.{key}.{k}")
    return obj


def parse_env_preset(data: dict[str, Any], name: str) -> EnvPreset:
    """Validate an env preset mapping.

    Raises:
        ConfigError: naming the field for unknown keys, wrong types or bad values.
    """
    for k in data:
        if k not in _ENV_KEYS:
            raise ConfigError(
                f"unknown key {k!r}; allowed: {', '.join(sorted(_ENV_KEYS))}", field=f"env.{k}"
            )
    if "task" not in data:
        raise ConfigError("is required (dataset, corruption, model, training)", field="env.task")
    task = TaskConfig.from_dict(data["task"])
    space = data.get("space") or {}
    if not isinstance(space, dict):
        raise ConfigError("must be a mapping", field="env.space")
    if "kind" in space and space["kind"] != task.kind.value:
        raise ConfigError(
            f"the task is {task.kind.value}; remove 'kind' (it follows the task)",
            field="env.space.kind",
        )
    from loss_rl.envs import EnvConfig

    EnvConfig.from_dict({**space, "kind": task.kind.value}, prefix="env.space")  # validate early
    evaluation = _section(data, "evaluation", EvaluationConfig, "env")
    if not evaluation.seeds:
        raise ConfigError("needs at least one seed", field="env.evaluation.seeds")
    verification = _section(data, "verification", VerificationConfig, "env")
    if not isinstance(verification.seeds, int) or verification.seeds < 2:
        raise ConfigError("must be an integer >= 2", field="env.verification.seeds")
    budget = data.get("budget", 200)
    check_budget(budget, "env.budget")
    executor = None
    if data.get("executor") is not None:
        executor = ExecutorConfig.from_dict(data["executor"], "env.executor")
    return EnvPreset(
        name, str(data.get("description", "")), task, dict(space), evaluation, verification,
        int(budget), executor,
    )  # fmt: skip


def check_budget(budget: Any, field_name: str) -> None:
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        raise ConfigError(
            f"must be a positive number of inner trainings, got {budget!r}", field=field_name
        )


def load_env_preset(name_or_path: str | Path) -> EnvPreset:
    """Load and validate ``envs/<name>.yaml``, a YAML path, or a suite task ``<suite>:<task>``."""
    text = str(name_or_path)
    if ":" in text and not Path(text).exists() and not text.endswith((".yaml", ".yml")):
        from loss_rl.suites import load_suite_task

        return load_suite_task(text)
    path = find_preset("envs", name_or_path)
    return parse_env_preset(load_yaml(path, "env"), path.stem)
