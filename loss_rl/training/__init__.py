"""The batched inner trainer: ``N`` models × ``N`` losses in one pass, fidelity levels, metrics.

:func:`train` is the entry point; :func:`train_reference` is the plain single-model PyTorch loop
whose results the batched trainer reproduces. Nothing here knows about RL.

Threads and processes: see :mod:`loss_rl.training._workers` — the population is split across
worker processes of one torch thread each (``$LOSS_RL_WORKERS``, default one per core).
Devices: ``train(..., device="cuda")`` (see :func:`resolve_device`) trains the whole population
in this process on the GPU instead; the default is the CPU.
"""

from loss_rl.training._checks import check_batch, descent_checks
from loss_rl.training._device import resolve_device
from loss_rl.training._functional import FunctionalModel, build_population
from loss_rl.training._metrics import (
    CLASSIFICATION_METRICS,
    METRIC_RANGES,
    REGRESSION_METRICS,
    classification_metrics,
    regression_metrics,
    score_of,
    score_range,
)
from loss_rl.training._optim import StackedAdam, StackedOptimizer, StackedSGD, make_optimizer
from loss_rl.training._ploss import LossEval, PopulationLoss
from loss_rl.training._population import PopulationModel, StackedModel
from loss_rl.training._program import structure
from loss_rl.training._reference import (
    batch_schedule,
    evaluate_module,
    init_seed,
    train_reference,
)
from loss_rl.training._state import ModelState, states_from_bytes, states_to_bytes
from loss_rl.training._trainer import (
    LOSS_BOUND,
    LOSS_GROWTH,
    OUTPUT_BOUND,
    SPLITS,
    TrainResult,
    split_candidates,
    start_workers,
    train,
)
from loss_rl.training._workers import WORKERS_ENV, default_workers, shutdown_workers

__all__ = [
    "CLASSIFICATION_METRICS",
    "LOSS_BOUND",
    "LOSS_GROWTH",
    "METRIC_RANGES",
    "OUTPUT_BOUND",
    "REGRESSION_METRICS",
    "SPLITS",
    "WORKERS_ENV",
    "FunctionalModel",
    "LossEval",
    "ModelState",
    "PopulationLoss",
    "PopulationModel",
    "StackedAdam",
    "StackedModel",
    "StackedOptimizer",
    "StackedSGD",
    "TrainResult",
    "batch_schedule",
    "build_population",
    "check_batch",
    "classification_metrics",
    "default_workers",
    "descent_checks",
    "evaluate_module",
    "init_seed",
    "make_optimizer",
    "regression_metrics",
    "resolve_device",
    "score_of",
    "score_range",
    "shutdown_workers",
    "split_candidates",
    "start_workers",
    "states_from_bytes",
    "states_to_bytes",
    "structure",
    "train",
    "train_reference",
]
