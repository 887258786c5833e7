"""Wider rollouts: the same search with more envs per vec step (larger evaluator batches).

A search's evaluator trains each vec step's new candidates in one trainer call, and a trainer
call of a few candidates costs about what one of many does (a step's fixed cost dominates a
small population; see ``benchmarks/search_vs_trainer.py``). More envs per vec step make fewer,
larger calls. This benchmark measures what that buys and what it costs, in one run:

(a) *baseline*: the agent preset as shipped (``n_envs`` × ``n_steps`` proposals per policy
    update);
(b) *wide*: ``--factor`` times the envs and ``1 / --factor`` the steps, so a policy update still
    sees the same number of proposals (the rest of the preset unchanged).

Both search the same env preset with the same budget (inner trainings) and search seeds,
verification off, each in a temporary folder, after one untimed warm-up search; the two runs of
a seed are interleaved (who goes first alternates), so they see the same load. Printed per run:
the search loop's wall time (``summary.json``'s ``wall_seconds``), trainings, proposals, the
median new candidates per trainer call, the best validation score and the area under the
best-so-far curve (mean over the trained evaluations).

The last line printed is JSON with keys: ``env``, ``agent``, ``budget``, ``seeds``, ``first_seed``,
``baseline`` and ``wide`` (each ``{"n_envs", "n_steps"}``), ``wall_baseline`` and ``wall_wide``
(mean seconds), ``wall_ratio`` (baseline / wide: above 1, the wide search is faster),
``median_call_baseline``, ``median_call_wide``, ``best_val_baseline``, ``best_val_wide``,
``best_val_delta`` (wide − baseline, mean over seeds), ``auc_baseline``, ``auc_wide``,
``auc_delta``, ``runs`` (the per-run figures), ``cores``, ``load_avg_before``.

A difference in the best score over a few seeds is mostly noise (the seeds' spread is printed):
read it as "no measurable loss" at best, not as a quality gain.

Usage::

    python benchmarks/search_envs.py --seeds 3            # default search, budget 300
    python benchmarks/search_envs.py --seeds 3 --first-seed 3   # three more seeds
    python benchmarks/search_envs.py --env tiny --budget 8 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from loss_rl import Search, load_run
from loss_rl.presets import find_preset, load_agent_config, load_env_preset


def wide_preset(agent: str, env_name: str, factor: int, folder: Path) -> tuple[Path, dict, dict]:
    """The agent preset with ``factor``× the envs and ``1/factor`` the steps for ``env_name``.

    Returns:
        The new preset's path, and the baseline's and the wide preset's ``n_envs`` and
        ``n_steps``.
    """
    base = load_agent_config(agent, env_name)
    n_steps = int(base.hyperparams.get("n_steps", 0))
    if n_steps < factor or n_steps % factor:
        raise SystemExit(f"{agent}'s n_steps ({n_steps}) is not a multiple of --factor {factor}")
    data = yaml.safe_load(find_preset("agents", agent).read_text())
    section = {**data.get(env_name, {}), "n_envs": base.n_envs * factor}
    section["n_steps"] = n_steps // factor
    data[env_name] = section
    data.setdefault("default", {})["algo"] = base.algo
    path = folder / f"{base.algo}_wide.yaml"
    path.write_text(yaml.safe_dump(data))
    return (
        path,
        {"n_envs": base.n_envs, "n_steps": n_steps},
        {"n_envs": base.n_envs * factor, "n_steps": n_steps // factor},
    )


def one_search(env: str, agent: str | Path, budget: int, seed: int) -> dict[str, Any]:
    """Run one search in a temporary folder; its figures."""
    with tempfile.TemporaryDirectory(prefix="search_envs_") as tmp:
        search = Search.create(env, agent, budget=budget, seed=seed, out=tmp, name="run")
        run = search.run(None, verify_top=False)
        ledger = load_run(run.path).ledger
        wall = float(run.summary["wall_seconds"])
    trained = ledger[ledger["source"] == "trained"]
    ok = trained[trained["status"] == "ok"]
    best = np.maximum.accumulate(ok["score"].to_numpy()) if len(ok) else np.array([np.nan])
    calls = trained.groupby("batch").size()
    return {
        "seed": seed,
        "wall": round(wall, 2),
        "trainings": len(trained),
        "proposed": len(ledger),
        "median_call": float(calls.median()) if len(calls) else 0.0,
        "best_val": round(float(best[-1]), 4),
        "auc": round(float(best.mean()), 4),
    }


def _mean(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.fmean(r[key] for r in runs), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="synthetic_noisy", help="env preset (name or path)")
    parser.add_argument("--agent", default="maskable_ppo", help="agent preset (shipped name)")
    parser.add_argument("--budget", type=int, default=300, help="inner trainings per search")
    parser.add_argument("--seeds", type=int, default=3, help="number of search seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="the first search seed")
    parser.add_argument("--factor", type=int, default=2, help="envs multiplier, steps divisor")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"load average before: {load:.2f} (the CPU may be shared with other jobs)")
    env_name = load_env_preset(args.env).name
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "wide": []}
    with tempfile.TemporaryDirectory(prefix="search_envs_preset_") as folder:
        wide_path, baseline, wide = wide_preset(args.agent, env_name, args.factor, Path(folder))
        print(f"baseline {baseline}, wide {wide}")
        # Untimed: the first search of a process pays imports and the workers' start-up.
        one_search(args.env, "random", 8, 0)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            pair = [("baseline", args.agent), ("wide", wide_path)]
            for label, agent in pair if seed % 2 == 0 else pair[::-1]:  # alternate who goes first
                start = time.perf_counter()
                figures = one_search(args.env, agent, args.budget, seed)
                runs[label].append(figures)
                print(f"{label:8s} {json.dumps(figures)}  ({time.perf_counter() - start:.0f} s)")

    b, w = runs["baseline"], runs["wide"]
    for key in ("wall", "best_val", "auc"):
        print(
            f"{key:8s} baseline {_mean(b, key):.4f} (sd {statistics.pstdev(r[key] for r in b):.4f})"
            f"  wide {_mean(w, key):.4f} (sd {statistics.pstdev(r[key] for r in w):.4f})"
        )
    print(
        json.dumps(
            {
                "env": env_name,
                "agent": args.agent,
                "budget": args.budget,
                "seeds": args.seeds,
                "first_seed": args.first_seed,
                "baseline": baseline,
                "wide": wide,
                "wall_baseline": _mean(b, "wall"),
                "wall_wide": _mean(w, "wall"),
                "wall_ratio": round(_mean(b, "wall") / max(_mean(w, "wall"), 1e-9), 3),
                "median_call_baseline": _mean(b, "median_call"),
                "median_call_wide": _mean(w, "median_call"),
                "best_val_baseline": _mean(b, "best_val"),
                "best_val_wide": _mean(w, "best_val"),
                "best_val_delta": round(_mean(w, "best_val") - _mean(b, "best_val"), 4),
                "auc_baseline": _mean(b, "auc"),
                "auc_wide": _mean(w, "auc"),
                "auc_delta": round(_mean(w, "auc") - _mean(b, "auc"), 4),
                "runs": runs,
                "cores": cores,
                "load_avg_before": round(load, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
