"""Run folders and the SQLite ledger of every evaluation (the only state a resume reads).

Layout of ``results/<run-id>/``::

    config.yaml      fully resolved configuration (env preset + agent preset + run options)
    command.txt      the command line that started the run (and each resume)
    ledger.sqlite    every evaluation, written as each batch finishes (WAL mode)
    agent.zip        the SB3 agent (+ replay_buffer.pkl for DQN), saved at checkpoints
    best/            loss.json, loss.py, loss.pt of the verified winner
    summary.json     best loss, verification table, evaluation counts, timing

The ledger sits behind :class:`Ledger` so that other back ends can be added without touching the
evaluator (Optuna's storage pattern); SQLite from the standard library is the default.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from loss_rl.errors import RunError
from loss_rl.results import EvalResult, Status

LEDGER_SCHEMA_VERSION = 2  # 2: the `action` column (the edit that proposed a candidate)
LEDGER = "ledger.sqlite"
CONFIG = "config.yaml"
SUMMARY = "summary.json"

_COLUMNS = (
    "key",
    "expression",
    "fingerprint",
    "status",
    "score",
    "metrics",
    "fidelity",
    "seeds",
    "source",
    "reason",
    "seconds",
    "episode",
    "step",
    "env_index",
    "batch",
    "created",
    "action",
)


class Ledger:
    """Append-only SQLite ledger of evaluations.

    Args:
        path: The ``ledger.sqlite`` file (created if missing).

    Raises:
        RunError: if the file was written by a newer ledger schema.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL sync: a completed batch must survive a kill -9 right after it is recorded.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        row = self._db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta VALUES ('schema_version', ?)", (str(LEDGER_SCHEMA_VERSION),)
            )
        elif int(row[0]) > LEDGER_SCHEMA_VERSION:
            raise RunError(
                f"{self.path} was written by a newer loss_rl (ledger schema {row[0]}, this "
                f"version reads up to {LEDGER_SCHEMA_VERSION}); upgrade loss_rl to open it"
            )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS evaluations (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "key TEXT NOT NULL, expression TEXT, fingerprint TEXT, status TEXT NOT NULL, "
            "score REAL, metrics TEXT, fidelity INTEGER, seeds TEXT, source TEXT, reason TEXT, "
            "seconds REAL, episode INTEGER, step INTEGER, env_index INTEGER, batch INTEGER, "
            "created REAL, action TEXT)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS ix_key ON evaluations(key)")
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(evaluations)")}
        if "action" not in cols:  # a version-1 ledger: add the column, keep every row
            self._db.execute("ALTER TABLE evaluations ADD COLUMN action TEXT")
        if row is None or int(row[0]) != LEDGER_SCHEMA_VERSION:
            self._db.execute(
                "UPDATE meta SET value=? WHERE name='schema_version'",
                (str(LEDGER_SCHEMA_VERSION),),
            )
        # Opening a current ledger writes nothing, so a reader (inspect, a progress poll) never
        # takes the write lock from a running search.
        if self._db.in_transaction:
            self._db.commit()

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def next_batch(self) -> int:
        """Id for the next batch of evaluations."""
        row = self._db.execute("SELECT MAX(batch) FROM evaluations").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def record(
        self, results: Sequence[EvalResult], contexts: Sequence[dict[str, Any]] | None = None
    ) -> None:
        """Append one batch of results in a single transaction."""
        batch = self.next_batch()
        now = time.time()
        ctxs = contexts or [{} for _ in results]
        rows = [
            (
                r.key,
                r.expression,
                r.fingerprint,
                r.status.value,
                r.score,
                json.dumps(r.metrics),
                r.fidelity,
                json.dumps(list(r.seeds)),
                r.source,
                r.reason,
                r.seconds,
                c.get("episode"),
                c.get("step"),
                c.get("env_index"),
                batch,
                now,
                c.get("action"),
            )
            for r, c in zip(results, ctxs, strict=True)
        ]
        with self._db:
            self._db.executemany(
                f"INSERT INTO evaluations ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                rows,
            )

    def resolved(self) -> Iterable[EvalResult]:
        """Every result that decided a key by itself (trained or rejected), oldest first."""
        cur = self._db.execute(
            "SELECT key, expression, fingerprint, status, score, metrics, fidelity, seeds, "
            "source, reason, seconds FROM evaluations WHERE source IN ('trained', 'check') "
            "ORDER BY id"
        )
        for key, expr, fp, status, score, metrics, fid, seeds, source, reason, secs in cur:
            yield EvalResult(
                key=key,
                expression=expr,
                score=score,
                status=Status(status),
                metrics=json.loads(metrics or "{}"),
                fidelity=fid or 0,
                seeds=tuple(json.loads(seeds or "[]")),
                seconds=secs or 0.0,
                source=source,
                reason=reason or "",
                fingerprint=fp,
            )

    def counts(self) -> dict[str, int]:
        """Evaluation counts: proposed, trained, cached, rejected, diverged, errors."""
        q = self._db.execute(
            "SELECT COUNT(*), "
            "SUM(source='trained'), "
            "SUM(source LIKE 'cache%'), "
            "SUM(source='check'), "
            "SUM(status='diverged' AND source='trained'), "
            "SUM(status='error' AND source='trained') FROM evaluations"
        ).fetchone()
        names = ("proposed", "trained", "cached", "rejected", "diverged", "errors")
        return {n: int(v or 0) for n, v in zip(names, q, strict=True)}

    def frame(self) -> pd.DataFrame:
        """The whole ledger as a DataFrame (metrics and seeds decoded)."""
        df = pd.read_sql_query("SELECT * FROM evaluations ORDER BY id", self._db)
        df["metrics"] = df["metrics"].map(lambda s: json.loads(s or "{}"))
        df["seeds"] = df["seeds"].map(lambda s: json.loads(s or "[]"))
        return df


def read_yaml(path: Path) -> dict[str, Any]:
    """Load a YAML mapping (empty file → ``{}``)."""
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise RunError(f"{path} does not hold a mapping")
    return data


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as block-style YAML, keys in insertion order."""
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


CONFIG_VERSION = 1
"""Version of a search run's ``config.yaml``; a newer one is refused (upgrade loss_rl)."""


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
        try:
            return cls(
                env_name=str(data["env_name"]),
                env=dict(data["env"]),
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
                version=version or CONFIG_VERSION,
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


@dataclass
class Run:
    """A run folder opened for reading (``loss_rl.store.load_run``).

    Attributes:
        path: The run folder.
        config: The resolved configuration (``config.yaml``).
        summary: ``summary.json`` if the run finished (else ``None``).
    """

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None

    @property
    def ledger(self) -> pd.DataFrame:
        """Every evaluation as a DataFrame."""
        led = Ledger(self.path / LEDGER)
        try:
            return led.frame()
        finally:
            led.close()

    @property
    def counts(self) -> dict[str, int]:
        """Evaluation counts from the ledger."""
        led = Ledger(self.path / LEDGER)
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
            RunError: if ``config.yaml`` is incomplete or from a newer loss_rl.
        """
        return RunConfig.from_dict(self.config, where=str(self.path / CONFIG))


def is_run(path: str | Path) -> bool:
    """Whether ``path`` looks like a run folder."""
    p = Path(path)
    return (p / CONFIG).is_file() and (p / LEDGER).is_file()


def load_run(path: str | Path) -> Run:
    """Open a run folder.

    Raises:
        RunError: if ``path`` is not a run folder (names what is missing).
    """
    p = Path(path)
    if not p.is_dir():
        raise RunError(f"{p} is not a directory; give a run folder such as results/<run-id>")
    missing = [n for n in (CONFIG, LEDGER) if not (p / n).is_file()]
    if missing:
        raise RunError(f"{p} is not a run folder: missing {', '.join(missing)}")
    summary = None
    if (p / SUMMARY).is_file():
        summary = json.loads((p / SUMMARY).read_text())
    return Run(p, read_yaml(p / CONFIG), summary)
