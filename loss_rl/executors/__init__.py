"""Executors: where the evaluator's inner trainings run, behind one interface.

:class:`~loss_rl.evaluation.Executor` is the interface (``run(candidates, task, steps, seeds,
data_seed) -> results``); two back ends implement it:

- :class:`InProcessExecutor` (default): this machine, through the trainer's own worker processes
  (:func:`loss_rl.training.start_workers`).
- :class:`RayExecutor`: batches of candidates as Ray tasks on a local instance or a cluster
  (``pip install 'loss-rl[ray]'``; :mod:`ray` is imported only when it is used).

A run chooses with ``loss-rl search --executor ray [--ray-address ADDRESS]`` or an env preset's
``executor:`` section (:class:`ExecutorConfig`); the choice is kept in the run's ``config.yaml``,
so ``loss-rl resume`` uses it again. :func:`make_executor` builds the executor a configuration
names, :func:`prepare_compute` starts it before a run trains anything and
:func:`close_executor` closes it at the end.
"""

from loss_rl.evaluation import Executor, InProcessExecutor
from loss_rl.executors._config import EXECUTORS, ExecutorConfig, require_ray
from loss_rl.executors._lifecycle import close_executor, make_executor, prepare_compute
from loss_rl.executors._ray import RayExecutor, check_reachable

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorConfig",
    "InProcessExecutor",
    "RayExecutor",
    "check_reachable",
    "close_executor",
    "make_executor",
    "prepare_compute",
    "require_ray",
]
