"""A search run bound to its folder: the agent (or baseline) ↔ MDP ↔ evaluator loop.

Everything a resume needs is in the run folder: ``config.yaml``, ``ledger.sqlite`` (no finished
evaluation is trained again) and ``agent.zip`` (the last checkpoint).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loss_rl._search._data import DataSpec
from loss_rl._search._finish import protocol, verify_and_export, write_summary
from loss_rl._search._setup import new_run
from loss_rl.agents import (
    AgentConfig,
    Progress,
    SearchState,
    open_agent,
    roll_out,
    train_agent,
)
from loss_rl.agents.baselines import BASELINES
from loss_rl.agents.callbacks import DeferredRewardCallback
from loss_rl.descriptors import task_descriptor
from loss_rl.envs import BatchedLossVecEnv, LossDesignEnv
from loss_rl.errors import RunError
from loss_rl.evaluation import Evaluator
from loss_rl.executors import ExecutorConfig, close_executor, make_executor, prepare_compute
from loss_rl.output_paths import existing
from loss_rl.presets import parse_env_preset, require_code_trust, run_env_config
from loss_rl.store import (
    CONFIG,
    LEDGER,
    Ledger,
    Run,
    RunConfig,
    RunLock,
    check_run_files,
    load_run,
    read_data_record,
)

if TYPE_CHECKING:
    from loss_rl.envs import EnvConfig

logger = logging.getLogger(__name__)

DEFAULT_AGENT = "maskable_ppo"
"""The agent preset of ``loss-rl search`` without ``--agent``."""


class Search:
    """A search run bound to its run folder. Build it with :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, config: RunConfig) -> None:
        self.path = path
        self.config = config
        self.env_preset = parse_env_preset(config.env, config.env_name)
        self.agent_config = AgentConfig.from_dict(config.agent, config.agent_source)
        self.budget = config.budget
        self.seed = config.seed
        self.init_agent = Path(config.init_agent) if config.init_agent else None
        self.train = config.train
        # Runs written before executors existed trained in-process.
        self.executor_config = ExecutorConfig.from_dict(config.executor, "executor")

    @classmethod
    def create(
        cls,
        env: str | Path | None = None,
        agent: str | Path = DEFAULT_AGENT,
        *,
        budget: int | None = None,
        seed: int = 0,
        out: str | Path = "results",
        name: str | None = None,
        command: str | None = None,
        init_agent: str | Path | None = None,
        train: bool = True,
        tensorboard: bool = False,
        executor: str | None = None,
        ray_address: str | None = None,
        cap: bool = True,
        data: DataSpec | None = None,
        model: Any = None,
        device: str | None = None,
    ) -> Search:
        """Validate the presets and create a new run folder (nothing is trained yet).

        Args:
            env: Env preset name or path (default :data:`loss_rl.presets.DEFAULT_ENV`; with
                ``data``, the preset of the data's task kind).
            agent: Agent preset name or path, or a finished run folder (its agent and policy:
                the policy starts from that run's ``agent.zip``), or ``"pretrained"``.
            budget: Inner trainings (default: the env preset's).
            seed: Seed of the agent and environments.
            out: Parent folder of the run folder.
            name: Run folder name.
            command: Command line recorded in ``command.txt``.
            init_agent: A run folder or ``agent.zip`` whose trained policy this run starts from
                (fine-tuned, or only rolled out with ``train=False``).
            train: ``False`` rolls the policy out without learning (needs a trained policy).
            tensorboard: Log the agent's training to ``tb/`` (needs ``pip install tensorboard``).
            executor: Where trainings run, ``"inprocess"`` or ``"ray"`` (default: the env
                preset's ``executor:`` section, else in-process).
            ray_address: The Ray cluster (see :class:`~loss_rl.executors.ExecutorConfig`).
            cap: ``False`` allows a budget above :data:`loss_rl.presets.MAX_BUDGET`
                (``loss-rl search --no-cap``).
            data: The user's data (:class:`DataSpec`): the task reads it, everything else
                comes from ``env``.
            model: The task's model instead of the preset's: a ``model:`` mapping, or a
                module-level function ``f(num_features, num_outputs, **kwargs) -> nn.Module``
                (trained N copies at a time with ``torch.func``; see README).
            device: Where the in-process trainings run: ``cpu``, ``cuda``, ``cuda:N`` or
                ``auto`` (default: the preset's ``executor.device``, else ``cpu``).

        Raises:
            ConfigError: for bad presets or options (e.g. ``train=False`` without a policy),
                and for data that cannot be used (named file and column, and the fix).
        """
        path, config = new_run(
            env,
            agent,
            budget=budget,
            seed=seed,
            out=out,
            name=name,
            init_agent=init_agent,
            train=train,
            tensorboard=tensorboard,
            executor=executor,
            ray_address=ray_address,
            cap=cap,
            data=data,
            model=model,
            device=device,
        )
        search = cls(path, config)
        search.log_command(
            command
            or f"loss_rl.search(env={str(env)!r}, agent={str(agent)!r}, budget={budget!r}, "
            f"seed={seed!r})"
        )
        return search

    @property
    def data_record(self) -> dict[str, Any] | None:
        """The run's ``data.json`` (a search on the user's data), else ``None``."""
        return read_data_record(self.path)

    @classmethod
    def open(cls, path: str | Path, *, trust_code: bool = False) -> Search:
        """Open an existing run folder to resume it.

        Args:
            path: The run folder.
            trust_code: Allow a task whose model is built by code the folder names
                (``task.model.factory``) to import it; refused otherwise
                (:func:`loss_rl.presets.require_code_trust`).

        Raises:
            RunError: if the folder is not a run, a file of it is damaged, its config is
                incomplete or from a newer loss_rl, or another process is writing it (refused
                here, before the resume logs its command; :meth:`run` takes the lock).
        """
        run = load_run(path)
        RunLock.check(run.path)
        search = cls(run.path, run.run_config)
        require_code_trust(search.env_preset.task, str(run.path), trust_code)
        return search

    def log_command(self, command: str) -> None:
        """Append the command that started this session to ``command.txt``."""
        with (self.path / "command.txt").open("a") as f:
            f.write(command.rstrip() + "\n")

    def env_config(self) -> EnvConfig:
        """The MDP configuration: the preset's space, the task's kind and its descriptor.

        Once a learning agent has measured the task's landmarks, the descriptor recorded in
        ``config.yaml`` is used, so inspection and resume see the observations the agent saw.
        """
        return run_env_config(self.config)

    # -----------------------------------------------------------------------------------------

    def run(
        self,
        progress: Callable[[Progress], None] | None = None,
        *,
        verify_top: bool = True,
    ) -> Run:
        """Search until the budget is spent, then verify and export the best loss.

        Args:
            progress: Called with a :class:`Progress` snapshot a few times per second.
            verify_top: Re-train the top candidates at full length and export the winner.

        Returns:
            The finished run (``loss_rl.store.Run``).

        Raises:
            KeyboardInterrupt: after saving the agent and a partial summary (Ctrl-C); the run
                can be resumed with ``loss_rl.resume(path)``.
            RunError: if another process is writing this run (its pid in the message), or a
                file of the run is damaged; nothing of the run is written then.
        """
        # One writer per run: held until the summary is written. The files are checked again
        # under the lock, so a damaged run is never restarted over its best/ and summary.json.
        with RunLock(self.path):
            check_run_files(self.path)
            return self._run_locked(progress, verify_top=verify_top)

    def _run_locked(self, progress: Callable[[Progress], None] | None, *, verify_top: bool) -> Run:
        """:meth:`run`, with the run's lock held."""
        executor = make_executor(self.executor_config)
        prepare_compute(executor)  # a Ray cluster that does not answer fails here
        preset = self.env_preset
        ledger = Ledger(self.path / LEDGER)
        t0 = time.perf_counter()
        try:
            evaluator = Evaluator(
                preset.task,
                seeds=preset.evaluation.seeds,
                data_seed=preset.evaluation.data_seed,
                ledger=ledger,
                executor=executor,
                fidelity=preset.evaluation.fidelity,
            )
            before = ledger.counts()["trained"]
            state = SearchState(evaluator, self.budget, trained_before=before)
            for r in ledger.resolved():
                state.observe(r.score, r.expression)
            try:
                if not state.done:
                    if self.agent_config.is_baseline:
                        self._run_baseline(evaluator, state, progress)
                    else:
                        self._run_agent(evaluator, state, progress)
            except KeyboardInterrupt:
                self._summary(ledger, state, time.perf_counter() - t0, None, "interrupted")
                raise
            verification = None
            if verify_top:
                device = self.executor_config.device
                verification = verify_and_export(self.path, preset, ledger, device)
            self._summary(ledger, state, time.perf_counter() - t0, verification, "finished")
        finally:
            ledger.close()
            close_executor(executor)
        return load_run(self.path)

    def _summary(
        self,
        ledger: Ledger,
        state: SearchState,
        seconds: float,
        verification: dict[str, Any] | None,
        status: str,
    ) -> None:
        write_summary(
            self.path,
            env=self.env_preset.name,
            agent=self.agent_config.algo,
            budget=self.budget,
            ledger=ledger,
            state=state,
            seconds=seconds,
            verification=verification,
            status=status,
            protocol=protocol(self.env_preset),
        )

    def _measure_descriptor(self, evaluator: Evaluator) -> None:
        """Measure the landmarks once (recorded as trainings of this run) and keep them."""
        if self.config.task_features or "task_features" in self.env_preset.space:
            return
        feats = task_descriptor(
            self.env_preset.task, self.env_preset.evaluation.data_seed, evaluator
        )
        self.config.task_features = [round(float(v), 6) for v in feats]
        self.config.write(self.path)

    def _run_baseline(
        self, evaluator: Evaluator, state: SearchState, progress: Callable[[Progress], None] | None
    ) -> None:
        # The same starting information as the RL agents: the landmarks are measured (and
        # recorded, so counted in the budget) before the first proposal.
        self._measure_descriptor(evaluator)
        cfg = self.agent_config
        cls = BASELINES[cfg.algo]
        options = cls.options_class(n_envs=cfg.n_envs, **cfg.hyperparams)
        searcher = cls(
            self.env_config(), evaluator, state, seed=self.seed, run_dir=self.path, options=options
        )
        searcher.run(progress)
        if progress is not None:
            progress(state.progress())

    def _run_agent(
        self, evaluator: Evaluator, state: SearchState, progress: Callable[[Progress], None] | None
    ) -> None:
        self._measure_descriptor(evaluator)
        env_cfg = self.env_config()
        envs = [
            LossDesignEnv(env_cfg, evaluator=evaluator) for _ in range(self.agent_config.n_envs)
        ]
        # Grammar space, on-policy learning: score a whole rollout's expressions in one batch.
        defer = self.train and env_cfg.space == "grammar" and self.agent_config.algo != "dqn"
        vec = BatchedLossVecEnv(envs, evaluator, defer=defer)
        vec.seed(self.seed)
        if state.best_expression is not None and state.best_score is not None:
            envs[0].inject_best(state.best_expression, state.best_score)  # resumed run
        model, fresh = open_agent(
            self.agent_config, vec, self.path, seed=self.seed, init=self.init_agent
        )
        if self.config.tensorboard:
            model.tensorboard_log = str(self.path / "tb")
        if self.train:
            extra = [DeferredRewardCallback(state, vec)] if defer else []
            train_agent(
                model, state, self.path, fresh=fresh, progress=progress, extra_callbacks=extra
            )
        else:
            roll_out(model, vec, state, masks=self.agent_config.uses_masks, progress=progress)


def search(
    env: str | Path | None = None,
    agent: str | Path = DEFAULT_AGENT,
    *,
    budget: int | None = None,
    seed: int = 0,
    out: str | Path = "results",
    name: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    command: str | None = None,
    init_agent: str | Path | None = None,
    train: bool = True,
    executor: str | None = None,
    ray_address: str | None = None,
    cap: bool = True,
    data: Any = None,
    target: str | int | None = None,
    kind: str | None = None,
    val_fraction: float | None = None,
    test: str | Path | None = None,
    drop_missing: bool = False,
    model: Any = None,
    device: str | None = None,
) -> Run:
    """Run a loss search end to end and return the finished run.

    Examples:
        >>> loss_rl.search(data="wine_noisy.csv", target="label", budget=100)  # doctest: +SKIP
        >>> loss_rl.search(data=df, target="label")  # a pandas DataFrame  # doctest: +SKIP

    Args:
        env: Env preset name (``envs/<name>.yaml``) or path: task, search space, budgets
            (default :data:`loss_rl.presets.DEFAULT_ENV`; with ``data``, the default preset of
            the data's task kind: ``synthetic_noisy``'s settings for classification,
            ``diabetes``'s for regression).
        agent: Agent preset name (``dqn`` | ``ppo`` | ``maskable_ppo``) or path.
        budget: Inner trainings to spend (default: the env preset's).
        seed: Seed of the agent and environments.
        out: Parent folder of the run folder.
        name: Run folder name (default: ``<env>_<algo>_s<seed>_<timestamp>``).
        progress: Progress callback (see :class:`loss_rl.agents.Progress`).
        command: Command line recorded in ``command.txt``.
        init_agent: Start from this run's (or ``agent.zip``'s) trained policy.
        train: ``False`` only rolls the policy out (no learning).
        executor: ``"inprocess"`` or ``"ray"`` (default: the env preset's, else in-process).
        ray_address: The Ray cluster for ``executor="ray"`` (default: ``$RAY_ADDRESS``, else a
            private local instance).
        cap: ``False`` allows a budget above :data:`loss_rl.presets.MAX_BUDGET`.
        data: Search on this data instead of the preset's dataset: a file (CSV, Parquet,
            ``.npz`` with ``x`` and ``y``, ``.npy``), a pandas DataFrame, or an ``(X, y)`` pair
            (written into the run folder). Numeric features are standardised on the training
            split, text/categorical ones one-hot encoded; no label noise is injected.
        target: The label column of a CSV/Parquet file or DataFrame.
        kind: ``"classification"`` or ``"regression"`` (default: inferred from the target and
            recorded in the run's ``data.json``).
        val_fraction: Fraction of the rows held out for validation (default: the preset's).
        test: A separate test file with the same columns (default: a fraction is drawn).
        drop_missing: Leave out rows with missing or infinite values instead of refusing them.
        model: The model to train instead of the preset's: a ``model:`` mapping, or a
            module-level function ``f(num_features, num_outputs) -> torch.nn.Module``.
        device: Where the inner trainings run: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``
            (default: the preset's ``executor.device``, else ``cpu``).

    Returns:
        The run (``.path``, ``.summary``, ``.ledger``, ``.best``).
    """
    s = Search.create(
        env,
        agent,
        budget=budget,
        seed=seed,
        out=out,
        name=name,
        command=command,
        init_agent=init_agent,
        train=train,
        executor=executor,
        ray_address=ray_address,
        cap=cap,
        data=(
            DataSpec(data, target, kind, val_fraction, test, drop_missing)
            if data is not None
            else None
        ),
        model=model,
        device=device,
    )
    return s.run(progress)


def resume(
    path: str | Path,
    progress: Callable[[Progress], None] | None = None,
    command: str | None = None,
    *,
    trust_code: bool = False,
) -> Run:
    """Continue a run to its original budget; finished evaluations are never trained again.

    ``trust_code`` allows a run whose model is built by code it names to import it
    (:meth:`Search.open`).
    """
    s = Search.open(path, trust_code=trust_code)
    s.log_command(command or f"loss_rl.resume({str(path)!r})")
    return s.run(progress)


def list_runs(root: str | Path = "results") -> list[Run]:
    """Run folders under ``root`` (newest first).

    A folder with a ``config.yaml`` and a ``ledger.sqlite`` that cannot be read is listed too,
    as a :class:`Run` whose ``damage`` says why (its ledger views raise that
    :class:`RunError`), so one damaged run neither hides the others nor goes unnoticed.
    """
    root = Path(root)
    if existing(root) != "dir":
        return []

    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:  # a dangling link: listed last, not a crash
            return 0.0

    runs = []
    for p in sorted(root.iterdir(), key=mtime, reverse=True):
        if (p / CONFIG).is_file() and (p / LEDGER).is_file():
            try:
                runs.append(load_run(p))
            except RunError as err:
                runs.append(Run.damaged(p, str(err)))
    return runs
