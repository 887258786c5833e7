"""Does the loss matter under an honest protocol? CE last step vs checkpointed CE vs tuned losses.

For each task (every task of the ``classification`` suite and every env preset, or those named
with ``--tasks``), one run of :func:`loss_rl.verify.verify` at the task's full length on
``--seeds`` fresh paired seeds (test split, the search's data seed):

- ``ce_last``: CE trained to the last step (``select: last``) — what the README's headline used
  to compare against;
- ``ce_best``: CE with checkpoint selection on the task's validation split (noisy labels on the
  noisy tasks: the validation labels are corrupted like the training labels);
- every library loss of the task kind with its hyper-parameters tuned on the validation split
  over the library's grid (:attr:`loss_rl.expr.KnownLoss.grid`), each with checkpoint selection;
- ``best_ref``: the tuned reference with the best mean test score, and its paired margin over
  ``ce_best`` (mean, 95 % CI, paired t-test p).

A task "where the loss matters" is one where ``margin >= 0.03`` at ``p < 0.01`` (the default
env preset must be one: see the README).

The last line printed is JSON: ``{"seeds", "tasks": {name: {"ce_last", "ce_best", "refs":
{loss: test mean}, "params": {loss: tuned params}, "best_ref", "margin", "margin_ci95",
"p", "matters", "val_size", "trainings", "seconds"}}, "matters": [names]}``.

Run ``python benchmarks/protocol.py --help`` for options (``--tasks digits_noisy --seeds 3``
for a quick look).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from loss_rl.expr import format_params
from loss_rl.presets import EnvPreset, list_presets, load_env_preset, load_suite, load_suite_task
from loss_rl.stats import paired_comparison
from loss_rl.tasks import TaskConfig, load_task
from loss_rl.verify import verify


def all_tasks() -> dict[str, EnvPreset]:
    """The env presets and the ``classification`` suite's tasks, one entry per distinct task."""
    out: dict[str, EnvPreset] = {}
    seen: set[str] = set()
    presets = [(n, load_env_preset(n)) for n in list_presets("envs")]
    presets += [(f"classification:{k}", v) for k, v in load_suite("classification").tasks.items()]
    for name, preset in presets:
        key = json.dumps(preset.task.to_dict(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            out[name] = preset
    return out


def measure(preset: EnvPreset, seeds: int) -> dict[str, object]:
    """The protocol table of one task (see the module docstring)."""
    task = preset.task
    start = time.perf_counter()
    data_seed = preset.evaluation.data_seed
    table = verify({}, task, seeds=seeds, data_seed=data_seed)
    last_task = TaskConfig.from_dict(
        {**task.to_dict(), "training": {**task.training.to_dict(), "select": "last"}}
    )
    ce_name = "ce" if task.kind.value == "classification" else "mse"
    last = verify({}, last_task, seeds=seeds, references=[ce_name], data_seed=data_seed)
    per_seed = table.attrs["per_seed"]
    best = table.attrs["best_reference"]
    cmp = paired_comparison(np.array(per_seed[best]), np.array(per_seed[ce_name]))
    refs = {str(r["loss"]): float(r["mean"]) for _, r in table.iterrows()}
    params = {k: v["chosen"] for k, v in table.attrs["tuning"].items() if v["chosen"]}
    val_size = len(load_task(task, data_seed if data_seed is not None else 0).val)
    matters = bool(cmp.diff >= 0.03 and cmp.p < 0.01)
    return {
        "ce_last": float(last["mean"].iloc[0]),
        "ce_best": refs[ce_name],
        "refs": refs,
        "params": params,
        "best_ref": best,
        "margin": cmp.diff,
        "margin_ci95": [cmp.ci_low, cmp.ci_high],
        "p": cmp.p,
        "matters": matters,
        "val_size": val_size,
        "trainings": table.attrs["trainings"] + last.attrs["trainings"],
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", help="env presets or SUITE:TASK (default: all)")
    parser.add_argument("--seeds", type=int, default=10, help="fresh paired seeds (default 10)")
    args = parser.parse_args()
    if args.tasks:
        tasks = {t: (load_suite_task(t) if ":" in t else load_env_preset(t)) for t in args.tasks}
    else:
        tasks = all_tasks()
    results: dict[str, dict[str, object]] = {}
    header = f"{'task':34s} {'val n':>6s} {'CE last':>8s} {'CE ckpt':>8s} {'best tuned ref':>28s}"
    print(header + f" {'margin [95% CI]':>26s} {'p':>8s}")
    for name, preset in tasks.items():
        r = measure(preset, args.seeds)
        results[name] = r
        best = str(r["best_ref"])
        p = r["params"].get(best)  # type: ignore[union-attr]
        label = best + (f" ({format_params(p)})" if p else "")
        lo, hi = r["margin_ci95"]  # type: ignore[misc]
        refs = r["refs"]  # type: ignore[assignment]
        print(
            f"{name:34s} {r['val_size']:6d} {r['ce_last']:8.4f} {r['ce_best']:8.4f} "
            f"{label + ' ' + format(refs[best], '.4f'):>28s} "
            f"{r['margin']:+.4f} [{lo:+.4f}, {hi:+.4f}] {r['p']:8.2g}"
            + ("  ← loss matters" if r["matters"] else ""),
            flush=True,
        )
    summary = {
        "seeds": args.seeds,
        "tasks": results,
        "matters": [k for k, v in results.items() if v["matters"]],
    }
    print(json.dumps(_plain(summary)))


def _plain(v: object) -> object:
    """JSON-able data: NaN becomes null."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


if __name__ == "__main__":
    main()
