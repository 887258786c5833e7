"""The typed configuration of a search run (``config.yaml``), read and written only here."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from loss_rl.errors import RunError
from loss_rl.store._files import CONFIG, read_yaml, write_yaml

if sys.platform != "win32":
    pass


CONFIG_VERSION = 2
"""Version of a search run's ``config.yaml``; a newer one is refused (upgrade loss_rl).

2: the honest protocol's defaults (checkpoint selection, noisy validation labels, tuned
references); a version-1 config is read with the settings it ran with (:func:`_from_v1`).
"""


def _from_v1(env: dict[str, Any]) -> dict[str, Any]:
    """A version-1 env preset with the defaults of its time written out.

    Version 1 trained to the last step, kept validation labels clean and verified against
    untuned references; later defaults must not change what a resumed run evaluates.
    """
    env = dict(env)
    task = dict(env.get("task") or {})
    training = dict(task.get("training") or {})
    training.setdefault("select", "last")
    task["training"] = training
    corruption = task.get("corruption")
    if isinstance(corruption, dict) and corruption.get("kind") in ("symmetric", "pairflip"):
        task["corruption"] = {**corruption, "val": corruption.get("val", "clean")}
    env["task"] = task
    verification = dict(env.get("verification") or {})
    verification.setdefault("tune_references", False)
    env["verification"] = verification
    return env


@dataclass
class RunConfig:
    """The resolved configuration of a search run: ``config.yaml``, read and written only here.

    The presets are kept as plain data (they are validated by :mod:`loss_rl.presets` and
    :mod:`loss_rl.agents` when the run opens), so that a run folder stays readable without them.

    Attributes:
        env_name: Env preset name (``digits_noisy``, ``SUITE:TASK`` or a YAML file's stem).
        env: The env preset, resolved (task, space, evaluation, verification, budget, executor).
        agent: The agent preset, resolved (algo, n_envs, hyper-parameters).
        budget: Inner trainings to spend.
        seed: Seed of the agent and environments.
        agent_source: Where the agent preset came from (file, run folder, pretrained card).
        init_agent: The policy file this run started from, if any.
        train: ``False``: the policy is only rolled out.
        tensorboard: Whether the agent logs to ``tb/``.
        executor: Where trainings run (``None``: in-process; runs from before executors).
        created: ISO time stamp of the run's creation.
        task_features: The task descriptor the agent saw, once measured (landmarks included).
        version: :data:`CONFIG_VERSION` of the writer.
    """

    env_name: str
    env: dict[str, Any]
    agent: dict[str, Any]
    budget: int
    seed: int
    agent_source: str = ""
    init_agent: str | None = None
    train: bool = True
    tensorboard: bool = False
    executor: dict[str, Any] | None = None
    created: str = ""
    task_features: list[float] | None = None
    version: int = CONFIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept so that rewriting the file loses nothing."""

    _REQUIRED = ("env_name", "env", "agent", "budget", "seed")
    _ORDER = (
        "version",
        "env_name",
        "env",
        "agent_source",
        "agent",
        "budget",
        "seed",
        "init_agent",
        "train",
        "tensorboard",
        "executor",
        "created",
        "task_features",
    )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = CONFIG) -> RunConfig:
        """Check and type a ``config.yaml`` mapping.

        Raises:
            RunError: naming the file and the missing or malformed key, or a newer version.
        """
        try:
            version = int(data.get("version", 0) or 0)
        except (TypeError, ValueError):
            raise RunError(f"{where}: 'version' must be an integer") from None
        if version > CONFIG_VERSION:
            raise RunError(
                f"{where} was written by a newer loss_rl (config version {version}, this one "
                f"reads {CONFIG_VERSION}); upgrade loss_rl to use it"
            )
        missing = [k for k in cls._REQUIRED if k not in data]
        if missing:
            raise RunError(
                f"{where} is incomplete (missing {', '.join(repr(k) for k in missing)}); it "
                "cannot be resumed"
            )
        for key in ("env", "agent"):
            if not isinstance(data[key], dict):
                raise RunError(f"{where}: {key!r} must be a mapping")
        known = {f.name for f in fields(cls)} - {"extra"}
        env = dict(data["env"]) if version >= 2 else _from_v1(dict(data["env"]))
        try:
            return cls(
                env_name=str(data["env_name"]),
                env=env,
                agent=dict(data["agent"]),
                budget=int(data["budget"]),
                seed=int(data["seed"]),
                agent_source=str(data.get("agent_source") or ""),
                init_agent=str(data["init_agent"]) if data.get("init_agent") else None,
                train=bool(data.get("train", True)),
                tensorboard=bool(data.get("tensorboard", False)),
                executor=dict(data["executor"]) if data.get("executor") else None,
                created=str(data.get("created") or ""),
                task_features=(
                    [float(v) for v in data["task_features"]] if data.get("task_features") else None
                ),
                version=CONFIG_VERSION,
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (TypeError, ValueError) as err:
            msg = f"{where} holds a malformed value ({err}); it cannot be resumed"
            raise RunError(msg) from err

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``config.yaml`` (keys in a stable order; no descriptor until measured)."""
        out = {k: getattr(self, k) for k in self._ORDER}
        if out["task_features"] is None:
            del out["task_features"]
        return {**out, **self.extra}

    @classmethod
    def read(cls, run_dir: str | Path) -> RunConfig:
        """The configuration of the run folder ``run_dir``."""
        path = Path(run_dir) / CONFIG
        return cls.from_dict(read_yaml(path), where=str(path))

    def write(self, run_dir: str | Path) -> None:
        """Write ``config.yaml`` into ``run_dir``."""
        write_yaml(Path(run_dir) / CONFIG, self.to_dict())
