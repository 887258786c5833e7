"""Evaluations/s of the in-process executor against the Ray executor with 1 and 2 workers.

Same proxy as ``trainer_throughput.py``: digits, MLP 64-64-10, Adam 1e-2, batch 128, 200 steps,
its 34 classification losses. An *evaluation* is one trained model (one loss × one seed), as
there. Two call sizes, because the per-call cost of an executor matters as much as its
throughput:

(a) large calls: all 34 losses × 1 seed in one ``executor.run`` (a verification-sized pass);
(b) search-sized calls: 4 losses × 2 paired seeds per call, as the evaluator sends them during a
    search (``n_envs`` new candidates per step), cycling through the 34 losses.

Executors: ``inprocess`` (the trainer's own pool, one worker process per core), ``ray_1`` and
``ray_2`` (:class:`loss_rl.executors.RayExecutor` with ``workers`` 1 and 2) on one local Ray
instance with one CPU per core, no dashboard. Each executor is warmed up first (workers started,
torch imported); the passes are interleaved across executors and the median is reported.

The last line printed is JSON with keys: ``inprocess_evals_per_s``, ``ray_1_evals_per_s``,
``ray_2_evals_per_s`` (large calls), ``ray_2_vs_inprocess``, ``ray_2_vs_ray_1`` (ratios of
those), ``inprocess_small_evals_per_s``, ``ray_1_small_evals_per_s``,
``ray_2_small_evals_per_s`` (search-sized calls), ``ray_2_small_vs_inprocess``,
``ray_start_s`` (``ray.init`` of the local instance), ``n_losses``, ``steps``, ``repeats``,
``cores``, ``ray_version``, ``load_avg_before``.

Run ``python benchmarks/executor_scaling.py --help`` for smaller runs. Needs
``pip install 'loss-rl[ray]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence

from trainer_throughput import benchmark_losses

from loss_rl.evaluation import Executor, InProcessExecutor
from loss_rl.executors import RayExecutor, require_ray
from loss_rl.expr import Expr
from loss_rl.tasks import TaskConfig
from loss_rl.training import default_workers


def one_pass(
    executor: Executor, calls: Sequence[list[Expr]], task: TaskConfig, steps: int, seeds: list[int]
) -> float:
    """Evaluations per second over ``calls`` (each one ``executor.run``)."""
    start = time.perf_counter()
    n = 0
    for losses in calls:
        results = executor.run(losses, task, steps, seeds, 0)
        assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
        n += len(results)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--losses", type=int, default=34, help="number of losses (max 34)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="passes per executor (median)")
    parser.add_argument("--small", type=int, default=4, help="losses per search-sized call")
    args = parser.parse_args()

    ray = require_ray()
    load = os.getloadavg()[0]
    cores = default_workers()
    print(f"load average before: {load:.2f} (the CPU may be shared with other jobs)")
    task = TaskConfig.from_dict(
        {
            "dataset": "digits",
            "model": {"kind": "mlp", "widths": [64, 64]},
            "training": {"optimizer": "adam", "lr": 1e-2, "batch_size": 128, "steps": args.steps},
        }
    )
    losses = [e for _, e in benchmark_losses()[: args.losses]]
    small = [losses[i : i + args.small] for i in range(0, len(losses), args.small)]

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    executors: dict[str, Executor] = {
        "inprocess": InProcessExecutor(),
        "ray_1": RayExecutor(workers=1),
        "ray_2": RayExecutor(workers=2),
    }
    for ex in executors.values():
        ex.start()  # type: ignore[attr-defined]
        one_pass(ex, [losses], task, 5, [0])  # warm-up: data, trainer, first batches
    large: dict[str, list[float]] = {k: [] for k in executors}
    search: dict[str, list[float]] = {k: [] for k in executors}
    for rep in range(args.repeats):
        for name, ex in executors.items():
            large[name].append(one_pass(ex, [losses], task, args.steps, [0]))
            search[name].append(one_pass(ex, small, task, args.steps, [0, 1]))
            print(
                f"pass {rep + 1}: {name:9s} large {large[name][-1]:6.2f} evaluations/s, "
                f"search-sized {search[name][-1]:6.2f} evaluations/s"
            )
    for ex in executors.values():
        ex.close()  # type: ignore[attr-defined]
    ray.shutdown()

    med = {k: statistics.median(v) for k, v in large.items()}
    med_s = {k: statistics.median(v) for k, v in search.items()}
    for name in executors:
        print(
            f"{name:9s}: {med[name]:6.2f} evaluations/s ({len(losses)} per call), "
            f"{med_s[name]:6.2f} evaluations/s ({args.small} losses x 2 seeds per call)"
        )
    print(
        json.dumps(
            {
                "inprocess_evals_per_s": round(med["inprocess"], 3),
                "ray_1_evals_per_s": round(med["ray_1"], 3),
                "ray_2_evals_per_s": round(med["ray_2"], 3),
                "ray_2_vs_inprocess": round(med["ray_2"] / med["inprocess"], 3),
                "ray_2_vs_ray_1": round(med["ray_2"] / med["ray_1"], 3),
                "inprocess_small_evals_per_s": round(med_s["inprocess"], 3),
                "ray_1_small_evals_per_s": round(med_s["ray_1"], 3),
                "ray_2_small_evals_per_s": round(med_s["ray_2"], 3),
                "ray_2_small_vs_inprocess": round(med_s["ray_2"] / med_s["inprocess"], 3),
                "ray_start_s": round(ray_start, 2),
                "n_losses": len(losses),
                "steps": args.steps,
                "repeats": args.repeats,
                "cores": cores,
                "ray_version": ray.__version__,
                "load_avg_before": round(load, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
