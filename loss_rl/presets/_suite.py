"""Task suites: many tasks sharing one loss-design MDP, for pretraining a policy across tasks.

A suite (``envs/suites/<name>.yaml``) lists tasks — datasets × corruptions × sizes × models —
that share one search space, so a policy trained on some of them can be rolled out on another::

    description: ...
    space: {space: parametric, max_steps: 6, ...}    # the MDP, shared by every task
    evaluation: {seeds: [0, 1], data_seed: 0}
    verification: {top_k: 3, seeds: 5}
    budget: 100            # inner trainings when one suite task is searched alone
    pretrain_budget: 1500  # inner trainings of `loss-rl pretrain` across the suite
    defaults:              # task fields merged under every inline task
      split: {val: 0.2, test: 0.2}
      training: {optimizer: adam, lr: 0.01, batch_size: 128, steps: 200, full_steps: 300}
      metric: accuracy
    tasks:
      digits_sym40: {preset: digits_noisy}      # the task of an env preset
      wine_sym30:                               # an inline task (merged over `defaults`)
        dataset: {name: wine}
        corruption: {kind: symmetric, rate: 0.3}
        model: {kind: mlp, widths: [32]}

Every task of a suite is also an env preset named ``<suite>:<task>``
(``loss-rl search --env noisy_classification:wine_sym30``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loss_rl.errors import ConfigError
from loss_rl.presets._env import (
    EnvPreset,
    EvaluationConfig,
    VerificationConfig,
    check_budget,
    load_env_file,
    parse_env_preset,
)
from loss_rl.presets._files import load_yaml, preset_dirs, resolve_data_paths
from loss_rl.schema import parse_section

SUITE_DIR = "suites"
"""Suites live in ``envs/suites/`` (and ``loss_rl/_presets/envs/suites/`` once installed)."""

_SUITE_KEYS = {
    "description",
    "space",
    "pretrain_space",
    "evaluation",
    "verification",
    "budget",
    "pretrain_budget",
    "defaults",
    "tasks",
}


@dataclass
class Suite:
    """A validated task suite.

    Attributes:
        name: Suite name (file stem).
        description: One line.
        space: The shared MDP section (as in an env preset).
        evaluation: Seeds of every task's evaluator.
        verification: How found losses are verified.
        budget: Inner trainings of a single-task search on one of its tasks.
        pretrain_budget: Inner trainings of a pretraining across the suite.
        pretrain_space: Space settings that pretraining uses instead (rewards, start points;
            never the layout: terms and grids stay shared).
        tasks: Each task as a full env preset named ``<suite>:<task>``, in file order.
    """

    name: str
    description: str
    space: dict[str, Any]
    evaluation: EvaluationConfig
    verification: VerificationConfig
    budget: int
    pretrain_budget: int
    tasks: dict[str, EnvPreset] = field(default_factory=dict)
    pretrain_space: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The task kind shared by all tasks (``classification`` or ``regression``)."""
        return next(iter(self.tasks.values())).task.kind.value

    def task(self, name: str) -> EnvPreset:
        """One task as an env preset.

        Raises:
            ConfigError: naming the suite's tasks for an unknown name.
        """
        if name not in self.tasks:
            raise ConfigError(
                f"suite {self.name!r} has no task {name!r}; its tasks: {', '.join(self.tasks)}",
                field="suite.task",
            )
        return self.tasks[name]

    def without(self, names: Sequence[str]) -> Suite:
        """The suite minus ``names`` (leave-one-out pretraining).

        Raises:
            ConfigError: for an unknown name, or if fewer than two tasks would remain.
        """
        for n in names:
            self.task(n)
        kept = {k: v for k, v in self.tasks.items() if k not in set(names)}
        if len(kept) < 2:
            raise ConfigError(
                f"leaving out {', '.join(names)} leaves {len(kept)} task(s); pretraining needs "
                "at least two",
                field="exclude",
            )
        out = copy.copy(self)
        out.tasks = kept
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data (each task inline) that :func:`parse_suite` reads back as this suite."""
        return {
            "description": self.description,
            "space": self.space,
            "evaluation": vars(self.evaluation),
            "verification": vars(self.verification),
            "budget": self.budget,
            "pretrain_budget": self.pretrain_budget,
            "pretrain_space": self.pretrain_space,
            "tasks": {k: v.task.to_dict() for k, v in self.tasks.items()},
        }


def suite_dirs() -> list[Path]:
    """Folders searched for suites, in order (installed copy first)."""
    return [p for p in (d / SUITE_DIR for d in preset_dirs("envs")) if p.is_dir()]


def list_suites() -> list[str]:
    """Names of the available suites."""
    return sorted({p.stem for d in suite_dirs() for p in d.glob("*.yaml")})


def find_suite(name_or_path: str | Path) -> Path:
    """Resolve a suite name or a YAML path.

    Raises:
        ConfigError: naming the available suites when nothing matches.
    """
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"suite file {p} does not exist", field="suite")
        return p
    for d in suite_dirs():
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    raise ConfigError(
        f"unknown suite {str(name_or_path)!r}; available: {', '.join(list_suites()) or '(none)'}"
        "; or give a path to a YAML file",
        field="suite",
    )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        whole = k in ("corruption", "model")
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not whole:
            out[k] = _merge(out[k], v)
        else:
            # A corruption or model given by a task replaces the default one whole: merging
            # {kind: none} with {kind: symmetric, rate: 0.4} would leave a stray rate.
            out[k] = copy.deepcopy(v)
    return out


def parse_suite(data: dict[str, Any], name: str, folder: Path | None = None) -> Suite:
    """Validate a suite mapping.

    ``folder`` is the suite file's folder: relative data files and ``.py`` model factories of
    its inline tasks are taken relative to it (:func:`resolve_data_paths`).

    Raises:
        ConfigError: naming the field — unknown keys, fewer than two tasks, tasks of different
            kinds (their action catalogs differ, so one policy cannot serve them), bad tasks.
    """
    for k in data:
        if k not in _SUITE_KEYS:
            raise ConfigError(
                f"unknown key {k!r}; allowed: {', '.join(sorted(_SUITE_KEYS))}", field=f"suite.{k}"
            )
    space = data.get("space") or {}
    if not isinstance(space, dict):
        raise ConfigError("must be a mapping", field="suite.space")
    pretrain_space = data.get("pretrain_space") or {}
    if not isinstance(pretrain_space, dict):
        raise ConfigError("must be a mapping", field="suite.pretrain_space")
    # Imported here, not at the top: presets load with `import loss_rl`, the agents with SB3.
    from loss_rl.agents.cards import LAYOUT_KEYS

    # The policy's layout keys and its descriptor (pretraining measures its own per task).
    layout = sorted(set(pretrain_space) & {*LAYOUT_KEYS, "task_features"})
    if layout:
        raise ConfigError(
            f"{', '.join(layout)} shape the observation and action layout, which pretraining "
            "must share with search; set them in 'space' instead",
            field="suite.pretrain_space",
        )
    evaluation = parse_section(data, "evaluation", EvaluationConfig, "suite")
    verification = parse_section(data, "verification", VerificationConfig, "suite")
    budget = data.get("budget", 100)
    check_budget(budget, "suite.budget")
    pretrain_budget = data.get("pretrain_budget", 1000)
    check_budget(pretrain_budget, "suite.pretrain_budget")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError("must be a mapping of task fields", field="suite.defaults")
    raw_tasks = data.get("tasks")
    if not isinstance(raw_tasks, dict) or len(raw_tasks) < 2:
        n = len(raw_tasks) if isinstance(raw_tasks, dict) else 0
        raise ConfigError(
            f"a suite needs at least two tasks (a mapping name -> task), got {n}; for a single "
            "task use an env preset and `loss-rl search`",
            field="suite.tasks",
        )
    tasks: dict[str, EnvPreset] = {}
    kinds: dict[str, str] = {}
    for tname, spec in raw_tasks.items():
        where = f"suite.tasks.{tname}"
        if not isinstance(spec, dict):
            raise ConfigError("must be a mapping (a task, or {preset: NAME})", field=where)
        if "preset" in spec:
            if set(spec) != {"preset"}:
                raise ConfigError(
                    "a preset task takes only the 'preset' key; write the task inline to change it",
                    field=where,
                )
            task_dict = load_env_file(spec["preset"]).task.to_dict()
        else:
            task_dict = _merge(defaults, spec)
            if folder is not None:
                task_dict = resolve_data_paths(task_dict, folder)
        preset_data = {
            "description": f"task {tname} of suite {name}",
            "task": task_dict,
            "space": space,
            "evaluation": vars(evaluation),
            "verification": vars(verification),
            "budget": budget,
        }
        try:
            preset = parse_env_preset(preset_data, f"{name}:{tname}")
        except ConfigError as err:
            # Re-anchor the field path at the suite task ("env.task.x" -> "suite.tasks.T.x").
            sub = err.field or ""
            msg = str(err)[len(sub) + 2 :] if sub and str(err).startswith(sub) else str(err)
            if sub.startswith(("task.", "env.task")):
                sub = where + sub[sub.index("task") + 4 :]
            elif sub.startswith("env."):
                sub = "suite." + sub[4:]
            raise ConfigError(msg, field=sub or where) from err
        tasks[str(tname)] = preset
        kinds[str(tname)] = preset.task.kind.value
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{k} ({v})" for k, v in kinds.items())
        raise ConfigError(
            f"mixes task kinds: {listing}. Classification and regression have different action "
            "catalogs, so one policy cannot serve both; split it into one suite per kind",
            field="suite.tasks",
        )
    return Suite(
        name,
        str(data.get("description", "")),
        dict(space),
        evaluation,
        verification,
        int(budget),
        int(pretrain_budget),
        tasks,
        dict(pretrain_space),
    )


def load_suite(name_or_path: str | Path) -> Suite:
    """Load and validate a suite by name (``envs/suites/<name>.yaml``) or path."""
    path = find_suite(name_or_path)
    return parse_suite(load_yaml(path, "suite"), path.stem, path.parent)


def load_suite_task(spec: str) -> EnvPreset:
    """The env preset of ``"<suite>:<task>"``."""
    suite, _, task = spec.partition(":")
    return load_suite(suite).task(task)
