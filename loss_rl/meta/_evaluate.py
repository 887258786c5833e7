"""Paired comparison of loss *modules* (neural losses, which the expression trainer cannot run).

:func:`loss_rl.verify.verify` trains loss *expressions* with the batched trainer. A neural loss is
an arbitrary ``torch.nn.Module``, so it is verified here with a plain PyTorch loop following the
task's :class:`~loss_rl.tasks.TrainingConfig`; every loss of one comparison, CE included, goes
through this same loop on the same fresh paired seeds, so the differences are fair.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loss_rl.expr import TaskKind
from loss_rl.stats import fresh_seeds, paired_difference, summarize_seeds
from loss_rl.tasks import TaskConfig, TaskData, build_model, derive_seed, load_task

LossFn = Callable[[Tensor, Tensor], Tensor]

COLUMNS = ["loss", "mean", "ci_low", "ci_high", "std", "n", "diverged", "diff_vs_ce", "p_vs_ce"]


def score(output: Tensor, target: Tensor, metric: str, kind: TaskKind) -> float:
    """Task metric, higher is better (the ``neg_*`` metrics are negated)."""
    if kind is TaskKind.CLASSIFICATION:
        if metric == "neg_nll":
            return -float(F.cross_entropy(output, target))
        pred = output.argmax(-1).numpy()
        y = target.numpy()
        if metric == "accuracy":
            return float((pred == y).mean())
        from sklearn.metrics import balanced_accuracy_score, f1_score

        if metric == "balanced_accuracy":
            return float(balanced_accuracy_score(y, pred))
        return float(f1_score(y, pred, average="macro"))
    err = output - target
    if metric == "neg_mse":
        return -float((err**2).mean())
    if metric == "neg_mae":
        return -float(err.abs().mean())
    ss_res = float((err**2).sum())
    ss_tot = float(((target - target.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0


def _optimizer(task: TaskConfig, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    t = task.training
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay
        )
    return torch.optim.Adam(
        params, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, weight_decay=t.weight_decay
    )


def train_plain(
    loss_fn: LossFn, task: TaskConfig, data: TaskData, seed: int, steps: int
) -> nn.Module | None:
    """Train the task's model with ``loss_fn`` (per-sample → mean) for ``steps`` steps.

    Returns:
        The trained model, or ``None`` if the loss or parameters became non-finite.
    """
    model = build_model(
        task.model, data.num_features, data.num_outputs, seed=derive_seed(seed, "init")
    )
    opt = _optimizer(task, list(model.parameters()))
    # The batch schedule of the library's reference loop (loss_rl.training): epochs are
    # permutations from the seed's "batches" stream cut into full batches.
    generator = torch.Generator().manual_seed(derive_seed(seed, "batches"))
    x, y = data.train.x, data.train.y
    n = len(y)
    bs = min(task.training.batch_size, n)
    perm, at = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if at + bs > n:
            perm, at = torch.randperm(n, generator=generator), 0
        idx = perm[at : at + bs]
        at += bs
        loss = loss_fn(model(x[idx]), y[idx]).mean()
        if not torch.isfinite(loss):
            return None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        return None
    return model


def compare_modules(
    losses: Mapping[str, LossFn],
    task: TaskConfig,
    *,
    seeds: int | Sequence[int] = 5,
    steps: int | None = None,
    data_seed: int = 0,
    split: str = "test",
    reference: str = "ce",
) -> pd.DataFrame:
    """Train every loss on the same fresh paired seeds and score it on ``split``.

    Args:
        losses: Name → per-sample loss callable (include ``reference``, e.g. CE, to compare).
        task: The task.
        seeds: Number of fresh seeds (disjoint from the search's) or explicit seeds.
        steps: Training steps (default ``task.training.full_steps``).
        data_seed: Data split seed (the search's, so the test split stays unseen).
        split: Split scored (``test`` for reports).
        reference: Name of the loss the paired differences are taken against.

    Returns:
        One row per loss (see :data:`COLUMNS`), best mean first; ``attrs`` hold the per-seed
        scores (``scores``), seeds, steps and metric.
    """
    seed_list = fresh_seeds(seeds) if isinstance(seeds, int) else [int(s) for s in seeds]
    n_steps = int(steps if steps is not None else task.training.full_steps)
    data = load_task(task, data_seed)
    part = data.split(split)
    table = np.full((len(losses), len(seed_list)), np.nan)
    for i, fn in enumerate(losses.values()):
        for j, s in enumerate(seed_list):
            model = train_plain(fn, task, data, s, n_steps)
            if model is not None:
                with torch.no_grad():
                    table[i, j] = score(model(part.x), part.y, task.score_metric, task.kind)
    names = list(losses)
    rows = []
    for i, name in enumerate(names):
        s = table[i]
        d, p = (math.nan, math.nan)
        if reference in names:
            d, p = paired_difference(s, table[names.index(reference)])
        rows.append([name, *summarize_seeds(s), d, p])
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs.update(
        steps=n_steps,
        seeds=seed_list,
        metric=task.score_metric,
        split=split,
        scores={n: table[i].tolist() for i, n in enumerate(names)},
    )
    return df.sort_values("mean", ascending=False, na_position="last").reset_index(drop=True)
