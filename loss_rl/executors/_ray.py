"""The Ray executor: batches of candidates trained as Ray tasks, on one machine or a cluster.

An evaluation call (one evaluator batch: the new candidates × the paired seeds) is split into at
most ``workers`` batches, by tree structure and model count as the in-process trainer splits its
population over its worker processes. Each batch is one Ray task that runs
:func:`loss_rl.training.train` in its worker process, in-process with one torch thread. The
task's loaded data (split, corrupted, standardised by the driver) goes into the object store once
per executor; a worker fetches it the first time it trains that task and keeps it (Ray reuses its
worker processes), so batches carry only their candidates.

Results come back in any order and are matched to their candidates by the batch they came from;
only the driver (the search process) writes the ledger.

**Faults.** A batch whose worker process dies (killed, out of memory, its node lost) is re-run by
Ray, that batch alone, up to ``max_retries`` times; its results arrive once, so nothing is lost
or recorded twice. When the retries are spent the call raises and the evaluator records its
candidates as ``error`` (errors are not cached: the agent may propose them again).

**Multi-fidelity.** :meth:`RayExecutor.run_from` continues candidates from saved states (the
evaluator's ASHA rungs, ``evaluation.fidelity``): each batch's states travel with it, and the
states after its last step come back with its results, so a promoted candidate may continue on
any node. Results are those of the in-process executor.

**Start-up.** :meth:`RayExecutor.start` connects before the search trains anything. An address
that does not answer is a :class:`~loss_rl.errors.ConfigError` after at most
``connect_timeout_s`` seconds: the head's port is probed first, then a throw-away process connects
(``ray.init`` itself retries an unresponsive address for minutes and cannot be interrupted).

**Security.** A private local instance is started without the dashboard (no HTTP port) and
without usage statistics. Ray's own gRPC ports still listen; recent Ray releases protect them
with token authentication (see the README, "Running on a Ray cluster").
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from loss_rl._version import __version__
from loss_rl.errors import ConfigError
from loss_rl.executors._config import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_RETRIES,
    require_ray,
)

if TYPE_CHECKING:
    from loss_rl.expr import Expr
    from loss_rl.tasks import TaskConfig
    from loss_rl.training import ModelState, TrainResult

logger = logging.getLogger(__name__)

#: Default port of a Ray head's GCS (``ray start --head``) and of a Ray Client server.
GCS_PORT = 6379
CLIENT_PORT = 10001
_MIN_MODELS_PER_BATCH = 2  # as the in-process trainer: a batch must be worth its round trip

# A connection attempt in a throw-away process: ray.init blocks in native code on an address that
# accepts TCP but is no Ray head, so only a process of its own can be given a deadline.
_PREFLIGHT = """
import sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(int(ray.cluster_resources().get("CPU", 0)))
ray.shutdown()
"""


class RayExecutor:
    """Trains candidate batches as Ray tasks (``--executor ray``).

    Args:
        address: Where the cluster is (see :class:`~loss_rl.executors.ExecutorConfig`):
            ``None`` for ``$RAY_ADDRESS`` or a private local instance, ``"auto"``,
            ``"HOST:PORT"`` or ``"ray://HOST:PORT"``. Ignored when this process is already
            connected to Ray (``ray.init`` called before): that connection is used.
        workers: Batches per evaluation call, at most (default: the cluster's CPUs); also the
            CPUs of a private local instance (default: this machine's).
        connect_timeout_s: Seconds the cluster has to answer in :meth:`start`.
        max_retries: Times Ray re-runs a batch whose worker process died.

    Example:
        >>> executor = RayExecutor(workers=2)                     # doctest: +SKIP
        >>> evaluator = Evaluator(task, executor=executor)        # doctest: +SKIP
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self.address = address
        self.requested_workers = workers
        self.connect_timeout_s = float(connect_timeout_s)
        self.max_retries = int(max_retries)
        self._workers = 0
        self._owns_ray = False
        self._remote: Any = None
        # (TaskConfig, data seed) -> ObjectRef of (task, seed, loaded data)
        self._task_refs: dict[Any, Any] = {}

    @property
    def workers(self) -> int:
        """Batches per evaluation call (known after :meth:`start`)."""
        return self._workers

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has connected."""
        return self._remote is not None

    def start(self) -> None:
        """Connect to Ray (or start a private local instance); idempotent.

        Raises:
            ConfigError: Ray is not installed, or the cluster does not answer within
                ``connect_timeout_s`` seconds.
        """
        if self.started:
            return
        ray = require_ray()
        try:
            self._connect(ray)
        except BaseException:
            self.close()  # a failed start leaves no local instance behind
            raise

    def _connect(self, ray: Any) -> None:
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            if address not in (None, "local"):
                cpus = check_reachable(address, self.connect_timeout_s)
                logger.info("Ray cluster at %s answers (%d CPUs)", address, cpus)
            self._init(ray, address)
            self._owns_ray = True
        elif self.address is not None:
            logger.warning("already connected to Ray: ignoring address %r", self.address)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < 1:
            raise ConfigError("the Ray cluster has no CPUs for training", field="executor.address")
        self._workers = self.requested_workers or cpus
        # One CPU per batch: a batch trains in one process with one torch thread.
        self._remote = ray.remote(num_cpus=1, max_retries=self.max_retries)(_train_batch)
        self._check_workers(ray, min(self._workers, cpus))

    def _init(self, ray: Any, address: str | None) -> None:
        kwargs: dict[str, Any] = {"log_to_driver": False}
        if address in (None, "local"):
            # A private instance: no dashboard (no HTTP port), only the CPUs asked for. "local",
            # not None: ray.init(address=None) would join a `ray start` cluster on this machine.
            address = "local"
            kwargs.update(include_dashboard=False, num_cpus=self.requested_workers)
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as err:  # "auto" with no cluster running here
            raise ConfigError(
                f"cannot connect to Ray at {address!r}: {err}", field="executor.address"
            ) from err

    def _check_workers(self, ray: Any, n: int) -> None:
        """Check that ``n`` workers import the same loss_rl version (and warm them up).

        Importing torch and the trainer takes seconds; doing it now in as many workers as there
        will be batches keeps it out of the first evaluations (and out of timings).
        """
        probe = ray.remote(num_cpus=1, max_retries=self.max_retries)(_worker_version)
        try:
            versions = ray.get(
                [probe.remote() for _ in range(n)], timeout=max(self.connect_timeout_s, 60.0)
            )
            theirs = next((v for v in versions if v != __version__), __version__)
        except Exception as err:
            raise ConfigError(
                f"a Ray worker could not run loss_rl ({_last_line(err)}); install loss-rl "
                f"{__version__} on every node, or submit the job with --working-dir",
                field="executor",
            ) from err
        if theirs != __version__:
            raise ConfigError(
                f"the Ray workers run loss-rl {theirs}, this process {__version__}: install the "
                "same version on every node",
                field="executor",
            )

    def close(self) -> None:
        """Disconnect (and stop the private local instance) if :meth:`start` connected."""
        self._task_refs.clear()
        self._remote = None
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False

    # -----------------------------------------------------------------------------------------

    def _task_ref(self, task: TaskConfig, data_seed: int | None) -> Any:
        """The task and its loaded data, put in the object store once per (task, data seed)."""
        import ray

        key = (task, data_seed)
        ref = self._task_refs.get(key)
        if ref is None:
            from loss_rl.tasks import load_task

            data = load_task(task, data_seed) if data_seed is not None else None
            ref = self._task_refs[key] = ray.put((task, data_seed, data))
        return ref

    def batches(self, candidates: Sequence[Expr], n_seeds: int) -> list[list[int]]:
        """Candidate indices of each batch an evaluation call is split into."""
        n = len(candidates)
        if n == 0:
            return []
        k = min(self._workers or 1, n, max(1, n * n_seeds // _MIN_MODELS_PER_BATCH))
        if k <= 1:
            return [list(range(n))]
        try:
            # The in-process trainer's split: structure groups stay together, cost balanced.
            from loss_rl.training import split_candidates

            return split_candidates(candidates, n_seeds, k)
        except Exception:  # not an Expr, say: the trainer reports it; any split will do
            size = math.ceil(n / k)
            return [list(range(i, min(i + size, n))) for i in range(0, n, size)]

    def run(
        self,
        candidates: Sequence[Expr],
        task: TaskConfig,
        steps: int,
        seeds: Sequence[int],
        data_seed: int | None,
        splits: Sequence[str] = ("val",),
    ) -> list[TrainResult]:
        """See :meth:`loss_rl.evaluation.Executor.run`; connects first if needed.

        Raises:
            RuntimeError: a batch failed after its retries (the whole call fails: the evaluator
                records its candidates as errors).
        """
        return self._run(candidates, task, steps, seeds, data_seed, splits, None, False)

    def run_from(
        self,
        candidates: Sequence[Expr],
        task: TaskConfig,
        steps: int,
        seeds: Sequence[int],
        data_seed: int | None,
        start: Sequence[ModelState] | None,
        keep_state: bool,
    ) -> list[TrainResult]:
        """See :meth:`loss_rl.evaluation.ContinuingExecutor.run_from` (multi-fidelity rungs).

        Each batch's saved states travel with it to its worker, and the states after its last
        step come back in its results (``keep_state``), so that a candidate promoted to the
        next rung may continue on any node.

        Raises:
            RuntimeError: as :meth:`run`.
        """
        if start is not None and len(start) != len(candidates) * len(seeds):
            raise ConfigError(
                f"give one state per (candidate, seed): {len(candidates) * len(seeds)}, got "
                f"{len(start)}",
                field="start",
            )
        return self._run(candidates, task, steps, seeds, data_seed, ("val",), start, keep_state)

    def _run(
        self,
        candidates: Sequence[Expr],
        task: TaskConfig,
        steps: int,
        seeds: Sequence[int],
        data_seed: int | None,
        splits: Sequence[str],
        start: Sequence[ModelState] | None,
        keep_state: bool,
    ) -> list[TrainResult]:
        self.start()
        import ray

        seeds, splits = [int(s) for s in seeds], list(splits)
        n_seeds = len(seeds)
        # Wrapped in a list, so Ray does not resolve it for every batch: a worker fetches the
        # data from the object store only the first time it trains this task.
        task_ref = [self._task_ref(task, data_seed)]
        pending: dict[Any, list[int]] = {}
        for batch in self.batches(candidates, n_seeds):
            exprs = [candidates[i] for i in batch]
            states = (
                None
                if start is None
                else [start[i * n_seeds + s] for i in batch for s in range(n_seeds)]
            )
            ref = self._remote.remote(
                task, task_ref, exprs, steps, seeds, data_seed, splits, states, keep_state
            )
            pending[ref] = batch
        slots: list[list[TrainResult] | None] = [None] * len(candidates)
        waiting = list(pending)
        try:
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                for ref in done:
                    batch = pending[ref]
                    try:
                        results = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:
                        raise err.as_instanceof_cause() from None  # the trainer's own error
                    except ray.exceptions.RayError as err:
                        raise RuntimeError(
                            f"a batch of {len(batch)} candidates failed on Ray after "
                            f"{self.max_retries} retries: {type(err).__name__}: {err}"
                        ) from err
                    _place(results, batch, n_seeds, slots)
        finally:
            for ref in waiting:  # a failed call leaves no work running on the cluster
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
        return [r for per in slots if per is not None for r in per]

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, workers={self.requested_workers!r})"


def _place(results: list[TrainResult], batch: list[int], n_seeds: int, slots: list[Any]) -> None:
    """Put a batch's results (candidate = index in the batch) into the call's candidate slots."""
    if len(results) != len(batch) * n_seeds:
        raise RuntimeError(
            f"a Ray batch of {len(batch)} candidates returned {len(results)} results, "
            f"expected {len(batch) * n_seeds}"
        )
    for pos, i in enumerate(batch):
        rows = results[pos * n_seeds : (pos + 1) * n_seeds]
        if any(r.candidate != pos for r in rows):
            raise RuntimeError("a Ray batch returned its results out of order")
        slots[i] = [replace(r, candidate=i) for r in rows]


def _train_batch(
    task: TaskConfig,
    data_ref: list[Any],
    candidates: list[Expr],
    steps: int,
    seeds: list[int],
    data_seed: int | None,
    splits: list[str],
    start: list[ModelState] | None = None,
    keep_state: bool = False,
) -> list[TrainResult]:
    """The Ray task: train one batch in this worker process, with one torch thread.

    ``start`` holds the batch's saved states (candidate-major) to continue from, and
    ``keep_state`` returns the states after the last step (see :func:`loss_rl.training.train`).
    """
    import torch

    from loss_rl.tasks import has_task_data, provide_task_data
    from loss_rl.training import train

    if data_seed is not None and not has_task_data(task, data_seed):
        import ray

        _, _, data = ray.get(data_ref[0])  # the driver's loaded data, once per worker process
        if data is not None:
            provide_task_data(task, data_seed, data)

    # Ray gives the task one CPU: several intra-op threads would only fight over it (see
    # loss_rl.training._workers), and a pool of our own processes would oversubscribe the node.
    torch.set_num_threads(1)
    return train(
        candidates,
        task,
        steps,
        seeds,
        splits=splits,
        data_seed=data_seed,
        workers=0,
        start=start,
        keep_state=keep_state,
    )


def _worker_version() -> str:
    import loss_rl.training  # noqa: F401 - import torch and the trainer now, not in the first batch

    return __version__


_AUTH_HINT = "RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _last_line(text: object) -> str:
    """The last non-empty line of an error or of a process's stderr (the exception's message)."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(text)).splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of a Ray address (``HOST[:PORT]`` or ``ray://HOST[:PORT]``).

    Raises:
        ConfigError: for an address that is not of that form.
    """
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, str(CLIENT_PORT if client else GCS_PORT)
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"{address!r} is not a Ray address: use 'auto', HOST:PORT or ray://HOST:PORT",
            field="executor.address",
        )
    return host, int(port)


def check_reachable(address: str, timeout_s: float) -> int:
    """Check within ``timeout_s`` seconds (about) that a Ray cluster answers at ``address``.

    Returns:
        The cluster's CPUs.

    Raises:
        ConfigError: naming the address and what to do, when it does not answer.
    """
    if address != "auto":
        host, port = split_address(address)
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                pass
        except OSError as err:
            raise ConfigError(
                f"cannot reach a Ray cluster at {address} ({err}); start one with "
                "`ray start --head` on that machine, or fix --ray-address / $RAY_ADDRESS",
                field="executor.address",
            ) from err
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PREFLIGHT, address],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as err:
        raise ConfigError(
            f"no Ray cluster answered at {address} within {timeout_s:.0f} s (the port is open: "
            "is it a Ray head's GCS port, 6379 by default? A cluster with token authentication "
            f"needs {_AUTH_HINT})",
            field="executor.address",
        ) from err
    if done.returncode != 0:
        why = _last_line(done.stderr) or f"exit code {done.returncode}"
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address}: {why} (a cluster with token "
            f"authentication needs {_AUTH_HINT})",
            field="executor.address",
        )
    out = done.stdout.split()
    return int(out[-1]) if out and out[-1].isdigit() else 0
