"""Validation / test metrics for a whole population at once.

Classification: ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present in the
targets, as scikit-learn), ``macro_f1`` (mean F1 over the classes present in targets or
predictions, as scikit-learn's ``f1_score(average="macro")``) and ``nll`` (mean cross-entropy of
the logits). Regression: ``mse``, ``mae`` (in the dataset's original target units) and ``r2``.
The values are computed on the device of the model outputs (and stay there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "nll")
REGRESSION_METRICS = ("mse", "mae", "r2")

#: The values each metric can take, ``(low, high)``; ``±inf`` where it is unbounded. Confidence
#: intervals of a metric are clipped to its range (:func:`score_range`).
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "accuracy": (0.0, 1.0),
    "balanced_accuracy": (0.0, 1.0),
    "macro_f1": (0.0, 1.0),
    "nll": (0.0, math.inf),
    "mse": (0.0, math.inf),
    "mae": (0.0, math.inf),
    "r2": (-math.inf, 1.0),
}


def classification_metrics(logits: Tensor, y: Tensor, num_classes: int) -> dict[str, Tensor]:
    """Metrics of ``N`` models.

    Args:
        logits: ``[N, n, C]``.
        y: True classes ``[n]`` or ``[N, n]``.
        num_classes: ``C``.

    Returns:
        Metric name -> ``[N]`` float64 tensor.
    """
    n_models, n = logits.shape[0], logits.shape[1]
    c = num_classes
    y = y.expand(n_models, n)
    pred = logits.argmax(-1)
    model = torch.arange(n_models, device=logits.device).unsqueeze(1)
    cells = ((model * c + y) * c + pred).reshape(-1)
    conf = torch.bincount(cells, minlength=n_models * c * c).reshape(n_models, c, c).double()
    tp = conf.diagonal(dim1=1, dim2=2)
    support = conf.sum(2)  # true counts per class
    predicted = conf.sum(1)
    accuracy = tp.sum(1) / n
    present = support > 0
    recall = torch.where(present, tp / support.clamp(min=1), 0.0)
    balanced = recall.sum(1) / present.sum(1).clamp(min=1)
    denom = support + predicted
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), 0.0)
    macro_f1 = f1.sum(1) / (denom > 0).sum(1).clamp(min=1)
    nll = (
        F.cross_entropy(logits.reshape(-1, c).double(), y.reshape(-1), reduction="none")
        .reshape(n_models, n)
        .mean(1)
    )
    return {"accuracy": accuracy, "balanced_accuracy": balanced, "macro_f1": macro_f1, "nll": nll}


def regression_metrics(
    pred: Tensor, y: Tensor, target_std: float | Tensor = 1.0
) -> dict[str, Tensor]:
    """Metrics of ``N`` models (predictions and targets standardised; errors reported in the
    original units by multiplying with ``target_std``).

    Args:
        pred: ``[N, n]``.
        y: ``[n]`` or ``[N, n]``.
        target_std: Standard deviation used to standardise the targets (a float, or ``[N]``).

    Returns:
        Metric name -> ``[N]`` float64 tensor.
    """
    pred = pred.double()
    y = y.double().expand_as(pred)
    err = pred - y
    sse = (err * err).sum(1)
    sst = ((y - y.mean(1, keepdim=True)) ** 2).sum(1)
    n = pred.shape[1]
    if isinstance(target_std, Tensor):
        target_std = target_std.double()
    return {
        "mse": sse / n * target_std**2,
        "mae": err.abs().mean(1) * target_std,
        "r2": 1 - sse / sst.clamp(min=1e-12),
    }


def score_range(metric: str) -> tuple[float, float]:
    """The values the score named ``metric`` can take, ``(low, high)`` (``±inf``: unbounded).

    ``neg_X`` (a score that negates metric ``X``) has ``X``'s range negated: ``neg_mse`` is in
    ``(-inf, 0]``.

    Raises:
        KeyError: for an unknown metric.
    """
    if metric.startswith("neg_"):
        low, high = METRIC_RANGES[metric[4:]]
        return -high, -low
    return METRIC_RANGES[metric]


def score_of(metrics: dict[str, float], metric: str) -> float:
    """The search score (higher is better) named ``metric`` from a metrics dict."""
    if metric.startswith("neg_"):
        return -metrics[metric[4:]]
    return metrics[metric]
