"""The worked example: a loss meta-learned on few-shot binary digits tasks vs CE after K steps.

Tasks are pairs of digits classes (relabelled 0/1) with a handful of support images each; a fresh
linear classifier takes ``K`` full-batch SGD steps on the support and is scored on the query
images. The loss is meta-learned on tasks from some classes (``train_classes``) and compared
with CE on tasks from the others (``test_classes``), on identical episodes (same pair, images and
initialisation), as in ML3's few-shot experiments (Bechtle et al. 2021; MAML's setting, Finn et
al. 2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from loss_rl.meta._episodes import FewShotDigitsEpisodes
from loss_rl.meta._outer import MetaHistory, MetaProgress, OuterConfig, meta_optimize
from loss_rl.meta._unroll import InnerConfig, LossFn, unrolled_train
from loss_rl.neural_loss import NeuralLoss


@dataclass
class FewShotResult:
    """Outcome of :func:`few_shot_example`.

    Attributes:
        loss: The meta-learned loss.
        history: Outer optimisation record (``eval_before``/``eval_after`` are the meta-loss on
            fixed meta-training episodes).
        summary: Query accuracy and CE of CE vs the learned loss after ``K`` steps on held-out
            classes (paired over identical episodes), and the meta-loss before/after.
    """

    loss: NeuralLoss
    history: MetaHistory
    summary: dict[str, Any] = field(default_factory=dict)


def _after_k_steps(
    sampler: FewShotDigitsEpisodes, loss_fn: LossFn, inner: InnerConfig, episodes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Query accuracy and CE per episode after ``inner.steps`` steps with ``loss_fn``."""
    rng = np.random.default_rng(seed)
    cfg = replace(inner, unroll=1)  # values only: keep the smallest graph
    acc, ce = [], []
    for _ in range(episodes):
        ep = sampler.sample(rng, cfg)
        params = unrolled_train(ep.model, ep.params, loss_fn, ep.batches, cfg)
        with torch.no_grad():
            out = functional_call(
                ep.model, {k: v.detach() for k, v in params.items()}, (ep.query[0],)
            )
            acc.append(float((out.argmax(-1) == ep.query[1]).float().mean()))
            ce.append(float(F.cross_entropy(out, ep.query[1])))
    return np.array(acc), np.array(ce)


def _ce(input: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(input, target, reduction="none")


def few_shot_example(
    *,
    meta_steps: int = 100,
    inner_steps: int = 5,
    inner_lr: float = 0.05,
    shots: int = 5,
    query: int = 20,
    tasks_per_step: int = 4,
    meta_lr: float = 1e-2,
    train_classes: Sequence[int] = (0, 1, 2, 3, 4, 5),
    test_classes: Sequence[int] = (6, 7, 8, 9),
    eval_episodes: int = 40,
    hidden: Sequence[int] = (16, 16),
    seed: int = 0,
    progress: Callable[[MetaProgress], None] | None = None,
) -> FewShotResult:
    """Meta-learn a neural loss on few-shot binary digits tasks and compare it with CE.

    Args:
        meta_steps: Outer steps.
        inner_steps: ``K``, full-batch SGD steps on the support set.
        inner_lr: Inner SGD learning rate.
        shots: Support images per class.
        query: Query images per class.
        tasks_per_step: Episodes per outer step.
        meta_lr: Outer Adam learning rate.
        train_classes: Classes meta-training tasks are drawn from.
        test_classes: Held-out classes the comparison with CE uses.
        eval_episodes: Episodes for the before/after meta-loss and for the comparison.
        hidden: Hidden widths of the loss network.
        seed: Seed of everything.
        progress: Progress callback.

    Returns:
        A :class:`FewShotResult`; ``summary`` keys: ``meta_loss_before``, ``meta_loss_after``
        (fixed meta-training episodes), ``ce_query_acc``, ``learned_query_acc``,
        ``ce_query_ce``, ``learned_query_ce`` (held-out classes), ``acc_gain`` (paired mean
        difference, learned − CE) and ``acc_gain_ci95``.
    """
    inner = InnerConfig(steps=inner_steps, optimizer="sgd", lr=inner_lr)
    train = FewShotDigitsEpisodes(train_classes, shots=shots, query=query)
    test = FewShotDigitsEpisodes(test_classes, shots=shots, query=query)
    loss = NeuralLoss(hidden, base="ce", seed=seed)
    outer = OuterConfig(
        meta_steps=meta_steps,
        tasks_per_step=tasks_per_step,
        lr=meta_lr,
        clip_norm=1.0,
        seed=seed,
        eval_episodes=eval_episodes,
    )
    history = meta_optimize(loss, train, inner, outer, progress)
    eval_seed = seed + 7
    ce_acc, ce_ce = _after_k_steps(test, _ce, inner, eval_episodes, eval_seed)
    l_acc, l_ce = _after_k_steps(test, loss.per_sample, inner, eval_episodes, eval_seed)
    d = l_acc - ce_acc
    half = 1.96 * float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    summary = {
        "inner_steps": inner_steps,
        "shots": shots,
        "meta_steps": meta_steps,
        "meta_loss_before": history.eval_before,
        "meta_loss_after": history.eval_after,
        "ce_query_acc": float(ce_acc.mean()),
        "learned_query_acc": float(l_acc.mean()),
        "ce_query_ce": float(ce_ce.mean()),
        "learned_query_ce": float(l_ce.mean()),
        "acc_gain": float(d.mean()),
        "acc_gain_ci95": [float(d.mean()) - half, float(d.mean()) + half],
        "episodes": eval_episodes,
    }
    return FewShotResult(loss, history, summary)
