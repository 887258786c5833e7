"""Throughput of a model given as a module factory against the same built-in model.

The batched trainer trains the built-in kinds (``mlp``, ``linear``, ``cnn1d``) with a
hand-differentiated population (``StackedModel``) and a ``model: {kind: module, factory: ...}``
with ``torch.func`` (``vmap`` over ``functional_call``, autograd: ``FunctionalModel``). This
measures what that generality costs on the standard proxy: digits, MLP 64-64-10, Adam 1e-2,
batch 128, 200 steps, 16 losses × 2 seeds (the first losses of ``trainer_throughput.py``), with
the default protocol (``select: best``).

(a) built-in: ``model: {kind: mlp, widths: [64, 64]}``;
(b) module: ``model: {kind: module, factory: "<this file>:make_mlp"}``, the same layers built
    from the same seeds (hence the same initial parameters).

Both go through :func:`loss_rl.training.train` (worker processes of one thread each) after a
warm-up call that starts the workers; their passes are interleaved so that both see the same
load, and the median pass counts.

The last line printed is JSON with keys: ``builtin_models_per_s`` (a), ``module_models_per_s``
(b), ``ratio`` (b/a), ``max_score_diff`` (largest difference of a model's validation accuracy
between the two paths: float rounding only), ``n_losses``, ``seeds``, ``models``, ``steps``,
``workers``, ``cores``, ``load_avg_before``.

Run ``python benchmarks/module_vs_builtin.py --help`` for smaller runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from trainer_throughput import benchmark_losses

from loss_rl.tasks import TaskConfig
from loss_rl.training import default_workers, train

WIDTHS = (64, 64)


def make_mlp(num_features: int, num_outputs: int, widths: list[int] | None = None) -> nn.Module:
    """The built-in ``mlp`` as a module factory: Linear + ReLU layers, then a linear head."""
    layers: list[nn.Module] = []
    width = num_features
    for h in widths or WIDTHS:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--losses", type=int, default=16, help="number of losses (max 34)")
    parser.add_argument("--seeds", type=int, default=2, help="paired seeds per loss")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="passes of each path (median)")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    training = {"optimizer": "adam", "lr": 1e-2, "batch_size": 128, "steps": args.steps}
    builtin = TaskConfig.from_dict(
        {
            "dataset": "digits",
            "model": {"kind": "mlp", "widths": list(WIDTHS)},
            "training": training,
        }
    )
    module = TaskConfig.from_dict(
        {
            "dataset": "digits",
            "model": {"kind": "module", "factory": f"{Path(__file__).resolve()}:make_mlp"},
            "training": training,
        }
    )
    losses = [e for _, e in benchmark_losses()[: args.losses]]
    seeds = list(range(args.seeds))
    workers = default_workers() if args.workers is None else args.workers
    cores = torch.get_num_threads()
    print(f"load average before: {load:.2f} (the CPU may be shared with other jobs)")

    for task in (builtin, module):  # warm-up: starts the workers, imports the factory
        train(losses[:4], task, 5, seeds, workers=workers)
    rates: dict[str, list[float]] = {"builtin": [], "module": []}
    scores: dict[str, list[float | None]] = {}
    for _ in range(args.repeats):
        for name, task in (("builtin", builtin), ("module", module)):
            start = time.perf_counter()
            results = train(losses, task, args.steps, seeds, workers=workers)
            rates[name].append(len(results) / (time.perf_counter() - start))
            assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
            scores[name] = [r.score for r in results]
    median = {name: statistics.median(r) for name, r in rates.items()}
    for name, r in rates.items():
        print(
            f"{name:8s}: {median[name]:6.2f} models/s (passes: {', '.join(f'{v:.1f}' for v in r)})"
        )
    diff = max(
        abs(a - b)
        for a, b in zip(scores["builtin"], scores["module"], strict=True)
        if a is not None and b is not None
    )
    ratio = median["module"] / median["builtin"]
    print(f"ratio module/builtin: {ratio:.2f}; largest validation-accuracy difference {diff:.4f}")
    print(
        json.dumps(
            {
                "builtin_models_per_s": round(median["builtin"], 3),
                "module_models_per_s": round(median["module"], 3),
                "ratio": round(ratio, 3),
                "max_score_diff": round(diff, 5),
                "n_losses": len(losses),
                "seeds": args.seeds,
                "models": len(losses) * args.seeds,
                "steps": args.steps,
                "workers": workers,
                "cores": cores,
                "load_avg_before": round(load, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
