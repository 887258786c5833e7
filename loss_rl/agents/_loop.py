"""The agent side of a run: open its agent, train it until the budget is spent, or roll it out.

One loop for a search and a pretraining: the run folder's checkpoint wins (a resume), else the
policy the run starts from, else a fresh agent; training runs in chunks and checkpoints
atomically, so a killed run continues from its last save.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from loss_rl.agents._sb3 import (
    AGENT_FILE,
    AgentConfig,
    load_agent,
    load_replay_buffer,
    make_agent,
    save_agent,
)
from loss_rl.agents.callbacks import (
    BudgetCallback,
    CheckpointCallback,
    Progress,
    ProgressCallback,
    SearchState,
)
from loss_rl.errors import ConfigError, LossRLError, RunError


def open_agent(
    config: AgentConfig,
    vec: VecEnv,
    folder: Path,
    *,
    seed: int,
    init: Path | None = None,
) -> tuple[BaseAlgorithm, bool]:
    """The agent of the run in ``folder``, attached to ``vec``.

    Args:
        config: The run's agent config.
        vec: The run's vectorized env.
        folder: The run folder (its ``agent.zip`` is a checkpoint of an earlier session).
        seed: Seed of a fresh agent, and of a loaded starting policy's sampling.
        init: A trained policy to start from when the folder has no checkpoint yet.

    Returns:
        The agent and whether it is fresh (its step counter starts at 0).

    Raises:
        ConfigError: if ``init`` does not fit ``vec``'s spaces.
        RunError: if the checkpoint does not fit ``vec``, or a file is not a loadable agent (see
            :func:`loss_rl.agents.load_agent`: agent files are read as data, never unpickled).
    """
    checkpoint = folder / AGENT_FILE
    if checkpoint.is_file():
        try:
            model = load_agent(config, checkpoint, vec)
        except LossRLError:
            raise
        except (ValueError, KeyError, RuntimeError) as err:
            raise RunError(
                f"the checkpoint {checkpoint} does not fit this run's env: {err}"
            ) from err
        load_replay_buffer(model, folder)
        return model, False
    if init is not None:
        model = _load_compatible(config, init, vec)
        # A loaded policy keeps its saved seed: reseed, so search seeds give other rollouts.
        model.set_random_seed(seed)
        return model, True
    return make_agent(config, vec, seed=seed), True


def _load_compatible(config: AgentConfig, path: Path, vec: VecEnv) -> BaseAlgorithm:
    """Load a saved policy onto ``vec``; a layout mismatch is a clear error.

    The spaces are always ``vec``'s (see :func:`load_agent`), so a network of another layout
    shows as a ``RuntimeError`` (size mismatch) from ``load_state_dict``.
    """
    try:
        return load_agent(config, path, vec)
    except LossRLError:
        raise  # already names the file and field (ConfigError is also a ValueError)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ConfigError(
            f"the policy in {path} does not fit this env ({err}); a policy transfers only between "
            "presets with the same search space (space, terms, grids, max_size) and the same "
            f"algorithm ({config.algo})",
            field="init_agent",
        ) from err


def learn_until_done(
    model: Any,
    state: SearchState,
    budget_callback: BudgetCallback,
    save: Callable[[], None],
    *,
    chunk_steps: int,
    fresh: bool,
    progress: Callable[[Progress], None] | None = None,
    checkpoint_every: int = 20,
    extra_callbacks: Sequence[BaseCallback] = (),
) -> None:
    """Train ``model`` until ``state`` says the budget is spent, checkpointing with ``save``.

    ``learn()`` runs in chunks of ``chunk_steps`` env steps: schedules (DQN's epsilon) span a
    chunk, and ``budget_callback``, counting inner trainings, ends it. ``save`` also runs on the
    way out (Ctrl-C included), so a resumed run continues from there. ``extra_callbacks`` run
    first (e.g. :class:`~loss_rl.agents.callbacks.DeferredRewardCallback`, which must fill the
    rollout's rewards before anything reads them).
    """
    callbacks: list[BaseCallback] = [
        *extra_callbacks,
        budget_callback,
        CheckpointCallback(save, checkpoint_every),
    ]
    if progress is not None:
        callbacks.append(ProgressCallback(state, progress))
    try:
        while not state.done:
            model.learn(total_timesteps=chunk_steps, callback=callbacks, reset_num_timesteps=fresh)
            fresh = False
    finally:
        save()


def train_agent(
    model: BaseAlgorithm,
    state: SearchState,
    folder: Path,
    *,
    fresh: bool,
    budget_callback: BudgetCallback | None = None,
    progress: Callable[[Progress], None] | None = None,
    extra_callbacks: Sequence[BaseCallback] = (),
) -> None:
    """Train the run's agent until its budget is spent, checkpointing into ``folder``."""
    learn_until_done(
        model,
        state,
        budget_callback if budget_callback is not None else BudgetCallback(state),
        lambda: save_agent(model, folder),
        chunk_steps=4 * state.budget,
        fresh=fresh,
        progress=progress,
        extra_callbacks=extra_callbacks,
    )


def roll_out(
    model: BaseAlgorithm,
    vec: VecEnv,
    state: SearchState,
    *,
    masks: bool,
    progress: Callable[[Progress], None] | None = None,
) -> None:
    """Roll a trained policy out without learning until the budget is spent.

    The policy samples its actions (``deterministic=False``): a greedy policy would replay one
    episode, every proposal a cache hit, and never spend the budget.
    """
    obs = vec.reset()
    while not state.done:
        kwargs = {"action_masks": vec.get_action_masks()} if masks else {}  # type: ignore[attr-defined]
        actions, _ = model.predict(obs, deterministic=False, **kwargs)
        obs, _, _, infos = vec.step(actions)
        state.env_steps += len(infos)
        for info in infos:
            res = info.get("result")
            if res is not None:
                state.observe(res.score, res.expression)
        if progress is not None:
            progress(state.progress())
