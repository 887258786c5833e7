"""Search runs: presets → validated config → run folder → agent ↔ MDP ↔ evaluator → verification.

``loss_rl.search(...)`` starts a run, ``loss_rl.resume(path)`` continues one. Everything a resume
needs is in the run folder: ``config.yaml``, ``ledger.sqlite`` (no finished evaluation is trained
again) and ``agent.zip`` (the last checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loss_rl.agents import (
    AGENT_FILE,
    REPLAY_FILE,
    AgentConfig,
    BudgetCallback,
    Progress,
    SearchState,
    learn_until_done,
    load_agent,
    load_agent_config,
    make_agent,
    save_agent,
)
from loss_rl.errors import ConfigError, RunError
from loss_rl.evaluation import Evaluator, Executor
from loss_rl.executors import ExecutorConfig, make_executor, require_ray
from loss_rl.expr import Expr, TaskKind, parse
from loss_rl.presets import EnvPreset, check_budget, load_env_preset, parse_env_preset
from loss_rl.store import CONFIG, LEDGER, SUMMARY, Ledger, Run, load_run, write_yaml
from loss_rl.tasks import TaskConfig

if TYPE_CHECKING:
    from loss_rl.envs import EnvConfig

logger = logging.getLogger(__name__)

DEFAULT_ENV = "digits_noisy"
DEFAULT_AGENT = "maskable_ppo"
PRETRAINED = "pretrained"
"""``--agent pretrained``: the package's policy (:func:`loss_rl.pretrain.shipped_policy`)."""
CONFIG_VERSION = 1

def _new_run_dir(out: Path, env: str, algo: str, seed: int) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    # A suite task is named "<suite>:<task>"; a colon has no place in a folder name.
    base = out / f"{env.replace(':', '-')}_{algo}_s{seed}_{stamp}"
    path, i = base, 1
    while path.exists():
        path = Path(f"{base}-{i}")
        i += 1
    return path


class Search:
    """A search run bound to its run folder. Build it with :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.config = config
        self.env_preset = parse_env_preset(config["env"], config["env_name"])
        self.agent_config = AgentConfig.from_dict(config["agent"], config.get("agent_source", ""))
        self.budget = int(config["budget"])
        self.seed = int(config["seed"])
        self.init_agent = Path(config["init_agent"]) if config.get("init_agent") else None
        self.train = bool(config.get("train", True))
        # Runs written before executors existed trained in-process.
        self.executor_config = ExecutorConfig.from_dict(config.get("executor"), "executor")

    @classmethod
    def create(
        cls,
        env: str | Path = DEFAULT_ENV,
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
    ) -> Search:
        """Validate the presets and create a new run folder (nothing is trained yet).

        Args:
            env: Env preset name or path.
            agent: Agent preset name or path, or a finished run folder (its agent and policy:
                the policy starts from that run's ``agent.zip``).
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

        Raises:
            ConfigError: for bad presets or options (e.g. ``train=False`` without a policy).
        """
        preset = load_env_preset(env)
        if str(agent) == PRETRAINED:
            from loss_rl.pretrain import shipped_policy

            init_agent = init_agent or shipped_policy(preset.task.kind.value)
            agent_cfg = AgentConfig.from_dict(
                _card_of(init_agent)["agent"], source=f"pretrained:{init_agent}"
            )
        elif Path(agent).is_dir():
            # A run folder as the agent: its preset, and its policy as the starting point.
            source = load_run(agent)
            init_agent = init_agent or source.path
            agent_cfg = AgentConfig.from_dict(source.config["agent"], str(source.path))
        else:
            agent_cfg = load_agent_config(agent, preset.name)
        init_path = _policy_file(init_agent) if init_agent is not None else None
        if init_path is not None:
            from loss_rl.pretrain import check_layout, read_card

            card = read_card(init_path)
            if card is not None:
                if card.get("algo") not in (None, agent_cfg.algo):
                    raise ConfigError(
                        f"the policy in {init_path} is a {card['algo']} policy; use --agent "
                        f"{card['algo']} (or --agent pretrained) with it",
                        field="init_agent",
                    )
                check_layout(card, env_config(preset), str(init_path))
        if init_path is not None and agent_cfg.is_baseline:
            raise ConfigError(
                f"{agent_cfg.algo} is not a learning agent; --init-agent needs dqn, ppo or "
                "maskable_ppo",
                field="init_agent",
            )
        if tensorboard:
            try:
                import tensorboard as _tb  # noqa: F401
            except ImportError as err:
                raise ConfigError(
                    "TensorBoard logging needs the tensorboard package: pip install tensorboard",
                    field="tensorboard",
                ) from err
        if not train and init_path is None:
            raise ConfigError(
                "--no-train only rolls out a trained policy: pass --init-agent RUN or an --agent "
                "that is a run folder",
                field="no_train",
            )
        exec_cfg = (preset.executor or ExecutorConfig()).override(executor, ray_address)
        if exec_cfg.name == "ray":
            require_ray()  # before the run folder: a missing extra is an input error
        if budget is not None:
            check_budget(budget, "budget")
        run_budget = int(budget if budget is not None else preset.budget)
        if train and run_budget < agent_cfg.min_budget:
            what = ("n_steps x n_envs proposals per policy update" if agent_cfg.algo != "dqn"
                    else "learning_starts transitions before learning")  # fmt: skip
            raise ConfigError(
                f"{run_budget} inner trainings are too few for {agent_cfg.algo}, which needs "
                f"{agent_cfg.min_budget} ({what}, from {agent_cfg.source or 'its preset'}): the "
                f"run would end before the agent learns anything. Use --budget "
                f"{agent_cfg.min_budget} or more, or a preset with smaller n_steps / n_envs",
                field="budget",
            )
        out_dir = Path(out)
        path = out_dir / name if name else _new_run_dir(out_dir, preset.name, agent_cfg.algo, seed)
        if path.exists() and any(path.iterdir()):
            raise RunError(f"{path} already exists; choose another --out/--name or resume it")
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "version": CONFIG_VERSION,
            "env_name": preset.name,
            "env": preset.to_dict(),
            "agent_source": agent_cfg.source,
            "agent": agent_cfg.to_dict(),
            "budget": run_budget,
            "seed": int(seed),
            "init_agent": str(init_path.resolve()) if init_path is not None else None,
            "train": bool(train),
            "tensorboard": bool(tensorboard),
            "executor": exec_cfg.to_dict(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_yaml(path / CONFIG, config)
        search = cls(path, config)
        search.log_command(command or f"loss_rl.search(env={str(env)!r}, agent={str(agent)!r}, "
                                      f"budget={budget!r}, seed={seed!r})")  # fmt: skip
        return search

    @classmethod
    def open(cls, path: str | Path) -> Search:
        """Open an existing run folder to resume it."""
        run = load_run(path)
        if int(run.config.get("version", 0)) > CONFIG_VERSION:
            raise RunError(f"{path} was written by a newer loss_rl; upgrade to resume it")
        try:
            return cls(run.path, run.config)
        except (KeyError, TypeError) as err:
            msg = f"{path}/config.yaml is incomplete ({err}); it cannot be resumed"
            raise RunError(msg) from err

    def log_command(self, command: str) -> None:
        """Append the command that started this session to ``command.txt``."""
        with (self.path / "command.txt").open("a") as f:
            f.write(command.rstrip() + "\n")

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
        """
        executor = make_executor(self.executor_config)
        _prepare_compute(executor)  # a Ray cluster that does not answer fails here
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
                elapsed = time.perf_counter() - t0
                self._write_summary(ledger, state, elapsed, None, "interrupted")
                raise
            verification = None
            if verify_top:
                verification = self._verify_and_export(ledger)
            self._write_summary(ledger, state, time.perf_counter() - t0, verification, "finished")
        finally:
            ledger.close()
            _close(executor)
        return load_run(self.path)

    def env_config(self) -> EnvConfig:
        """The MDP configuration: the preset's space, the task's kind and its descriptor.

        Once a learning agent has measured the task's landmarks (:meth:`_descriptor`), the
        descriptor recorded in ``config.yaml`` is used, so inspection and resume see the
        observations the agent saw.
        """
        cfg = env_config(self.env_preset)
        feats = self.config.get("task_features")
        return cfg.replace(task_features=tuple(feats)) if feats else cfg

    def _descriptor(self, evaluator: Evaluator) -> None:
        """Measure the landmarks once (recorded as trainings of this run) and keep them."""
        if self.config.get("task_features") or "task_features" in self.env_preset.space:
            return
        from loss_rl.descriptors import task_descriptor

        feats = task_descriptor(self.env_preset.task, self.env_preset.evaluation.data_seed,
                                evaluator)  # fmt: skip
        self.config["task_features"] = [round(float(v), 6) for v in feats]
        write_yaml(self.path / CONFIG, self.config)

    def _run_baseline(
        self, evaluator: Evaluator, state: SearchState, progress: Callable[[Progress], None] | None
    ) -> None:
        from loss_rl.agents.baselines import BASELINES

        cfg = self.agent_config
        cls = BASELINES[cfg.algo]
        options = cls.options_class(n_envs=cfg.n_envs, **cfg.hyperparams)
        searcher = cls(self.env_config(), evaluator, state, seed=self.seed, run_dir=self.path,
                       options=options)  # fmt: skip
        searcher.run(progress)
        if progress is not None:
            progress(state.progress())

    def _run_agent(
        self, evaluator: Evaluator, state: SearchState, progress: Callable[[Progress], None] | None
    ) -> None:
        from loss_rl.envs import BatchedLossVecEnv, LossDesignEnv

        self._descriptor(evaluator)
        env_cfg = self.env_config()
        n_envs = self.agent_config.n_envs
        envs = [LossDesignEnv(env_cfg, evaluator=evaluator) for _ in range(n_envs)]
        vec = BatchedLossVecEnv(envs, evaluator)
        vec.seed(self.seed)
        if state.best_expression is not None and state.best_score is not None:
            envs[0].inject_best(state.best_expression, state.best_score)  # resumed run
        agent_path = self.path / AGENT_FILE
        if agent_path.is_file():
            model = load_agent(self.agent_config.algo, agent_path, env=vec)
            replay = self.path / REPLAY_FILE
            if replay.is_file() and hasattr(model, "load_replay_buffer"):
                model.load_replay_buffer(str(replay))
            fresh = False
        elif self.init_agent is not None:
            model = _load_compatible(self.agent_config.algo, self.init_agent, vec)
            # A loaded policy keeps its saved seed: reseed, so search seeds give other rollouts.
            model.set_random_seed(self.seed)
            fresh = True
        else:
            model = make_agent(self.agent_config, vec, seed=self.seed)
            fresh = True
        if self.config.get("tensorboard"):
            model.tensorboard_log = str(self.path / "tb")
        if not self.train:
            _roll_out(model, vec, state, progress, self.agent_config.uses_masks)
            return

        learn_until_done(model, state, BudgetCallback(state), lambda: save_agent(model, self.path),
                         chunk_steps=4 * self.budget, fresh=fresh, progress=progress)  # fmt: skip

    # -----------------------------------------------------------------------------------------

    def _verify_and_export(self, ledger: Ledger) -> dict[str, Any] | None:
        from loss_rl.export import export
        from loss_rl.verify import verify

        df = ledger.frame()
        ok = df[(df["status"] == "ok") & (df["source"] == "trained")]
        if ok.empty:
            return None
        top = ok.sort_values("score", ascending=False).drop_duplicates("key")
        top = top.head(self.env_preset.verification.top_k)
        losses = {f"found_{i + 1}": parse(e) for i, e in enumerate(top["expression"])}
        val_scores = dict(zip(losses, top["score"], strict=True))
        table = verify(
            losses,
            self.env_preset.task,
            seeds=self.env_preset.verification.seeds,
            references=self.env_preset.verification.references,
            data_seed=self.env_preset.evaluation.data_seed,
        )
        found = table[table["loss"].isin(list(losses))]
        # The winner is chosen on the *validation* split of the full-length re-training; the
        # test split is only reported (never select on test).
        found = found.sort_values("val_mean", ascending=False, na_position="last")
        win = found.iloc[0]
        expr: Expr = losses[win["loss"]]
        metadata = {
            "search_val_score": float(val_scores[win["loss"]]),
            "test_mean": float(win["mean"]),
            "test_ci95": [float(win["ci_low"]), float(win["ci_high"])],
            "diff_vs_ce": float(win["diff_vs_ce"]),
            "env": self.env_preset.name,
            "run": self.path.name,
        }
        best = self.path / "best"
        best.mkdir(exist_ok=True)
        kind: TaskKind = self.env_preset.task.kind
        for fmt, fname in (("json", "loss.json"), ("py", "loss.py"), ("torchscript", "loss.pt")):
            export(expr, best / fname, format=fmt, kind=kind, metadata=metadata)
        return {
            "winner": win["loss"],
            "expression": str(expr),
            "key": expr.key,
            "search_val_score": float(val_scores[win["loss"]]),
            "steps": table.attrs.get("steps"),
            "seeds": table.attrs.get("seeds"),
            "metric": table.attrs.get("metric"),
            "table": json.loads(table.to_json(orient="records")),
        }

    def _write_summary(
        self,
        ledger: Ledger,
        state: SearchState,
        seconds: float,
        verification: dict[str, Any] | None,
        status: str,
    ) -> None:
        counts = ledger.counts()
        prev: dict[str, Any] = {}
        if (self.path / SUMMARY).is_file():
            with contextlib.suppress(json.JSONDecodeError):
                prev = json.loads((self.path / SUMMARY).read_text())
        wall = float(prev.get("wall_seconds", 0.0)) + seconds
        best: dict[str, Any] | None = None
        if verification is not None:
            best = {"expression": verification["expression"], "key": verification["key"],
                    "val_score": verification["search_val_score"]}  # fmt: skip
        elif state.best_expression is not None:
            best = {"expression": state.best_expression, "key": parse(state.best_expression).key,
                    "val_score": state.best_score}  # fmt: skip
        resolved = (counts["cached"] + counts["rejected"]) / counts["proposed"] if counts[
            "proposed"] else 0.0  # fmt: skip
        summary = {
            "status": status,
            "env": self.env_preset.name,
            "agent": self.agent_config.algo,
            "budget": self.budget,
            "best": best,
            "verification": verification,
            "evaluations": counts,
            "resolved_without_training": resolved,
            "wall_seconds": wall,
            "evals_per_second": counts["trained"] / wall if wall > 0 else 0.0,
            "train_seconds": state.evaluator.stats.train_seconds,
        }
        tmp = self.path / "summary.tmp.json"
        tmp.write_text(json.dumps(summary, indent=2, default=float))
        os.replace(tmp, self.path / SUMMARY)


def env_config(preset: EnvPreset) -> EnvConfig:
    """The MDP configuration of an env preset: its space, the task's kind and descriptor."""
    from loss_rl.envs import EnvConfig

    space = {**preset.space, "kind": preset.task.kind.value}
    if "task_features" not in space:
        space["task_features"] = task_features(preset.task, preset.evaluation.data_seed)
    return EnvConfig.from_dict(space, prefix="env.space")


def make_env(preset: str | Path = DEFAULT_ENV, **kwargs: Any) -> Any:
    """A :class:`~loss_rl.envs.LossDesignEnv` for an env preset, scored by the real evaluator.

    This is the entry point of the gymnasium ids ``loss_rl/<preset>-v0`` (e.g.
    ``gymnasium.make("loss_rl/digits_noisy-v0")``). Evaluations are cached in memory only.
    """
    from loss_rl.envs import LossDesignEnv

    p = load_env_preset(preset)
    executor = make_executor(p.executor)
    if p.executor is not None and p.executor.name == "ray":
        executor.start()  # type: ignore[attr-defined]  # connect now: fail here, not in a reward
    evaluator = Evaluator(p.task, seeds=p.evaluation.seeds, data_seed=p.evaluation.data_seed,
                          executor=executor)  # fmt: skip
    return LossDesignEnv(env_config(p), evaluator=evaluator, **kwargs)


def _card_of(policy: str | Path) -> dict[str, Any]:
    from loss_rl.pretrain import read_card

    card = read_card(policy)
    if card is None or "agent" not in card:
        raise ConfigError(f"{policy} has no policy card (card.json)", field="agent")
    return card


def _policy_file(source: str | Path) -> Path:
    """``agent.zip`` of a run folder, or the given file."""
    p = Path(source)
    f = p / AGENT_FILE if p.is_dir() else p
    if not f.is_file():
        raise ConfigError(
            f"no trained policy at {f}; give a run folder of dqn/ppo/maskable_ppo with an "
            "agent.zip, or the path of such a file",
            field="init_agent",
        )
    return f


def _load_compatible(algo: str, path: Path, vec: Any) -> Any:
    """Load a saved policy onto ``vec``; a layout mismatch is a clear error."""
    try:
        return load_agent(algo, path, env=vec)
    except (ValueError, KeyError) as err:
        raise ConfigError(
            f"the policy in {path} does not fit this env ({err}); a policy transfers only between "
            "presets with the same search space (space, terms, grids, max_size) and the same "
            f"algorithm ({algo})",
            field="init_agent",
        ) from err


def _roll_out(
    model: Any,
    vec: Any,
    state: SearchState,
    progress: Callable[[Progress], None] | None,
    masks: bool,
) -> None:
    """Roll a trained policy out without learning until the budget is spent.

    The policy samples its actions (``deterministic=False``): a greedy policy would replay one
    episode, every proposal a cache hit, and never spend the budget.
    """
    obs = vec.reset()
    while not state.done:
        kwargs = {"action_masks": vec.get_action_masks()} if masks else {}
        actions, _ = model.predict(obs, deterministic=False, **kwargs)
        obs, _, _, infos = vec.step(actions)
        state.env_steps += len(infos)
        for info in infos:
            res = info.get("result")
            if res is not None:
                state.observe(res.score, res.expression)
        if progress is not None:
            progress(state.progress())


def task_features(task: TaskConfig, data_seed: int = 0) -> list[float]:
    """The task descriptor without landmarks (see :mod:`loss_rl.descriptors`)."""
    from loss_rl.descriptors import meta_features

    return meta_features(task, data_seed)


def _prepare_compute(executor: Executor) -> None:
    """One intra-op thread in the search process, and the executor started early.

    The search process runs the agent's small networks and the evaluator's probe checks: tiny
    ops that two spinning threads only slow down, and that steal a core from the trainer's worker
    processes (measured here: ``check()`` took 1.3 s with 2 threads beside a busy core, 22 ms
    with 1). The trainer splits its population over its own one-thread worker processes (the
    in-process executor starts them now, so the first evaluations are not slowed down); the Ray
    executor connects now, so a cluster that does not answer stops the run before it trains.
    """
    import torch

    torch.set_num_threads(1)
    start = getattr(executor, "start", None)
    if start is not None:
        start()


def _close(executor: Executor) -> None:
    close = getattr(executor, "close", None)
    if close is not None:
        close()


def search(
    env: str | Path = DEFAULT_ENV,
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
) -> Run:
    """Run a loss search end to end and return the finished run.

    Args:
        env: Env preset name (``envs/<name>.yaml``) or path: task, search space, budgets.
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

    Returns:
        The run (``.path``, ``.summary``, ``.ledger``, ``.best``).
    """
    s = Search.create(env, agent, budget=budget, seed=seed, out=out, name=name, command=command,
                      init_agent=init_agent, train=train, executor=executor,
                      ray_address=ray_address)  # fmt: skip
    return s.run(progress)


def resume(
    path: str | Path,
    progress: Callable[[Progress], None] | None = None,
    command: str | None = None,
) -> Run:
    """Continue a run to its original budget; finished evaluations are never trained again."""
    s = Search.open(path)
    s.log_command(command or f"loss_rl.resume({str(path)!r})")
    return s.run(progress)


def list_runs(root: str | Path = "results") -> list[Run]:
    """Run folders under ``root`` (newest first)."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for p in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
        if (p / CONFIG).is_file() and (p / LEDGER).is_file():
            with contextlib.suppress(RunError):
                runs.append(load_run(p))
    return runs


__all__: Sequence[str] = [
    "Search", "env_config", "list_runs", "make_env", "resume", "search", "task_features",
]  # fmt: skip
