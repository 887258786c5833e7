"""Task distributions for meta-learning: episodes of (fresh model, support batches, query set).

An *episode* is one sample of the meta-objective's expectation
:math:`E_\\tau[\\ell(\\theta_K(\\phi); D'_\\tau)]`: a freshly initialised task model, the support
minibatches its inner training sees, and the query set its trained parameters are scored on.

- :class:`TaskEpisodes` draws from one or more :class:`~loss_rl.tasks.TaskConfig` (datasets,
  corruptions) and data seeds: support = minibatches of the *train* split, query = the *val*
  split. The test split is never touched (it is kept for verification).
- :class:`FewShotDigitsEpisodes` is the seed's worked example: few-shot binary classification
  tasks sampled from pairs of digits classes (ML3's and MAML's few-shot setting).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from loss_rl.errors import ConfigError
from loss_rl.expr import TaskKind
from loss_rl.meta._unroll import InnerConfig, Params, model_params
from loss_rl.tasks import ModelConfig, TaskConfig, TaskData, build_model, load_task


@dataclass
class Episode:
    """One draw of the task distribution.

    Attributes:
        model: Architecture (used functionally; its own parameters are the initial ones).
        params: Initial parameters.
        batches: Support minibatches, one per inner step.
        query: ``(x, y)`` the trained parameters are scored on.
        kind: Task kind (selects the query loss).
        label: Where it came from (for logs).
    """

    model: nn.Module
    params: Params
    batches: list[tuple[Tensor, Tensor]]
    query: tuple[Tensor, Tensor]
    kind: TaskKind
    label: str = ""


class EpisodeSampler(Protocol):
    """Anything that draws :class:`Episode` objects."""

    @property
    def kind(self) -> TaskKind:
        """Task kind of every episode."""
        ...

    def sample(self, rng: np.random.Generator, inner: InnerConfig) -> Episode:
        """Draw one episode whose support has ``inner.steps`` minibatches."""
        ...


def _minibatches(
    split_x: Tensor, split_y: Tensor, steps: int, batch_size: int, rng: np.random.Generator
) -> list[tuple[Tensor, Tensor]]:
    # Epoch-wise shuffling without replacement, as a DataLoader with shuffle=True does.
    n = len(split_y)
    bs = min(batch_size, n)
    out: list[tuple[Tensor, Tensor]] = []
    perm = rng.permutation(n)
    at = 0
    while len(out) < steps:
        if at + bs > n:
            perm, at = rng.permutation(n), 0
        idx = torch.from_numpy(perm[at : at + bs])
        out.append((split_x[idx], split_y[idx]))
        at += bs
    return out


class TaskEpisodes:
    """Episodes from task configs × data seeds: support = train minibatches, query = val.

    Args:
        tasks: One task or several (different datasets / corruptions); all of one kind.
        data_seeds: Data seeds (split and corruption) drawn from. Keep to the verification's
            data seed when the result is verified on that seed's test split: another data seed
            splits the data differently and would train on its test rows.
        query_size: Subsample the val split to this many rows per episode (``None``: all).
        dtype: Floating dtype of the model and data (float64 for gradient checks).

    Raises:
        ConfigError: if the tasks mix classification and regression or no seed is given.
    """

    def __init__(
        self,
        tasks: TaskConfig | Sequence[TaskConfig],
        data_seeds: Sequence[int] = (0,),
        *,
        query_size: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.tasks = [tasks] if isinstance(tasks, TaskConfig) else list(tasks)
        if not self.tasks:
            raise ConfigError("needs at least one task", field="tasks")
        kinds = {t.kind for t in self.tasks}
        if len(kinds) > 1:
            raise ConfigError("tasks mix classification and regression", field="tasks")
        self.data_seeds = [int(s) for s in data_seeds]
        if not self.data_seeds:
            raise ConfigError("needs at least one data seed", field="data_seeds")
        self.query_size = query_size
        self.dtype = dtype
        self._kind = kinds.pop()

    @property
    def kind(self) -> TaskKind:
        """Task kind of every episode."""
        return self._kind

    def data(self, task: int, seed: int) -> TaskData:
        """The task's tensors for ``seed`` (cached by :func:`loss_rl.tasks.load_task`)."""
        return load_task(self.tasks[task], seed)

    def sample(self, rng: np.random.Generator, inner: InnerConfig) -> Episode:
        """Draw a task, a data seed, a model seed and support minibatches."""
        ti = int(rng.integers(len(self.tasks)))
        ds = self.data_seeds[int(rng.integers(len(self.data_seeds)))]
        cfg = self.tasks[ti]
        data = self.data(ti, ds)
        model_seed = int(rng.integers(2**31 - 1))
        model = build_model(cfg.model, data.num_features, data.num_outputs, seed=model_seed)
        model = model.to(self.dtype)
        x, y = data.train.x.to(self.dtype), data.train.y
        if self._kind is TaskKind.REGRESSION:
            y = y.to(self.dtype)
        batches = _minibatches(x, y, inner.steps, inner.batch_size, rng)
        qx, qy = data.val.x.to(self.dtype), data.val.y
        if self._kind is TaskKind.REGRESSION:
            qy = qy.to(self.dtype)
        if self.query_size is not None and self.query_size < len(qy):
            idx = torch.from_numpy(rng.choice(len(qy), self.query_size, replace=False))
            qx, qy = qx[idx], qy[idx]
        label = f"{cfg.dataset.name}/{cfg.corruption.kind} data_seed={ds} model_seed={model_seed}"
        return Episode(model, model_params(model), batches, (qx, qy), self._kind, label)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.data.astype(np.float64) / 16.0
    # Global standardisation is label-free (no class information leaks across tasks).
    x = (x - x.mean(0)) / np.where(x.std(0) > 1e-12, x.std(0), 1.0)
    return x.astype(np.float32), d.target.astype(np.int64)


class FewShotDigitsEpisodes:
    """Few-shot binary tasks from pairs of digits classes (the seed's worked example).

    Each episode picks two distinct classes from ``classes``, relabels them 0/1 in random order,
    draws ``shots`` support and ``query`` query images per class, and trains a fresh model
    full-batch on the support for ``inner.steps`` steps.

    Args:
        classes: Classes tasks are drawn from (meta-train and meta-test use disjoint ones).
        shots: Support images per class.
        query: Query images per class.
        model: Task model (default: a linear classifier).
    """

    def __init__(
        self,
        classes: Sequence[int] = tuple(range(10)),
        *,
        shots: int = 5,
        query: int = 20,
        model: ModelConfig | None = None,
    ) -> None:
        if len(set(classes)) < 2:
            raise ConfigError("needs at least two classes", field="classes")
        if shots < 1 or query < 1:
            raise ConfigError("shots and query must be positive", field="shots")
        self.classes = sorted({int(c) for c in classes})
        self.shots, self.query = shots, query
        self.model = model or ModelConfig(kind="linear")

    @property
    def kind(self) -> TaskKind:
        """Always classification."""
        return TaskKind.CLASSIFICATION

    def sample(self, rng: np.random.Generator, inner: InnerConfig) -> Episode:
        """Draw a class pair, support and query images, and a model seed."""
        x, y = _digits()
        pair = rng.choice(self.classes, size=2, replace=False)
        sx, sy, qx, qy = [], [], [], []
        for label, c in enumerate(pair):
            idx = rng.permutation(np.flatnonzero(y == c))[: self.shots + self.query]
            sx.append(x[idx[: self.shots]])
            qx.append(x[idx[self.shots :]])
            sy += [label] * self.shots
            qy += [label] * (len(idx) - self.shots)
        support = (torch.from_numpy(np.concatenate(sx)), torch.tensor(sy))
        query = (torch.from_numpy(np.concatenate(qx)), torch.tensor(qy))
        seed = int(rng.integers(2**31 - 1))
        model = build_model(self.model, x.shape[1], 2, seed=seed)
        label = f"digits {int(pair[0])} vs {int(pair[1])} model_seed={seed}"
        return Episode(model, model_params(model), [support] * inner.steps, query, self.kind, label)
