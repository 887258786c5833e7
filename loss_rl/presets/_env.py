"""Env presets: the validated form of ``envs/<name>.yaml``.

An env preset holds a task, a search space, evaluation and verification settings, a budget and
optionally where trainings run (``executor:``, see :mod:`loss_rl.executors`) (:class:`EnvPreset`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loss_rl.errors import ConfigError
from loss_rl.evaluation import FidelityConfig
from loss_rl.executors import ExecutorConfig
from loss_rl.presets._files import find_preset, load_yaml, resolve_data_paths
from loss_rl.schema import check_int, parse_section
from loss_rl.tasks import TaskConfig

_ENV_KEYS = {"description", "task", "space", "evaluation", "verification", "budget", "executor"}


@dataclass
class EvaluationConfig:
    """How the search scores a candidate.

    Attributes:
        seeds: Paired model seeds per candidate (score = mean over them).
        data_seed: Seed of the data split and corruption (fixed for the run).
        fidelity: Multi-fidelity evaluation (successive halving / ASHA), written
            ``{rungs: [s0, s1, ..., task.training.steps], keep: 0.33}``; off (``None``) by
            default. See :class:`loss_rl.evaluation.FidelityConfig`.
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1])
    data_seed: int = 0
    fidelity: FidelityConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``config.yaml`` (no ``fidelity`` key while it is off)."""
        out: dict[str, Any] = {"seeds": self.seeds, "data_seed": self.data_seed}
        if self.fidelity is not None:
            out["fidelity"] = self.fidelity.to_dict()
        return out


@dataclass
class VerificationConfig:
    """How the best candidates are re-checked at the end of a run.

    Attributes:
        top_k: Distinct best candidates (by validation score) re-trained.
        seeds: Fresh paired model seeds (≥ 2; 10 by default: with 5, a 95 % interval of a
            test accuracy is about ±1.2 points on the shipped tasks).
        references: Known losses compared against (default: every library loss of the kind).
        tune_references: Tune each reference's hyper-parameters on the validation split over
            the library's grid before comparing (:func:`loss_rl.verify.verify`).
        refine_constants: Before verifying, refine the constants of the best search candidate
            by meta-gradient descent through the task's inner training
            (:func:`loss_rl.meta.meta_optimize`, EvoMAL's step: Raymond et al. 2023) and verify
            the refined loss next to the unrefined one; the winner is still chosen on
            validation, and the refinement's own effect is reported separately.
        refine_meta_steps: Outer steps of that refinement.
    """

    top_k: int = 3
    seeds: int = 10
    references: list[str] | None = None
    tune_references: bool = True
    refine_constants: bool = False
    refine_meta_steps: int = 20


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
            "evaluation": self.evaluation.to_dict(),
            "verification": vars(self.verification),
            "budget": self.budget,
        }
        if self.executor is not None:
            out["executor"] = self.executor.to_dict()
        return out


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
    evaluation = parse_section(data, "evaluation", EvaluationConfig, "env")
    if not evaluation.seeds:
        raise ConfigError("needs at least one seed", field="env.evaluation.seeds")
    if evaluation.fidelity is not None:
        prefix = "env.evaluation.fidelity"
        evaluation.fidelity = FidelityConfig.from_dict(evaluation.fidelity, prefix)  # type: ignore[arg-type]
        if evaluation.fidelity.rungs[-1] != task.training.steps:
            raise ConfigError(
                f"the last rung must be the task's search steps ({task.training.steps}), got "
                f"{evaluation.fidelity.rungs[-1]}",
                field=f"{prefix}.rungs",
            )
    verification = parse_section(data, "verification", VerificationConfig, "env")
    if not isinstance(verification.seeds, int) or verification.seeds < 2:
        raise ConfigError("must be an integer >= 2", field="env.verification.seeds")
    if not isinstance(verification.tune_references, bool):
        raise ConfigError("must be true or false", field="env.verification.tune_references")
    if not isinstance(verification.refine_constants, bool):
        raise ConfigError("must be true or false", field="env.verification.refine_constants")
    check_int(verification.refine_meta_steps, "env.verification.refine_meta_steps", 1)
    budget = data.get("budget", 200)
    check_budget(budget, "env.budget")
    executor = None
    if data.get("executor") is not None:
        executor = ExecutorConfig.from_dict(data["executor"], "env.executor")
    return EnvPreset(
        name,
        str(data.get("description", "")),
        task,
        dict(space),
        evaluation,
        verification,
        int(budget),
        executor,
    )


MAX_BUDGET = 100_000
"""Cap on a budget of inner trainings, unless lifted (``loss-rl search --no-cap``).

A search stops at its budget or its proposal cap (10 proposals per training of budget), so a
budget of ``1e23`` would run, and grow its ledger, without end. 100,000 trainings is about
eight hours of the default search on 2 cores, far above any measured run here.
"""


def check_budget(budget: Any, field_name: str, *, cap: bool = True) -> None:
    """Check a budget of inner trainings: a positive integer, at most :data:`MAX_BUDGET`.

    Args:
        budget: The budget.
        field_name: The field named in the error.
        cap: Refuse budgets above :data:`MAX_BUDGET` (``False``: any positive integer).

    Raises:
        ConfigError: naming ``field_name``.
    """
    check_int(
        budget, field_name, 1, message="must be a positive number of inner trainings, got {value!r}"
    )
    if cap and budget > MAX_BUDGET:
        raise ConfigError(
            f"{budget} inner trainings is above the cap of {MAX_BUDGET:,} (MAX_BUDGET); give "
            f"a smaller budget, or lift the cap on purpose (loss-rl search --no-cap)",
            field=field_name,
        )


def load_env_file(name_or_path: str | Path) -> EnvPreset:
    """Load and validate ``envs/<name>.yaml`` or a YAML path (not a suite task).

    A relative ``task.dataset.path`` / ``test_path`` is taken relative to the YAML file's
    folder (``resolve_data_paths``) and stored absolute.
    """
    path = find_preset("envs", name_or_path)
    data = load_yaml(path, "env")
    if "task" in data:
        # A data file the preset names sits next to it: read it from there, whatever the cwd.
        data["task"] = resolve_data_paths(data["task"], path.parent)
    return parse_env_preset(data, path.stem)
