"""Worker processes that split a population across CPU cores.

**Choice: one process per core, one torch thread per process** (not one process with several
intra-op threads). A training step is a few hundred small tensor ops (the candidates' loss trees
on ``[G, 128, 10]`` slices, ``[N, 128, 64]`` batched matmuls, fused Adam): intra-op threads cannot
share out the Python and dispatch overhead that dominates such ops, and when another job holds a
core, threads that wait on each other collapse. Measured on the 2-core machine of the project,
34 losses × 200 steps on digits (evaluations/s):

=====================================  ==============  ==================================
setup                                   quiet machine   another job holding ~1 core
=====================================  ==============  ==================================
1 process × 1 thread                    ~21             17-18
1 process × 2 threads                   ~24             1.0-6 (collapse)
2 processes × 1 thread (default)        38-42           16-18
=====================================  ==============  ==================================

Candidates are split between workers by tree structure (each structure group is evaluated in
one pass, see :mod:`loss_rl.training._ploss`) and balanced by model count.

The pool is created on first use (``spawn`` start method by default — safe with any parent state
and any threading library; ``LOSS_RL_MP_START`` may choose ``fork`` or ``forkserver``), kept for
the life of the process and shut down at exit. A script that calls :func:`loss_rl.training.train`
with workers must guard its entry point with ``if __name__ == "__main__":`` (as for any
``multiprocessing`` code on spawn platforms).

This module is the pool only: what runs in it (the trainer's ``run_population``) is handed to
:func:`run_chunks` by :mod:`loss_rl.training._trainer`, which also warms the pool up
(:func:`~loss_rl.training.start_workers`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Environment variable with the default number of worker processes (0 = train in-process).
WORKERS_ENV = "LOSS_RL_WORKERS"
#: Environment variable with the multiprocessing start method of the pool.
START_ENV = "LOSS_RL_MP_START"

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: Default cap on worker processes (each holds its own copy of torch, ~300 MB).
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """``$LOSS_RL_WORKERS`` if set, else one worker per available core (at most 8)."""
    env = os.environ.get(WORKERS_ENV)
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            logger.warning("ignoring %s=%r (not an integer)", WORKERS_ENV, env)
    return min(available_cores(), MAX_DEFAULT_WORKERS)


def _init_worker(parent: int | None = None) -> None:
    import torch

    # One thread per worker: no oversubscription, no spin-waiting on a busy core.
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set (fork start method)
        torch.set_num_interop_threads(1)
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int, every_s: float = 2.0) -> None:
    """Exit when the search process is gone.

    A search killed with SIGKILL cannot shut its pool down, and the idle workers (~300 MB each)
    would otherwise wait on their queue forever (measured here: orphans from killed runs alive
    two hours later).
    """
    while True:
        time.sleep(every_s)
        if os.getppid() != parent:
            os._exit(0)


def get_pool(size: int) -> ProcessPoolExecutor:
    """The shared pool with ``size`` workers (recreated if the size changes)."""
    global _pool, _pool_size
    with _lock:
        if _pool is not None and _pool_size != size:
            _pool.shutdown(wait=True)
            _pool = None
        if _pool is None:
            method = os.environ.get(START_ENV, "spawn")
            ctx = multiprocessing.get_context(method)
            _pool = ProcessPoolExecutor(
                max_workers=size,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
            _pool_size = size
        return _pool


def running_workers() -> int:
    """Worker processes of the shared pool now (0 before the first call that starts them)."""
    with _lock:
        return _pool_size if _pool is not None else 0


def shutdown_workers() -> None:
    """Stop the worker processes (they restart on the next call that needs them)."""
    global _pool, _pool_size
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None
        _pool_size = 0


atexit.register(shutdown_workers)


def run_chunks(fn: Callable[..., _T], payloads: Sequence[tuple[Any, ...]]) -> list[_T]:
    """Run ``fn(*payload)`` for each payload, one per worker process.

    ``fn`` must be a module-level function: a worker imports it by its module and name.
    Falls back to running in this process if the pool breaks (e.g. a worker was killed).
    """
    try:
        pool = get_pool(len(payloads))
        futures: list[Future[_T]] = [pool.submit(fn, *p) for p in payloads]
        return [f.result() for f in futures]
    except BrokenProcessPool:
        logger.warning("worker pool broke; training this batch in-process")
        shutdown_workers()
        return [fn(*p) for p in payloads]
