"""A new search run: presets and options checked, then its folder and ``config.yaml`` written.

Every check runs before the folder is created, so a bad option leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loss_rl._search._data import DataSpec, PreparedData, with_model
from loss_rl.agents import AGENT_FILE, AgentConfig
from loss_rl.agents.cards import check_layout, layout_of, read_card, shipped_policy
from loss_rl.errors import ConfigError
from loss_rl.executors import ExecutorConfig, require_ray
from loss_rl.output_paths import check_writable, existing
from loss_rl.presets import (
    DEFAULT_ENV,
    EnvPreset,
    check_budget,
    env_config,
    load_agent_config,
    load_env_preset,
    run_env_config,
)
from loss_rl.schema import check_int
from loss_rl.store import RunConfig, check_run_name, create_run_dir, is_run, load_run

MAX_SEED = 2**32 - 1
"""Largest run seed: numpy and SB3 take unsigned 32-bit seeds."""

PRETRAINED = "pretrained"
"""``--agent pretrained``: the package's policy (:func:`loss_rl.agents.cards.shipped_policy`)."""


def new_run(
    env: str | Path | None,
    agent: str | Path,
    *,
    budget: int | None,
    seed: int,
    out: str | Path,
    name: str | None,
    init_agent: str | Path | None,
    train: bool,
    tensorboard: bool,
    executor: str | None,
    ray_address: str | None,
    cap: bool = True,
    data: DataSpec | None = None,
    model: Any = None,
    device: str | None = None,
) -> tuple[Path, RunConfig]:
    """Resolve and check a new run's options, then create its folder with ``config.yaml``.

    See :meth:`loss_rl.Search.create` for the arguments; ``cap=False`` lifts the budget cap
    (``MAX_BUDGET`` of :mod:`loss_rl.presets`; ``loss-rl search --no-cap``). With ``data``, the
    task reads the user's data (:mod:`loss_rl._search._data`; ``env`` then only supplies the
    search settings, and defaults by the data's task kind).

    Raises:
        ConfigError: for bad presets or options (``name`` must be a single folder name; a seed
            outside ``[0, 2**32 - 1]``, a budget above the cap and an ``out`` that cannot be
            written are refused too).
        RunError: if the run folder already exists and is not empty.
    """
    if name is not None:
        check_run_name(name)  # before anything is loaded or written
    # numpy and SB3 take unsigned 32-bit seeds: any other seed failed after the folder existed.
    check_int(seed, "seed", 0, MAX_SEED)
    with contextlib.ExitStack() as cleanup:
        prepared = None
        if data is not None:
            prepared = PreparedData(data, env)
            cleanup.callback(prepared.discard)  # a copy of in-memory data, if no run is made
        preset = prepared.preset if prepared is not None else load_env_preset(env or DEFAULT_ENV)
        if model is not None:
            preset = with_model(preset, model)
            if prepared is not None:
                prepared.preset = preset
        agent_cfg, init_path = _agent_and_policy(preset, agent, init_agent)
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
        exec_cfg = (preset.executor or ExecutorConfig()).override(executor, ray_address, device)
        if exec_cfg.name == "ray":
            require_ray()  # before the run folder: a missing extra is an input error
        if exec_cfg.device is not None:  # a GPU this machine lacks: refused before the folder
            exec_cfg.resolved_device("device" if device is not None else "env.executor.device")
        run_budget = _budget(budget, preset, agent_cfg, train, cap=cap)
        check_writable(out, "out", folder=True)  # creates nothing: the folder is made below
        out_dir = Path(out)
        if name is not None:
            path = create_run_dir(out_dir, name)
        else:
            path = _new_run_dir(out_dir, preset.name, agent_cfg.algo, seed)
        if prepared is not None:
            preset = prepared.move_into(path)
        config = RunConfig(
            env_name=preset.name,
            env=preset.to_dict(),
            agent_source=agent_cfg.source,
            agent=agent_cfg.to_dict(),
            budget=run_budget,
            seed=int(seed),
            init_agent=str(init_path.resolve()) if init_path is not None else None,
            train=bool(train),
            tensorboard=bool(tensorboard),
            executor=exec_cfg.to_dict(),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        config.write(path)
        return path, config


def _agent_and_policy(
    preset: EnvPreset, agent: str | Path, init_agent: str | Path | None
) -> tuple[AgentConfig, Path | None]:
    """The agent config and the policy file the run starts from (checked against the env)."""
    if str(agent) == PRETRAINED:
        init_agent = init_agent or shipped_policy(preset.task.kind.value)
        agent_cfg = AgentConfig.from_dict(
            _card_of(init_agent)["agent"], source=f"pretrained:{init_agent}"
        )
    elif existing(Path(agent)) == "dir":
        # A run folder as the agent: its preset, and its policy as the starting point.
        source = load_run(agent)
        init_agent = init_agent or source.path
        agent_cfg = AgentConfig.from_dict(source.run_config.agent, str(source.path))
    else:
        agent_cfg = load_agent_config(agent, preset.name)
    init_path = _policy_file(init_agent) if init_agent is not None else None
    if init_path is not None and agent_cfg.is_baseline:
        raise ConfigError(
            f"{agent_cfg.algo} is not a learning agent; --init-agent needs dqn, ppo, "
            "maskable_ppo or risk_seeking_ppo",
            field="init_agent",
        )
    if init_path is not None:
        card = read_card(init_path)
        if card is None and init_path.name == AGENT_FILE and is_run(init_path.parent):
            # A search run's policy has no card: its config.yaml records the algorithm and the
            # MDP it was trained on, checked here before the file is opened at all.
            source_cfg = load_run(init_path.parent).run_config
            card = {
                "algo": source_cfg.agent.get("algo"),
                "layout": layout_of(run_env_config(source_cfg)),
            }
        if card is not None:
            if card.get("algo") not in (None, agent_cfg.algo):
                raise ConfigError(
                    f"the policy in {init_path} is a {card['algo']} policy; use --agent "
                    f"{card['algo']} (or --agent pretrained) with it",
                    field="init_agent",
                )
            check_layout(card, env_config(preset), str(init_path))
    return agent_cfg, init_path


def _budget(
    budget: int | None, preset: EnvPreset, agent_cfg: AgentConfig, train: bool, *, cap: bool = True
) -> int:
    """The run's budget: given or the preset's, and enough for the agent to learn anything.

    A given budget above ``MAX_BUDGET`` (:mod:`loss_rl.presets`) is refused unless ``cap`` is
    ``False``.
    """
    if budget is not None:
        check_budget(budget, "budget", cap=cap)
    run_budget = int(budget if budget is not None else preset.budget)
    need, what = (
        agent_cfg.min_budget,
        (
            "n_steps x n_envs proposals per policy update"
            if agent_cfg.algo != "dqn"
            else "learning_starts transitions before learning"
        ),
    )
    cfg = env_config(preset)
    if cfg.space == "grammar" and not agent_cfg.is_baseline:
        # An episode writes one expression in up to max_size steps: an update's n_steps x
        # n_envs env steps propose at least that many / max_size expressions.
        need = math.ceil(need / cfg.max_size)
        what = f"n_steps x n_envs env steps per policy update / max_size {cfg.max_size}"
    if train and run_budget < need:
        raise ConfigError(
            f"{run_budget} inner trainings are too few for {agent_cfg.algo}, which needs "
            f"{need} ({what}, from {agent_cfg.source or 'its preset'}): the run would end "
            f"before the agent learns anything. Use --budget {need} or more, or a preset with "
            "smaller n_steps / n_envs",
            field="budget",
        )
    return run_budget


def _new_run_dir(out: Path, env: str, algo: str, seed: int) -> Path:
    """Create a new run folder ``<env>_<algo>_s<seed>_<time>`` (``-1``, ``-2``, ... appended
    when two runs start in the same second), claimed atomically by :func:`create_run_dir`."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    # A suite task is named "<suite>:<task>"; a colon has no place in a folder name, and a
    # preset file's stem must not carry a path separator into it either.
    env_part = env.replace(":", "-").replace("/", "-").replace("\\", "-")
    return create_run_dir(out, default=f"{env_part}_{algo}_s{seed}_{stamp}")


def _card_of(policy: str | Path) -> dict[str, Any]:
    card = read_card(policy)
    if card is None or "agent" not in card:
        raise ConfigError(f"{policy} has no policy card (card.json)", field="agent")
    return card


def _policy_file(source: str | Path) -> Path:
    """``agent.zip`` of a run folder, or the given file."""
    p = Path(source)
    f = p / AGENT_FILE if existing(p) == "dir" else p
    if not f.is_file():
        raise ConfigError(
            f"no trained policy at {f}; give a run folder of dqn/ppo/maskable_ppo/"
            "risk_seeking_ppo with an agent.zip, or the path of such a file",
            field="init_agent",
        )
    return f
