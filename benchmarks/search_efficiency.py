"""Search efficiency: best-so-far validation score against inner trainings, per agent.

Every agent searches the same MDP through the same evaluator with the same budget, counted in
inner trainings (not env steps), for several search seeds. Printed per task: the final best
(mean ± std over seeds), the area under the best-so-far curve (mean best-so-far over the budget),
the trainings each agent needed to reach random search's final best (median over seeds; ``inf``
when never reached), and — because near the top one validation sample decides that race — the
trainings needed to reach 99 % of random search's gain over the start loss (``to_random_99``). A
plot of the mean curves is saved next to the runs.

The last line printed is one JSON object::

    {"budget": int, "seeds": int,
     "tasks": {env: {agent: {"final_best": float, "final_best_std": float, "auc": float,
                             "to_random_best": float, "to_random_99": float,
                             "reached": int}}},
     "best_rl": {env: agent}, "rl_beats_random": {env: bool}}

``rl_beats_random`` is true when the best RL agent (by AUC) has a higher AUC than random search
and reaches random's final best in fewer trainings (median).

Usage::

    python benchmarks/search_efficiency.py --envs digits_noisy mnist1d --seeds 3 --budget 200
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np

RL_AGENTS = ("dqn", "ppo", "maskable_ppo")


def best_so_far(run_dir: Path, budget: int) -> np.ndarray:
    """Best validation score after each of the first ``budget`` inner trainings."""
    with sqlite3.connect(run_dir / "ledger.sqlite") as db:
        rows = db.execute(
            "SELECT status, score FROM evaluations WHERE source='trained' ORDER BY id"
        ).fetchall()
    curve = np.full(budget, np.nan)
    best = -np.inf
    for i, (status, score) in enumerate(rows[:budget]):
        if status == "ok" and score is not None:
            best = max(best, score)
        curve[i] = best
    if len(rows) < budget:  # a run that stopped early keeps its last best
        curve[len(rows) :] = best
    return curve


def plot_curves(
    curves: dict[str, dict[str, np.ndarray]],
    path: Path,
    *,
    bold: set[str],
    log_x: bool = False,
    band: bool = False,
) -> None:
    """One panel per task: each agent's mean best-so-far curve (rows = seeds) against trainings.

    Args:
        curves: task → agent → array ``[seeds, budget]``.
        path: The PNG to write.
        bold: Agents drawn with a thicker line.
        log_x: Trainings on a log scale.
        band: Shade ± one standard deviation over seeds.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return
    fig = Figure(figsize=(5.5 * len(curves), 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (env, per_agent) in zip(axes, curves.items(), strict=True):
        for agent, c in per_agent.items():
            x = np.arange(1, c.shape[1] + 1)
            m = np.nanmean(c, axis=0)
            ax.plot(x, m, label=agent, lw=2 if agent in bold else 1.2)
            if band:
                sd = np.nanstd(c, axis=0)
                ax.fill_between(x, m - sd, m + sd, alpha=0.15)
        if log_x:
            ax.set_xscale("log")
        ax.set_title(env)
        ax.set_xlabel("inner trainings")
        ax.set_ylabel("best-so-far validation score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def run_or_resume(out: Path, name: str, env: str, agent: str, budget: int, seed: int) -> Path:
    """The run folder ``out/name``: searched now, resumed if interrupted, kept if finished."""
    from loss_rl import Search

    run_dir = out / name
    if not (run_dir / "summary.json").is_file():
        if run_dir.exists():
            Search.open(run_dir).run(verify_top=False)
        else:
            Search.create(env, agent, budget=budget, seed=seed, out=out, name=name).run(
                verify_top=False
            )
    return run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", nargs="+", default=["digits_noisy", "mnist1d"])
    ap.add_argument("--agents", nargs="+",
                    default=["random", "evolution", "optuna", *RL_AGENTS])  # fmt: skip
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("results/bench_search_efficiency"))
    ap.add_argument("--keep", action="store_true", help="keep earlier runs in --out (resume)")
    args = ap.parse_args()

    if args.out.exists() and not args.keep:
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    curves: dict[str, dict[str, list[np.ndarray]]] = {}
    for env in args.envs:
        curves[env] = {}
        for agent in args.agents:
            curves[env][agent] = []
            for seed in range(args.seeds):
                name = f"{env}_{agent}_s{seed}"
                t0 = time.perf_counter()
                run_dir = run_or_resume(args.out, name, env, agent, args.budget, seed)
                c = best_so_far(run_dir, args.budget)
                curves[env][agent].append(c)
                print(f"{name:40s} best {c[-1]:.4f}  ({time.perf_counter() - t0:.0f} s)",
                      flush=True)  # fmt: skip

    report: dict[str, dict[str, dict[str, float]]] = {}
    best_rl: dict[str, str] = {}
    beats: dict[str, bool] = {}
    for env, per_agent in curves.items():
        rand_final = (
            float(np.mean([c[-1] for c in per_agent["random"]])) if "random" in per_agent else None
        )
        report[env] = {}
        print(f"\n{env}: budget {args.budget} trainings, {args.seeds} seeds")
        print(f"{'agent':14s} {'final best':>18s} {'AUC':>8s} {'to random best':>15s} reached "
              f"{'to 99% of random':>17s}")  # fmt: skip
        for agent, cs in per_agent.items():
            finals = np.array([c[-1] for c in cs])
            auc = float(np.mean([np.nanmean(np.where(np.isfinite(c), c, np.nan)) for c in cs]))
            hits, hits99 = [], []
            if rand_final is not None:
                start = float(np.mean([c[0] for c in per_agent["random"]]))
                near = start + 0.99 * (rand_final - start)
                for c in cs:
                    idx = np.flatnonzero(c >= rand_final - 1e-12)
                    hits.append(float(idx[0] + 1) if len(idx) else math.inf)
                    idx = np.flatnonzero(c >= near)
                    hits99.append(float(idx[0] + 1) if len(idx) else math.inf)
            to_rand = float(np.median(hits)) if hits else math.nan
            to_99 = float(np.median(hits99)) if hits99 else math.nan
            reached = int(sum(np.isfinite(hits)))
            report[env][agent] = {
                "final_best": float(finals.mean()),
                "final_best_std": float(finals.std()),
                "auc": auc,
                "to_random_best": to_rand,
                "to_random_99": to_99,
                "reached": reached,
            }
            print(f"{agent:14s} {finals.mean():10.4f} ± {finals.std():.4f} {auc:8.4f} "
                  f"{to_rand:15.1f} {reached}/{len(cs)}     {to_99:17.1f}")  # fmt: skip
        rl = [a for a in per_agent if a in RL_AGENTS]
        if rl and "random" in per_agent:
            top = max(rl, key=lambda a: report[env][a]["auc"])
            best_rl[env] = top
            r, t = report[env]["random"], report[env][top]
            beats[env] = bool(t["auc"] > r["auc"] and t["to_random_best"] < r["to_random_best"])

    curves_arr = {env: {a: np.stack(cs) for a, cs in per.items()} for env, per in curves.items()}
    plot_curves(curves_arr, args.out / "search_efficiency.png", bold=set(RL_AGENTS))

    print(json.dumps({"budget": args.budget, "seeds": args.seeds, "tasks": report,
                      "best_rl": best_rl, "rl_beats_random": beats}))  # fmt: skip


if __name__ == "__main__":
    main()
