"""A run folder opened for reading, checked for damage first."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from loss_rl.errors import RunError
from loss_rl.output_paths import existing
from loss_rl.store._config import RunConfig
from loss_rl.store._files import (
    _FIX,
    AGENT_ZIP,
    CONFIG,
    DATA_RECORD,
    LEDGER,
    SUMMARY,
    check_zip,
    read_summary,
    read_yaml,
)
from loss_rl.store._ledger import Ledger, check_ledger

if sys.platform != "win32":
    pass


def _counted(summary: Mapping[str, Any] | None) -> int:
    """How many evaluations ``summary.json`` says the run recorded (0 if it does not say)."""
    ev = summary.get("evaluations") if summary else None
    if not isinstance(ev, dict):
        return 0
    counts = [v for k, v in ev.items() if k in ("proposed", "trained") and isinstance(v, int)]
    return max(counts, default=0)


def check_run_files(path: str | Path) -> dict[str, Any] | None:
    """Check the files of run folder ``path`` that a reader or a resume relies on.

    ``summary.json``, ``ledger.sqlite`` and ``agent.zip`` are checked where present (a new run
    has none of them); ``config.yaml`` is read by :func:`load_run` and :class:`RunConfig`. An
    empty ledger (or none) next to a ``summary.json`` that counts evaluations is damage, never a
    fresh start: resuming it would train everything again and overwrite ``best/``.

    Returns:
        The run's summary (``None`` if it has none).

    Raises:
        RunError: one line naming the damaged file and what to do.
    """
    p = Path(path)
    summary = read_summary(p / SUMMARY)
    rows = check_ledger(p / LEDGER) if (p / LEDGER).is_file() else 0
    counted = _counted(summary)
    if rows == 0 and counted:
        raise RunError(
            f"{p / LEDGER} is empty or missing, but {p / SUMMARY} counts {counted} evaluations: "
            f"the ledger was lost or replaced; {_FIX}"
        )
    if (p / AGENT_ZIP).is_file():
        check_zip(p / AGENT_ZIP)
    return summary


def read_data_record(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's ``data.json``: what a search on the user's data read, else ``None``.

    Keys: :func:`loss_rl.tasks.describe_file_data` (path, size_bytes, sha256, rows, columns,
    target, task_kind, kind_inferred, classes, summary, ...). A missing or unreadable record is
    ``None``: it only describes, nothing depends on it.
    """
    import json

    try:
        data = json.loads((Path(run_dir) / DATA_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Run:
    """A run folder opened for reading (``loss_rl.store.load_run``).

    Attributes:
        path: The run folder.
        config: The resolved configuration (``config.yaml``).
        summary: ``summary.json`` if the run finished (else ``None``).
        damage: Why the folder cannot be read, for a damaged run listed by
            ``loss_rl.list_runs`` (then ``config`` is ``{}``, ``summary`` is ``None`` and the
            ledger views raise :class:`RunError` with this reason); ``None`` for a sound run.
    """

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None
    damage: str | None = None

    @classmethod
    def damaged(cls, path: Path, reason: str) -> Run:
        """A run folder that cannot be read, with the reason (see :attr:`damage`)."""
        return cls(path, {}, None, damage=reason)

    def _ledger(self) -> Ledger:
        if self.damage is not None:
            raise RunError(self.damage)
        # load_run has just checked the file: no second integrity scan on every view.
        return Ledger(self.path / LEDGER, check=False)

    @property
    def ledger(self) -> pd.DataFrame:
        """Every evaluation as a DataFrame."""
        led = self._ledger()
        try:
            return led.frame()
        finally:
            led.close()

    @property
    def counts(self) -> dict[str, int]:
        """Evaluation counts from the ledger."""
        led = self._ledger()
        try:
            return led.counts()
        finally:
            led.close()

    def top(self, k: int = 5) -> pd.DataFrame:
        """The ``k`` best distinct losses by validation score."""
        df = self.ledger
        ok = df[(df["status"] == "ok") & (df["source"] == "trained")]
        ok = ok.sort_values("score", ascending=False).drop_duplicates("key")
        return ok.head(k)[["expression", "key", "score", "fidelity"]].reset_index(drop=True)

    @property
    def best(self) -> dict[str, Any] | None:
        """The best loss: from ``summary.json`` if verified, else the ledger's top entry."""
        if self.summary and self.summary.get("best"):
            return self.summary["best"]
        top = self.top(1)
        if top.empty:
            return None
        row = top.iloc[0]
        return {"expression": row["expression"], "key": row["key"], "val_score": row["score"]}

    @property
    def data(self) -> dict[str, Any] | None:
        """What a search on the user's data read (``data.json``), else ``None``.

        See :func:`read_data_record`.
        """
        return read_data_record(self.path)

    # Lenient views of config.yaml: a run from a newer loss_rl, or an incomplete one, is still
    # listed and its ledger inspected; only resuming it needs the whole, typed RunConfig.

    @property
    def config_version(self) -> int:
        """The ``config.yaml`` version (0 when absent or malformed)."""
        try:
            return int(self.config.get("version", 0) or 0)
        except (TypeError, ValueError):
            return 0

    @property
    def env_name(self) -> str | None:
        """The env preset's name, if recorded."""
        name = self.config.get("env_name")
        return None if name is None else str(name)

    @property
    def env(self) -> dict[str, Any]:
        """The env preset as recorded (``{}`` when absent)."""
        env = self.config.get("env")
        return env if isinstance(env, dict) else {}

    @property
    def algo(self) -> str | None:
        """The agent's algorithm (``maskable_ppo``, ``random``, ...), if recorded."""
        agent = self.config.get("agent")
        algo = agent.get("algo") if isinstance(agent, dict) else None
        return None if algo is None else str(algo)

    @property
    def budget(self) -> int | None:
        """The run's budget of inner trainings, if recorded."""
        budget = self.config.get("budget")
        return budget if isinstance(budget, int) else None

    @property
    def metric(self) -> str:
        """The task's validation metric (``"score"`` when the config does not say)."""
        task = self.env.get("task")
        return str(task.get("metric", "score")) if isinstance(task, dict) else "score"

    @property
    def run_config(self) -> RunConfig:
        """The typed configuration of this search run (see :class:`RunConfig`).

        Raises:
            RunError: if ``config.yaml`` is incomplete or from a newer loss_rl, or the run is
                damaged.
        """
        if self.damage is not None:
            raise RunError(self.damage)
        return RunConfig.from_dict(self.config, where=str(self.path / CONFIG))


def is_run(path: str | Path) -> bool:
    """Whether ``path`` looks like a run folder."""
    p = Path(path)
    return (p / CONFIG).is_file() and (p / LEDGER).is_file()


def load_run(path: str | Path) -> Run:
    """Open a run folder for reading, checking every file it relies on (writes nothing).

    Raises:
        RunError: one line, if ``path`` is not a run folder (names what is missing) or a file of
            it is damaged (names the file and what to do; see :func:`check_run_files`).
    """
    p = Path(path)
    if existing(p) != "dir":
        raise RunError(f"{p} is not a directory; give a run folder such as results/<run-id>")
    missing = [n for n in (CONFIG, LEDGER) if not (p / n).is_file()]
    if missing:
        raise RunError(f"{p} is not a run folder: missing {', '.join(missing)}")
    config = read_yaml(p / CONFIG)
    if not config:  # loss_rl never writes an empty config: it was emptied or cut short
        raise RunError(f"{p / CONFIG} is empty; {_FIX}")
    summary = check_run_files(p)
    return Run(p, config, summary)
