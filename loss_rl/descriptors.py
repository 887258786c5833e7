"""Task descriptors: what a loss-design policy may know about the task it is searching.

A policy pretrained across tasks (:mod:`loss_rl.pretrain`) has to tell tasks apart to act well on
each, e.g. drop CE for a bounded loss when the training labels are noisy and keep it when they are
clean. It may only see what a user could measure: dataset meta-features (classes, sizes,
features, class balance) and *landmarks* — the validation scores of a few reference losses trained
at the start of the search, relative to CE (landmarking, Pfahringer et al., 2000, "Meta-learning
by landmarking various learning algorithms"). Never the true noise rate.

The descriptor has :data:`N_FEATURES` values within ±10::

    [classes / 10, log10 train size, log10 features, is classification,
     smallest / largest class share in train, train / (train + val),
     LANDMARK_SCALE · (score(landmark 1) - score(CE)),
     LANDMARK_SCALE · (score(landmark 2) - score(CE))]

with landmarks GCE(q=0.7) (bounded: pays off under label noise) and label smoothing 0.1 (pays off
on clean data) for classification, L1 and Huber(δ=1) for regression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from loss_rl.evaluation import EvaluatorLike
from loss_rl.expr import Expr, TaskKind, known_loss
from loss_rl.tasks import TaskConfig

N_FEATURES = 8
"""Length of the task descriptor."""

LANDMARK_SLOTS = (6, 7)
"""Positions of the landmark values in the descriptor."""

LANDMARK_SCALE = 5.0
"""Landmark gaps are a few points of accuracy; scaled so the policy network sees them."""

LANDMARKS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.CLASSIFICATION: ("gce", "label_smoothing"),
    TaskKind.REGRESSION: ("l1", "huber"),
}
"""Known losses (:data:`loss_rl.KNOWN_LOSSES` names) whose scores describe a task."""


def landmark_losses(kind: TaskKind) -> list[Expr]:
    """The landmark losses of a task kind, at their default parameters."""
    return [known_loss(name) for name in LANDMARKS[kind]]


def meta_features(task: TaskConfig, data_seed: int = 0) -> list[float]:
    """The descriptor with the landmark slots at 0 (no training needed)."""
    from loss_rl.tasks import load_task

    data = load_task(task, data_seed)
    n_train, n_val = len(data.train), len(data.val)
    balance = 1.0
    if data.num_classes:
        counts = np.bincount(data.train.y.numpy(), minlength=data.num_classes)
        balance = float(counts.min() / max(counts.max(), 1))
    return [
        (data.num_classes or 0) / 10.0,
        math.log10(max(n_train, 1)),
        math.log10(max(data.num_features, 1)),
        float(data.kind is TaskKind.CLASSIFICATION),
        balance,
        n_train / max(n_train + n_val, 1),
        0.0,
        0.0,
    ]


def landmark_values(evaluator: EvaluatorLike, kind: TaskKind) -> list[float]:
    """Scaled gaps ``score(landmark) - score(CE)`` measured with ``evaluator``.

    The landmarks are evaluated in one batch and recorded like any candidate (they count as inner
    trainings of the run, and a search that later proposes them finds them cached). A landmark
    that diverges reads as the lowest value.
    """
    losses = landmark_losses(kind)
    ref = float(evaluator.reference_score)
    results = evaluator.evaluate(losses, [{"role": "landmark"} for _ in losses])
    out = []
    for r in results:
        if r.ok and r.score is not None and math.isfinite(r.score):
            out.append(float(np.clip(LANDMARK_SCALE * (float(r.score) - ref), -10.0, 10.0)))
        else:
            out.append(-10.0)
    return out


def task_descriptor(
    task: TaskConfig, data_seed: int = 0, evaluator: EvaluatorLike | None = None
) -> list[float]:
    """The full descriptor; landmarks are measured only when an ``evaluator`` is given.

    Args:
        task: The task.
        data_seed: Seed of its split and corruption.
        evaluator: Trains the landmarks (``None``: landmark slots stay 0).
    """
    feats = meta_features(task, data_seed)
    if evaluator is None:
        return feats
    return with_landmarks(feats, landmark_values(evaluator, task.kind))


def with_landmarks(features: Sequence[float], values: Sequence[float]) -> list[float]:
    """``features`` with its landmark slots replaced by ``values``."""
    out = list(features)
    for slot, v in zip(LANDMARK_SLOTS, values, strict=True):
        out[slot] = float(v)
    return out


__all__ = [
    "LANDMARKS",
    "LANDMARK_SCALE",
    "LANDMARK_SLOTS",
    "N_FEATURES",
    "landmark_losses",
    "landmark_values",
    "meta_features",
    "task_descriptor",
    "with_landmarks",
]
