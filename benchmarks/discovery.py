"""Discovery: does an RL agent building losses token by token beat random search and evolution?

Every method searches the same generative space (``space: grammar``: one episode builds one
expression in prefix order) through the same evaluator (checks, cache, ledger; budget counted in
inner trainings) from the same starting information (the preset's ``start`` landmarks are
evaluated first by every method), for ``--seeds`` search seeds per task. Each run goes to the
largest budget; the best-so-far curve is read at every budget of ``--budgets`` (the curve is
monotone, so one run serves all budgets — an agent's learning-rate schedule does not depend on
the budget here).

Printed per task and method: best-so-far validation score at each budget (mean ± std over
seeds), the trainings each method needs to reach random search's final best (median over seeds,
``inf`` if never), and, unless ``--no-verify``, each method's winner (its best validation loss
over all seeds) re-trained at full length on ``--verify-seeds`` fresh paired seeds and scored on
the clean test split against every library loss *tuned* on validation (the honest protocol of
:func:`loss_rl.verify.verify`), with its novelty verdict (:func:`loss_rl.expr.known_equivalent`).
A plot of the mean curves (``discovery.png``) and the whole report (``discovery.json``) are saved
in ``--out``.

The last line printed is one JSON object::

    {"budgets": [int], "seeds": int,
     "tasks": {env: {method: {"best_at": {budget: float}, "best_at_std": {budget: float},
                              "to_random_best": float, "reached": int,
                              "winner": str, "winner_simplified": str, "winner_size": int,
                              "test": float, "test_ci95": [float, float],
                              "vs_best_reference": float, "p": float, "known_as": str|null}},
             "best_reference": str, "best_reference_test": float}},
     "rl_ahead": {env: bool}, "rl_to_random_ratio": {env: float},
     "beats_reference": {env: [method]}}

``rl_ahead`` is true when the RL agent's mean best-so-far is above both random search's and
evolution's at every budget >= 1000; ``rl_to_random_ratio`` is the RL agent's median trainings to
reach random's final best divided by the largest budget (the goal is <= 0.5);
``beats_reference`` lists the methods whose winner beats the best tuned reference on test at
p < 0.05 and is not a library loss up to scale.

Usage::

    python benchmarks/discovery.py --seeds 5 --budgets 500 2000 5000
    python benchmarks/discovery.py --envs synthetic_noisy_grammar --seeds 2 --budgets 200 \
        --no-verify
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from search_efficiency import best_so_far, plot_curves, run_or_resume

RL_AGENT = "risk_seeking_ppo"
DEFAULT_ENVS = ("synthetic_noisy_grammar", "digits_pair30_grammar", "mnist1d_noisy_grammar")
DEFAULT_AGENTS = ("random", "evolution", RL_AGENT)


def run_all(args: argparse.Namespace) -> dict[str, dict[str, list[Path]]]:
    """Run (or resume) every search; returns env → method → run folders."""
    budget = max(args.budgets)
    runs: dict[str, dict[str, list[Path]]] = {}
    for env in args.envs:
        runs[env] = {}
        for agent in args.agents:
            runs[env][agent] = []
            for seed in range(args.seeds):
                name = f"{env}_{agent}_s{seed}"
                t0 = time.perf_counter()
                run_dir = run_or_resume(args.out, name, env, agent, budget, seed)
                runs[env][agent].append(run_dir)
                best = best_so_far(run_dir, budget)[-1]
                dt = time.perf_counter() - t0
                print(f"{name:48s} best {best:.4f}  ({dt:.0f} s)", flush=True)
    return runs


def winner(run_dirs: list[Path]) -> tuple[str, float]:
    """The best validation loss over a method's runs (expression string, score)."""
    from loss_rl.store import load_run

    best: tuple[str, float] = ("", -math.inf)
    for d in run_dirs:
        top = load_run(d).top(1)
        if len(top) and float(top["score"].iloc[0]) > best[1]:
            best = (str(top["expression"].iloc[0]), float(top["score"].iloc[0]))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS))
    ap.add_argument("--agents", nargs="+", default=list(DEFAULT_AGENTS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budgets", type=int, nargs="+", default=[500, 2000, 5000])
    ap.add_argument("--verify-seeds", type=int, default=10)
    ap.add_argument("--no-verify", action="store_true", help="skip the test-split verification")
    ap.add_argument("--out", type=Path, default=Path("results/bench_discovery"))
    ap.add_argument("--keep", action="store_true", help="keep earlier runs in --out (resume)")
    args = ap.parse_args()
    args.budgets = sorted(set(args.budgets))
    budget = args.budgets[-1]

    from loss_rl.expr import parse, simplify
    from loss_rl.presets import load_env_preset
    from loss_rl.verify import verify

    if args.out.exists() and not args.keep:
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    runs = run_all(args)

    report: dict[str, dict[str, Any]] = {}
    rl_ahead: dict[str, bool] = {}
    ratio: dict[str, float] = {}
    beats: dict[str, list[str]] = {}
    curves: dict[str, dict[str, np.ndarray]] = {}
    for env, per_agent in runs.items():
        cs = {a: np.stack([best_so_far(d, budget) for d in ds]) for a, ds in per_agent.items()}
        curves[env] = cs
        rand_final = float(cs["random"][:, -1].mean()) if "random" in cs else math.nan
        rep: dict[str, dict[str, Any]] = {}
        print(f"\n{env}: {args.seeds} seeds, budgets {args.budgets}")
        head = "".join(f"{'@' + str(b):>18s}" for b in args.budgets)
        print(f"{'method':18s}{head} {'to random best':>15s}")
        for agent, c in cs.items():
            at = {b: float(c[:, b - 1].mean()) for b in args.budgets}
            sd = {b: float(c[:, b - 1].std()) for b in args.budgets}
            hits = []
            for row in c:
                idx = np.flatnonzero(row >= rand_final - 1e-12)
                hits.append(float(idx[0] + 1) if len(idx) else math.inf)
            to_rand = float(np.median(hits))
            rep[agent] = {
                "best_at": at,
                "best_at_std": sd,
                "to_random_best": to_rand,
                "reached": int(sum(np.isfinite(hits))),
            }
            cells = "".join(f"{at[b]:10.4f} ± {sd[b]:.4f}" for b in args.budgets)
            print(f"{agent:18s}{cells} {to_rand:15.1f} ({rep[agent]['reached']}/{len(c)})")
        if RL_AGENT in rep and "random" in rep and "evolution" in rep:
            big = [b for b in args.budgets if b >= 1000]
            rl_ahead[env] = bool(big) and all(
                rep[RL_AGENT]["best_at"][b]
                > max(rep[o]["best_at"][b] for o in ("random", "evolution"))
                for b in big
            )
            ratio[env] = float(rep[RL_AGENT]["to_random_best"]) / budget

        if not args.no_verify:
            preset = load_env_preset(env)
            wins = {a: winner(ds) for a, ds in per_agent.items()}
            losses = {a: parse(w[0]) for a, w in wins.items() if w[0]}
            table = verify(
                losses,
                preset.task,
                seeds=args.verify_seeds,
                references=preset.verification.references,
                tune_references=preset.verification.tune_references,
                data_seed=preset.evaluation.data_seed,
            )
            best_ref = str(table.attrs["best_reference"])
            ref_row = table.loc[table["loss"] == best_ref].iloc[0]
            report_env: dict[str, Any] = {
                "best_reference": best_ref,
                "best_reference_test": float(ref_row["mean"]),
            }
            beats[env] = []
            print(f"best tuned reference: {best_ref} (test {float(ref_row['mean']):.4f})")
            for agent, expr in losses.items():
                row = table.loc[table["loss"] == agent].iloc[0]
                diff, p = float(row["diff_vs_best_ref"]), float(row["p_vs_best_ref"])
                known = str(row["known_as"]) or None
                rep[agent].update(
                    winner=str(expr),
                    winner_simplified=simplify(expr),
                    winner_size=expr.size(),
                    winner_val=wins[agent][1],
                    test=float(row["mean"]),
                    test_ci95=[float(row["ci_low"]), float(row["ci_high"])],
                    vs_best_reference=diff,
                    p=p,
                    known_as=known,
                )
                if diff > 0 and p < 0.05 and known is None:
                    beats[env].append(agent)
                novelty = f"= {known}" if known else "new"
                print(
                    f"  {agent:18s} test {float(row['mean']):.4f}  vs {best_ref} {diff:+.4f} "
                    f"(p {p:.3g})  {novelty}  {simplify(expr)}"
                )
            rep.update(report_env)
        report[env] = rep

    plot_curves(curves, args.out / "discovery.png", bold={RL_AGENT}, log_x=True, band=True)

    out = {
        "budgets": args.budgets,
        "seeds": args.seeds,
        "tasks": report,
        "rl_ahead": rl_ahead,
        "rl_to_random_ratio": ratio,
        "beats_reference": beats,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    (args.out / "discovery.json").write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
