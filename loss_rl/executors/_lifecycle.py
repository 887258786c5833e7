"""An executor's life in a run: made from its configuration, started early, closed at the end."""

from __future__ import annotations

import torch

from loss_rl.evaluation import Executor, InProcessExecutor
from loss_rl.executors._config import ExecutorConfig, require_ray
from loss_rl.executors._ray import RayExecutor


def make_executor(config: ExecutorConfig | None = None) -> Executor:
    """The executor a configuration names (nothing is started or connected yet).

    Raises:
        ConfigError: for the Ray executor when Ray is not installed.
    """
    config = config or ExecutorConfig()
    config.validate()
    if config.name == "inprocess":
        return InProcessExecutor(device=config.device)
    require_ray()
    return RayExecutor(
        config.address,
        workers=config.workers,
        connect_timeout_s=config.connect_timeout_s,
        max_retries=config.max_retries,
    )


def prepare_compute(executor: Executor) -> None:
    """One intra-op thread in the search process, and the executor started early.

    The search process runs the agent's small networks and the evaluator's probe checks: tiny
    ops that two spinning threads only slow down, and that steal a core from the trainer's worker
    processes (measured here: ``check()`` took 1.3 s with 2 threads beside a busy core, 22 ms
    with 1). The trainer splits its population over its own one-thread worker processes (the
    in-process executor starts them now, so the first evaluations are not slowed down); the Ray
    executor connects now, so a cluster that does not answer stops the run before it trains.
    """
    torch.set_num_threads(1)
    start = getattr(executor, "start", None)
    if start is not None:
        start()


def close_executor(executor: Executor) -> None:
    """Close ``executor`` if it has a ``close()`` (the Ray executor disconnects)."""
    close = getattr(executor, "close", None)
    if close is not None:
        close()
