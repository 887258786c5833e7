"""Does multi-fidelity evaluation (successive halving / ASHA) buy coverage at equal compute?

For each of ``--seeds`` searcher seeds, the same baseline searcher (default: ``random`` edit walks;
``--searcher evolution`` for regularised evolution) searches the env preset (default
``digits_noisy``) twice with the same budget in optimiser steps:

- *plain*: every new candidate trains for the search fidelity (``task.training.steps``);
- *asha*: ``evaluation.fidelity`` with ``--rungs`` (default ``[s/8, s/3, s]`` of the search
  steps ``s``) and ``--keep`` (default 1/3): candidates start at the lowest rung and the best
  share is continued from its checkpoint to the next.

Both runs stop at ``--budget`` full-length trainings' worth of optimiser steps (the evaluator's
``training_equivalents`` with fidelity levels, trainings × steps without; one searcher batch
may overshoot). Each run's winner is its candidate with the best validation score among those
trained to the search fidelity (asha: the last rung, since a low rung's score is not comparable),
and is *verified*: trained for ``task.training.full_steps`` on ``--verify-seeds`` fresh seeds,
scored on the test split (mean). Everything runs in a temporary folder, ledgers included.

The last line printed is JSON with keys: ``env``, ``searcher``, ``budget`` (full-length
trainings), ``rungs``, ``keep``, ``search_steps``, ``full_steps``, ``seeds`` (searcher seeds),
``verify_seeds``, and per arm (``plain_*`` / ``asha_*``) the per-seed lists ``*_candidates``
(distinct candidates trained), ``*_optimizer_steps`` (candidate-steps spent: steps per
candidate, not per model seed), ``*_best_val`` (winner's validation score at the search
fidelity), ``*_test`` (verified winner's mean test score), ``*_winner`` (its expression) and
``*_seconds`` (wall time of the search); then ``coverage_ratio`` (mean over seeds of asha / plain
candidates), ``coverage_per_step_ratio`` (the same per optimiser step spent, which corrects for
the last batch's overshoot), ``mean_plain_test``, ``mean_asha_test``, ``test_delta`` (asha −
plain, mean), ``asha_not_worse`` (seeds where asha's verified test score ≥ plain's),
``ce_test`` (CE trained and verified the same way, for scale) and ``wall_seconds``.

Run ``python benchmarks/asha.py --help`` for smaller runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from loss_rl.agents.baselines import BASELINES
from loss_rl.agents.callbacks import SearchState
from loss_rl.evaluation import Evaluator, FidelityConfig
from loss_rl.expr import Expr, known_loss, parse
from loss_rl.presets import env_config, load_env_preset
from loss_rl.store import Ledger
from loss_rl.tasks import TaskConfig
from loss_rl.training import train


def _search(
    preset: Any,
    searcher: str,
    seed: int,
    budget: int,
    fidelity: FidelityConfig | None,
    folder: Path,
) -> dict[str, Any]:
    """One search; its coverage, spending and (unverified) winner."""
    ledger = Ledger(folder / "ledger.sqlite")
    evaluator = Evaluator(
        preset.task,
        seeds=preset.evaluation.seeds,
        data_seed=preset.evaluation.data_seed,
        ledger=ledger,
        fidelity=fidelity,
    )
    state = SearchState(evaluator, budget)
    cls = BASELINES[searcher]
    search = cls(env_config(preset), evaluator, state, seed=seed, run_dir=folder)
    t0 = time.perf_counter()
    search.run(None)
    seconds = time.perf_counter() - t0
    steps = evaluator.steps
    best: tuple[float, str] | None = None
    for r in ledger.resolved():
        top = r.ok and r.score is not None and r.fidelity == steps and r.source == "trained"
        if top and (best is None or r.score > best[0]):  # type: ignore[operator]
            best = (r.score, r.expression)  # type: ignore[assignment]
    ledger.close()
    assert best is not None, "no candidate reached the search fidelity"
    return {
        "candidates": evaluator.stats.trained,
        "optimizer_steps": evaluator.stats.optimiser_steps,
        "best_val": best[0],
        "winner": best[1],
        "seconds": seconds,
    }


def _verify(expr: Expr, task: TaskConfig, data_seed: int, seeds: list[int]) -> float:
    """Mean test score of ``expr`` trained for the full steps on fresh seeds."""
    rs = train([expr], task, task.training.full_steps, seeds, splits=("test",), data_seed=data_seed)
    scores = [r.score for r in rs if r.ok and r.score is not None]
    return statistics.fmean(scores) if len(scores) == len(rs) else float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print (and return) its JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="digits_noisy")
    ap.add_argument("--searcher", default="random", choices=["random", "evolution"])
    ap.add_argument("--budget", type=int, default=40, help="full-length trainings' worth of steps")
    ap.add_argument("--seeds", type=int, default=3, help="searcher seeds")
    ap.add_argument("--rungs", type=int, nargs="*", default=None, help="default: s/8 s/3 s")
    ap.add_argument("--keep", type=float, default=1 / 3)
    ap.add_argument("--verify-seeds", type=int, default=5)
    args = ap.parse_args(argv)

    t_all = time.perf_counter()
    preset = load_env_preset(args.env)
    steps = preset.task.training.steps
    rungs = args.rungs or [max(1, steps // 8), max(2, steps // 3), steps]
    fidelity = FidelityConfig(tuple(rungs), args.keep)
    verify_seeds = list(range(1000, 1000 + args.verify_seeds))
    data_seed = preset.evaluation.data_seed
    out: dict[str, Any] = {
        "env": args.env,
        "searcher": args.searcher,
        "budget": args.budget,
        "rungs": rungs,
        "keep": args.keep,
        "search_steps": steps,
        "full_steps": preset.task.training.full_steps,
        "seeds": list(range(args.seeds)),
        "verify_seeds": verify_seeds,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for arm, fid in (("plain", None), ("asha", fidelity)):
            rows = []
            for seed in range(args.seeds):
                folder = Path(tmp) / f"{arm}-{seed}"
                folder.mkdir()
                row = _search(preset, args.searcher, seed, args.budget, fid, folder)
                row["test"] = _verify(parse(row["winner"]), preset.task, data_seed, verify_seeds)
                rows.append(row)
            for k in ("candidates", "optimizer_steps", "best_val", "test", "winner", "seconds"):
                out[f"{arm}_{k}"] = [r[k] for r in rows]
    plain, asha = out["plain_test"], out["asha_test"]
    out["coverage_ratio"] = statistics.fmean(
        a / p for a, p in zip(out["asha_candidates"], out["plain_candidates"], strict=True)
    )
    # Batches overshoot the budget by up to one batch: coverage per optimiser step is exact.
    out["coverage_per_step_ratio"] = statistics.fmean(
        (a / sa) / (p / sp)
        for a, sa, p, sp in zip(
            out["asha_candidates"],
            out["asha_optimizer_steps"],
            out["plain_candidates"],
            out["plain_optimizer_steps"],
            strict=True,
        )
    )
    out["mean_plain_test"] = statistics.fmean(plain)
    out["mean_asha_test"] = statistics.fmean(asha)
    out["test_delta"] = out["mean_asha_test"] - out["mean_plain_test"]
    out["asha_not_worse"] = sum(a >= p for a, p in zip(asha, plain, strict=True))
    ce = known_loss("ce" if preset.task.kind.value == "classification" else "mse")
    out["ce_test"] = _verify(ce, preset.task, data_seed, verify_seeds)
    out["wall_seconds"] = time.perf_counter() - t_all
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
