"""Several tasks behind one loss-design MDP: each episode runs on a task drawn from a suite.

A policy pretrained across tasks (:mod:`loss_rl.pretrain`) sees a different task from one episode
to the next. Each task keeps its own evaluator (its data, seeds and cache) and its own
:class:`~loss_rl.envs.RunStats` (its best so far), and the observation carries its descriptor
(:mod:`loss_rl.descriptors`), so the policy can tell the tasks apart.

:class:`TaskSchedule` decides which task an episode runs on: episode ``k`` of every env runs on
the same task, so with fixed-length episodes (``min_steps == max_steps``) all envs of a
:class:`~loss_rl.envs.BatchedLossVecEnv` propose for one task at a time and the trainer sees one
batch per step. Tasks come in shuffled rounds, each task once per round, so none is starved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from loss_rl.envs._env import LossDesignEnv
from loss_rl.envs._run_stats import RunStats
from loss_rl.evaluation import EvaluatorLike


@dataclass
class TaskBinding:
    """One task of a multi-task env.

    Attributes:
        name: Task name (e.g. ``digits_sym40``).
        evaluator: Scores candidates on this task.
        features: The task descriptor shown to the policy.
        run: Run-level memory of this task (best so far), shared by all envs.
    """

    name: str
    evaluator: EvaluatorLike
    features: tuple[float, ...]
    run: RunStats = field(default_factory=RunStats)


class TaskSchedule:
    """Which task episode ``k`` runs on (the same for every env), in seeded shuffled rounds.

    Args:
        tasks: The tasks (at least one).
        seed: Seed of the shuffles.
    """

    def __init__(self, tasks: Sequence[TaskBinding], seed: int = 0) -> None:
        if not tasks:
            raise ValueError("a task schedule needs at least one task")
        self.tasks = list(tasks)
        self._rng = np.random.default_rng(seed)
        self._order: list[int] = []

    def task_for(self, episode: int) -> TaskBinding:
        """The task of episode ``episode`` (0-based)."""
        while len(self._order) <= episode:
            self._order.extend(int(i) for i in self._rng.permutation(len(self.tasks)))
        return self.tasks[self._order[episode]]


class TaskSwitcher(gym.Wrapper):
    """Binds its :class:`LossDesignEnv` to the scheduled task at every reset.

    Args:
        env: The env (its config fixes the layout shared by all tasks).
        schedule: The shared schedule.
    """

    def __init__(self, env: LossDesignEnv, schedule: TaskSchedule) -> None:
        super().__init__(env)
        self.schedule = schedule
        self.episodes = 0
        self.current: TaskBinding | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Switch to the next scheduled task, then reset on it."""
        task = self.schedule.task_for(self.episodes)
        self.episodes += 1
        self.current = task
        unit: LossDesignEnv = self.env.unwrapped  # type: ignore[assignment]
        unit.evaluator = task.evaluator
        unit.attach_run(task.run)
        obs, info = self.env.reset(
            seed=seed, options={**(options or {}), "task_features": task.features}
        )
        info["task"] = task.name
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict[str, Any]]:
        """Step the env; ``info["task"]`` names the task."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["task"] = self.current.name if self.current is not None else None
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Masks of the wrapped env (MaskablePPO asks the outermost env)."""
        return self.env.unwrapped.action_masks()  # type: ignore[attr-defined]
