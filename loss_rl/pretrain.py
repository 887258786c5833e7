"""Pretraining a loss-design policy across a task suite (``loss-rl pretrain``).

On one task an agent spends its first hundred or so inner trainings learning things that hold on
most tasks ("under label noise, drop CE for a bounded term"), which is why it ties with random
search there (REFERENCES.md, last section). Pretraining amortises that lesson: the agent learns on
the tasks of a suite (:mod:`loss_rl.presets`), one task per episode, seeing each task's descriptor
with its landmark scores (:mod:`loss_rl.descriptors`), and a new task starts from the result with
``loss-rl search --init-agent PATH`` (fine-tuned) or ``--no-train`` (only rolled out).

A pretraining folder (``results/pretrain_<suite>_<algo>_s<seed>_<time>/``)::

    config.yaml      suite (every task inline), agent, budget, seed, left-out tasks
    command.txt      the command line of each session
    agent.zip        the policy (checkpointed during training; resumable)
    card.json        what the policy is: suite, tasks, budget spent, layout, git revision, curve
    card.md          the same for people
    curve.csv        one row per episode: trainings so far, task, reference and best score
    curve.png        gain over CE per episode against inner trainings
    tasks/<task>/ledger.sqlite   every evaluation on that task (a resume trains nothing twice)
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from loss_rl._version import __version__
from loss_rl.agents import (
    AGENT_FILE,
    AgentConfig,
    BudgetCallback,
    Progress,
    SearchState,
    open_agent,
    train_agent,
)
from loss_rl.agents.cards import CARD_JSON, CARD_MD, card_markdown, layout_of
from loss_rl.descriptors import N_FEATURES, task_descriptor
from loss_rl.envs import (
    BatchedLossVecEnv,
    EnvConfig,
    LossDesignEnv,
    TaskBinding,
    TaskSchedule,
    TaskSwitcher,
)
from loss_rl.errors import ConfigError, LossRLError, RunError
from loss_rl.evaluation import EvalStats, Evaluator, InProcessExecutor
from loss_rl.executors import prepare_compute
from loss_rl.output_paths import existing
from loss_rl.presets import (
    Suite,
    check_budget,
    load_agent_config,
    load_suite,
    parse_suite,
    require_code_trust,
)
from loss_rl.store import (
    CONFIG,
    LEDGER,
    Ledger,
    RunLock,
    check_run_name,
    create_run_dir,
    read_yaml,
    write_yaml,
)

logger = logging.getLogger(__name__)

CURVE_CSV = "curve.csv"
CURVE_PNG = "curve.png"
PROPOSALS_PER_TRAINING = 30
"""Cap on proposals per unit of budget in a pretraining (cache hits are free but bounded)."""
PRETRAIN_SECTION = "pretrain"
"""Section of an agent preset used for pretraining (over ``default``)."""


def git_revision() -> str:
    """The source checkout's commit, ``-dirty`` if it has uncommitted changes (``unknown``
    outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class _SuiteEvaluators:
    """The evaluators of all tasks seen as one, for budget accounting (:class:`SearchState`)."""

    def __init__(self, evaluators: Sequence[Evaluator]) -> None:
        self.evaluators = list(evaluators)

    @property
    def stats(self) -> EvalStats:
        out = EvalStats()
        for e in self.evaluators:
            for k, v in vars(e.stats).items():
                setattr(out, k, getattr(out, k) + v)
        return out


@dataclass
class _Episode:
    trained: int
    task: str
    reference: float
    best: float | None


class _CurveCallback(BudgetCallback):
    """Records each finished episode's best score against its task's reference (CE)."""

    def __init__(self, state: SearchState, rows: list[_Episode]) -> None:
        super().__init__(state)
        self.rows = rows
        self._best: dict[int, float | None] = {}

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", [])
        dones = self.locals.get("dones", [False] * len(infos))
        for i, (info, done) in enumerate(zip(infos, dones, strict=False)):
            score = info.get("score")
            if score is not None:
                prev = self._best.get(i)
                self._best[i] = score if prev is None else max(prev, score)
            if done:
                self.rows.append(
                    _Episode(
                        self.state.trained,
                        str(info.get("task")),
                        float(info.get("reference_score") or 0.0),
                        self._best.pop(i, None),
                    )
                )
        return super()._on_step()


class Pretraining:
    """A pretraining bound to its folder. Build it with :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.config = config
        self.suite: Suite = parse_suite(config["suite"], config["suite_name"])
        self.agent_config = AgentConfig.from_dict(config["agent"], config.get("agent_source", ""))
        self.budget = int(config["budget"])
        self.seed = int(config["seed"])
        self.revision: str | None = None

    @classmethod
    def create(
        cls,
        suite: str | Path | Suite,
        agent: str | Path = "maskable_ppo",
        *,
        budget: int | None = None,
        seed: int = 0,
        exclude: Sequence[str] = (),
        out: str | Path = "results",
        name: str | None = None,
        command: str | None = None,
    ) -> Pretraining:
        """Validate and create a pretraining folder (nothing is trained yet).

        Args:
            suite: Suite name (``envs/suites/<name>.yaml``), path, or :class:`Suite`.
            agent: ``maskable_ppo`` | ``ppo`` | ``dqn`` or an agent preset path; its
                ``pretrain`` section (if any) overrides ``default``.
            budget: Inner trainings across the suite (default: the suite's ``pretrain_budget``).
            seed: Seed of the agent, the envs and the task schedule.
            exclude: Tasks left out (to measure transfer to them).
            out: Parent folder.
            name: Folder name.
            command: Command line for ``command.txt``.

        Raises:
            ConfigError: for a bad suite, agent, budget or ``name`` (a single folder name).
            RunError: if the named folder exists and is not empty.
        """
        if name is not None:
            check_run_name(name)  # before anything is loaded or written
        s = suite if isinstance(suite, Suite) else load_suite(suite)
        if exclude:
            s = s.without(list(exclude))
        agent_cfg = load_agent_config(agent, PRETRAIN_SECTION)
        if agent_cfg.is_baseline:
            raise ConfigError(
                f"{agent_cfg.algo} does not learn a policy; pretrain dqn, ppo, maskable_ppo or "
                "risk_seeking_ppo",
                field="agent",
            )
        if budget is not None:
            check_budget(budget, "budget")
        run_budget = int(budget if budget is not None else s.pretrain_budget)
        if run_budget < agent_cfg.min_budget:
            raise ConfigError(
                f"{run_budget} inner trainings are too few for {agent_cfg.algo}, which needs "
                f"{agent_cfg.min_budget} before its first update; raise --budget",
                field="budget",
            )
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        # Claimed atomically: a generated name gets a suffix if another pretraining has it.
        path = create_run_dir(
            out, name, default=f"pretrain_{s.name}_{agent_cfg.algo}_s{seed}_{stamp}"
        )
        config = {
            "kind": "pretrain",
            "suite_name": s.name,
            "suite": s.to_dict(),
            "exclude": list(exclude),
            "agent_source": agent_cfg.source,
            "agent": agent_cfg.to_dict(),
            "budget": run_budget,
            "seed": int(seed),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_yaml(path / CONFIG, config)
        p = cls(path, config)
        p.log_command(
            command
            or f"loss_rl.pretrain({s.name!r}, agent={str(agent)!r}, "
            f"budget={budget!r}, seed={seed!r})"
        )
        return p

    @classmethod
    def open(cls, path: str | Path, *, trust_code: bool = False) -> Pretraining:
        """Open a pretraining folder to resume it.

        ``trust_code`` allows tasks whose model is built by code the folder names
        (``task.model.factory``) to import it; refused otherwise.

        Raises:
            RunError: if it is not a pretraining folder, its ``config.yaml`` is damaged, or
                another process is writing it (:meth:`run` takes the lock).
        """
        p = Path(path)
        if existing(p / CONFIG) != "file":
            raise RunError(f"{p} is not a pretraining folder (no {CONFIG})")
        config = read_yaml(p / CONFIG)
        if not config:
            raise RunError(f"{p / CONFIG} is empty; restore it from a backup")
        if config.get("kind") != "pretrain":
            raise RunError(f"{p} is a search run, not a pretraining; use `loss-rl resume`")
        RunLock.check(p)
        try:
            pre = cls(p, config)
        except LossRLError:  # names the field already
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise RunError(
                f"{p / CONFIG} is incomplete or malformed ({err!r}); restore it from a backup"
            ) from None
        for task in pre.suite.tasks.values():
            require_code_trust(task.task, str(p), trust_code)
        return pre

    def log_command(self, command: str) -> None:
        """Append a session's command line to ``command.txt``."""
        with (self.path / "command.txt").open("a") as f:
            f.write(command.rstrip() + "\n")

    def env_config(self) -> EnvConfig:
        """The shared MDP with the suite's pretraining settings applied."""
        space = {**self.suite.space, **self.suite.pretrain_space, "kind": self.suite.kind}
        space["task_features"] = [0.0] * N_FEATURES
        return EnvConfig.from_dict(space, prefix="suite.space")

    def run(self, progress: Callable[[Progress], None] | None = None) -> Path:
        """Train until the budget is spent; write the policy, its card and curve.

        Returns:
            The policy file (``agent.zip``).

        Raises:
            RunError: if another process is writing this folder (its pid in the message).
        """
        with RunLock(self.path):  # one writer per folder, until the card is written
            return self._run(progress)

    def _run(self, progress: Callable[[Progress], None] | None) -> Path:
        """:meth:`run`, with the folder's lock held."""
        prepare_compute(InProcessExecutor())
        t0 = time.perf_counter()
        self.revision = git_revision()  # the code that runs, before anything edits the checkout
        ledgers: list[Ledger] = []
        try:
            bindings: list[TaskBinding] = []
            evaluators: list[Evaluator] = []
            before = 0
            for tname, preset in self.suite.tasks.items():
                folder = self.path / "tasks" / tname
                folder.mkdir(parents=True, exist_ok=True)
                ledger = Ledger(folder / LEDGER)
                ledgers.append(ledger)
                before += ledger.counts()["trained"]
                ev = Evaluator(
                    preset.task,
                    seeds=preset.evaluation.seeds,
                    data_seed=preset.evaluation.data_seed,
                    ledger=ledger,
                )
                evaluators.append(ev)
                feats = task_descriptor(preset.task, preset.evaluation.data_seed, ev)
                bindings.append(TaskBinding(tname, ev, tuple(feats)))
            # Cached proposals cost no training and are free experience for the policy: allow
            # more of them than a search does (a search caps them at 10 x budget).
            state = SearchState(
                cast(Evaluator, _SuiteEvaluators(evaluators)),
                self.budget,
                trained_before=before,
                max_proposals=PROPOSALS_PER_TRAINING * self.budget,
            )
            cfg = self.env_config()
            schedule = TaskSchedule(bindings, seed=self.seed)
            envs = [
                TaskSwitcher(LossDesignEnv(cfg, evaluator=bindings[0].evaluator), schedule)
                for _ in range(self.agent_config.n_envs)
            ]
            vec = BatchedLossVecEnv(envs, multi_task=True)
            vec.seed(self.seed)
            model, fresh = open_agent(self.agent_config, vec, self.path, seed=self.seed)
            rows: list[_Episode] = []
            try:
                train_agent(
                    model,
                    state,
                    self.path,
                    fresh=fresh,
                    budget_callback=_CurveCallback(state, rows),
                    progress=progress,
                )
            finally:
                self._append_curve(rows)
            self._write_card(cfg, bindings, state, time.perf_counter() - t0)
        finally:
            for ledger in ledgers:
                ledger.close()
        return self.path / AGENT_FILE

    # -----------------------------------------------------------------------------------------

    def _append_curve(self, rows: list[_Episode]) -> None:
        path = self.path / CURVE_CSV
        new = not path.is_file()
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["trained", "task", "reference", "best"])
            for r in rows:
                w.writerow(
                    [
                        r.trained,
                        r.task,
                        f"{r.reference:.6f}",
                        "" if r.best is None else f"{r.best:.6f}",
                    ]
                )

    def _write_card(
        self, cfg: Any, bindings: Sequence[Any], state: SearchState, wall: float
    ) -> None:
        import pandas as pd

        curve = pd.read_csv(self.path / CURVE_CSV) if (self.path / CURVE_CSV).is_file() else None
        summary: dict[str, Any] = {}
        if curve is not None and len(curve):
            curve["gain"] = curve["best"] - curve["reference"]
            q = max(1, len(curve) // 4)
            summary = {
                "episodes": len(curve),
                "gain_first_quarter": float(curve["gain"].head(q).mean()),
                "gain_last_quarter": float(curve["gain"].tail(q).mean()),
            }
            _plot_curve(curve, self.path / CURVE_PNG)
        tasks = {}
        for b in bindings:
            tasks[b.name] = {
                "features": [round(float(v), 4) for v in b.features],
                "reference": float(b.evaluator.reference_score),
                "best_score": b.run.best_score,
                "best_loss": str(b.run.best_expression) if b.run.best_expression else None,
            }
        card = {
            "format": 1,
            "kind": "pretrained-policy",
            "suite": self.suite.name,
            "tasks": list(self.suite.tasks),
            "excluded": list(self.config.get("exclude", [])),
            "algo": self.agent_config.algo,
            "agent": self.agent_config.to_dict(),
            "budget": self.budget,
            "trained": state.trained,
            "seed": self.seed,
            "wall_seconds": round(wall, 1),
            "git_revision": self.revision or git_revision(),
            "loss_rl_version": __version__,
            "layout": layout_of(cfg),
            "curve": summary,
            "per_task": tasks,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (self.path / CARD_JSON).write_text(json.dumps(card, indent=2))
        (self.path / CARD_MD).write_text(card_markdown(card))


def _plot_curve(curve: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(curve["trained"], curve["gain"], s=4, alpha=0.3, label="episode")
    window = max(5, len(curve) // 20)
    ax.plot(
        curve["trained"],
        curve["gain"].rolling(window, min_periods=1).mean(),
        color="C1",
        label=f"rolling mean ({window} episodes)",
    )
    ax.set_xlabel("inner trainings")
    ax.set_ylabel("episode best − CE (val)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pretrain(
    suite: str | Path | Suite,
    agent: str | Path = "maskable_ppo",
    *,
    budget: int | None = None,
    seed: int = 0,
    exclude: Sequence[str] = (),
    out: str | Path = "results",
    name: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    command: str | None = None,
) -> Path:
    """Pretrain a policy across a suite; returns the pretraining folder.

    See :meth:`Pretraining.create` for the arguments. Resume an interrupted one with
    :func:`resume_pretraining`.
    """
    p = Pretraining.create(
        suite, agent, budget=budget, seed=seed, exclude=exclude, out=out, name=name, command=command
    )
    p.run(progress)
    return p.path


def resume_pretraining(
    path: str | Path,
    progress: Callable[[Progress], None] | None = None,
    command: str | None = None,
) -> Path:
    """Continue an interrupted pretraining to its budget (nothing trained twice)."""
    p = Pretraining.open(path)
    p.log_command(command or f"loss_rl.resume_pretraining({str(path)!r})")
    p.run(progress)
    return p.path


__all__ = [
    "Pretraining",
    "pretrain",
    "resume_pretraining",
]
