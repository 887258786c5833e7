"""The plain single-model training loop that defines what the batched trainer must reproduce.

One ``nn.Module`` from :func:`loss_rl.tasks.build_model`, one ``torch.optim`` optimiser, the
loss compiled by :func:`loss_rl.expr.compile_loss` and autograd — nothing clever. The batched
trainer's models match this loop's (same seed) within float tolerance; the throughput benchmark
uses it as the baseline.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from loss_rl.expr import Expr, compile_loss
from loss_rl.tasks import TaskConfig, TaskData, build_model, derive_seed, load_task
from loss_rl.training._metrics import classification_metrics, regression_metrics, score_of
from loss_rl.training._optim import make_torch_optimizer


def batch_schedule(n_train: int, batch_size: int, steps: int, seed: int) -> Tensor:
    """Minibatch indices ``[steps, b]`` for ``seed`` (``b = min(batch_size, n_train)``).

    Epochs are random permutations of the training set cut into full batches (the remainder of
    each epoch is dropped so every batch has ``b`` rows).
    """
    b = min(batch_size, n_train)
    per_epoch = n_train // b
    generator = torch.Generator().manual_seed(derive_seed(seed, "batches"))
    epochs = -(-steps // per_epoch) if steps else 0
    chunks = [torch.randperm(n_train, generator=generator)[: per_epoch * b] for _ in range(epochs)]
    if not chunks:
        return torch.empty((0, b), dtype=torch.long)
    return torch.cat(chunks).view(-1, b)[:steps]


def init_seed(seed: int) -> int:
    """Seed of the model initialisation for training seed ``seed``."""
    return derive_seed(seed, "init")


def evaluate_module(model: nn.Module, data: TaskData, split: str) -> dict[str, float]:
    """Metrics of one plain model on one split of ``data``."""
    part = data.split(split)
    with torch.no_grad():
        out = model(part.x).unsqueeze(0)
    if data.num_classes is not None:
        m = classification_metrics(out, part.y, data.num_classes)
    else:
        m = regression_metrics(out, part.y, data.target_std)
    return {k: float(v[0]) for k, v in m.items()}


def train_reference(
    loss: Expr,
    task: TaskConfig,
    steps: int,
    seed: int,
    *,
    splits: Sequence[str] = ("val",),
    data_seed: int | None = None,
) -> tuple[nn.Module, dict[str, dict[str, float]]]:
    """Train one model with a plain PyTorch loop.

    Args:
        loss: Per-sample loss expression (mean over the batch).
        task: The task.
        steps: Optimiser steps.
        seed: Seed of initialisation and minibatch order (and of the data unless ``data_seed``).
        splits: Splits to report metrics on.
        data_seed: Seed of the data split / corruption; defaults to ``seed``.

    Returns:
        The trained module and ``{split: {metric: value}}``.
    """
    data = load_task(task, seed if data_seed is None else data_seed)
    model = build_model(task.model, data.num_features, data.num_outputs, seed=init_seed(seed))
    fn = compile_loss(loss, task.kind)
    opt = make_torch_optimizer(list(model.parameters()), task.training)
    x, y = data.train.x, data.train.y
    cfg = task.training
    # Checkpoint selection as the batched trainer does it: a validation check every
    # ``eval_every`` steps and after the last one; strict improvement keeps the earlier on a tie.
    best_score, best_state, waits = -math.inf, None, 0
    for t, idx in enumerate(batch_schedule(len(data.train), cfg.batch_size, steps, seed)):
        value = fn(model(x[idx]), y[idx]).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
        if cfg.select == "best" and ((t + 1) % cfg.eval_every == 0 or t + 1 == steps):
            score = score_of(evaluate_module(model, data, "val"), task.score_metric)
            if score > best_score:
                best_score, waits = score, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waits += 1
                if cfg.patience is not None and waits >= cfg.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, {s: evaluate_module(model, data, s) for s in splits}
