"""Does a short inner training rank losses like full training does? Kendall τ per task (one run).

For each task preset (``envs/<name>.yaml``'s ``task:`` block), ≥ 20 diverse losses are trained
on the preset's paired seeds at several short fidelities (a quarter, half and all of the preset's
``training.steps``) and at full length (``training.full_steps``); losses are ranked by mean
validation score and each short ranking is compared with the full one (Kendall τ-b, plus the
overlap of the top 5). A diverged loss ranks last. Use it to choose a preset's search fidelity:
the cheapest number of steps whose τ is close to 1.

The last line printed is JSON: ``{"tasks": {name: {"steps": s, "full_steps": f, "n_losses": n,
"tau": τ at s, "top5_overlap": k at s, "by_fidelity": {steps: {"tau", "top5_overlap"}},
"seconds": t}}}``.

Run ``python benchmarks/fidelity_rank.py --help`` for smaller runs (``--tasks digits_noisy``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml
from scipy.stats import kendalltau

from loss_rl.expr import Expr, TaskKind, known_loss, parse
from loss_rl.tasks import TaskConfig
from loss_rl.training import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_throughput import benchmark_losses

ENVS = Path(__file__).resolve().parents[1] / "envs"
REGRESSION_HAND_WRITTEN = (
    "abs(residual)^1.5",
    "sqrt(abs(residual) + 0.01)",
    "log(1 + square(residual))",
    "square(residual) / (1 + square(residual))",
    "abs(residual) + 0.1 * square(residual)",
    "tanh(abs(residual))",
    "softplus(abs(residual)) - 0.6931471805599453",
    "max(abs(residual), square(residual))",
    "square(residual) + 0.5 * abs(residual)",
    "log(1 + abs(residual))",
)


def regression_losses() -> list[tuple[str, Expr]]:
    """20 diverse regression losses: ``(label, expression)``."""
    out = [(n, known_loss(n)) for n in ("mse", "l1", "log_cosh")]
    out += [(f"huber d={d}", known_loss("huber", delta=d)) for d in (0.1, 0.5, 1.0, 2.0)]
    out += [(f"quantile t={t}", known_loss("quantile", tau=t)) for t in (0.3, 0.5, 0.7)]
    out += [(s, parse(s)) for s in REGRESSION_HAND_WRITTEN]
    return out


def _preset(name: str) -> tuple[TaskConfig, list[int], int | None]:
    data = yaml.safe_load((ENVS / f"{name}.yaml").read_text())
    evaluation = data.get("evaluation", {}) or {}
    return (
        TaskConfig.from_dict(data["task"]),
        list(evaluation.get("seeds", [0, 1])),
        evaluation.get("data_seed"),
    )


def _mean_scores(results: list, n_seeds: int) -> list[float]:
    out = []
    for i in range(0, len(results), n_seeds):
        chunk = results[i : i + n_seeds]
        if any(r.score is None for r in chunk):
            out.append(-1e9)  # diverged: ranks last
        else:
            out.append(sum(r.score for r in chunk) / n_seeds)
    return out


def _top_overlap(a: list[float], b: list[float], k: int = 5) -> int:
    top = lambda s: set(sorted(range(len(s)), key=lambda i: -s[i])[:k])  # noqa: E731
    return len(top(a) & top(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tasks",
        default="digits_noisy,digits_clean,diabetes,mnist1d",
        help="comma-separated preset names from envs/",
    )
    parser.add_argument("--seeds", type=int, default=None, help="override the preset's seeds")
    parser.add_argument("--losses", type=int, default=34, help="at most this many losses")
    parser.add_argument("--full-steps", type=int, default=None, help="override full_steps")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    report: dict[str, dict[str, object]] = {}
    for name in args.tasks.split(","):
        task, seeds, data_seed = _preset(name)
        if args.seeds is not None:
            seeds = list(range(args.seeds))
        steps = task.training.steps
        full = args.full_steps or task.training.full_steps
        labelled = (
            benchmark_losses() if task.kind is TaskKind.CLASSIFICATION else regression_losses()
        )[: args.losses]
        exprs = [e for _, e in labelled]
        start = time.perf_counter()
        fidelities = sorted({max(1, steps // 4), max(1, steps // 2), steps})
        scores = {
            f: _mean_scores(
                train(exprs, task, f, seeds, data_seed=data_seed, workers=args.workers), len(seeds)
            )
            for f in [*fidelities, full]
        }
        by_fid = {}
        for f in fidelities:
            tau = kendalltau(scores[f], scores[full]).statistic
            by_fid[str(f)] = {
                "tau": round(float(tau), 3),
                "top5_overlap": _top_overlap(scores[f], scores[full]),
            }
        seconds = time.perf_counter() - start
        report[name] = {
            "steps": steps,
            "full_steps": full,
            "n_losses": len(exprs),
            "seeds": len(seeds),
            "tau": by_fid[str(steps)]["tau"],
            "top5_overlap": by_fid[str(steps)]["top5_overlap"],
            "by_fidelity": by_fid,
            "seconds": round(seconds, 1),
        }
        print(
            f"\n{name}: {len(exprs)} losses x {len(seeds)} seeds, full = {full} steps "
            f"({seconds:.0f}s)"
        )
        for f, v in by_fid.items():
            print(
                f"  {f:>5s} steps: Kendall tau {v['tau']:+.3f}, top-5 overlap {v['top5_overlap']}/5"
            )
        best_full = sorted(range(len(exprs)), key=lambda i: -scores[full][i])[:5]
        print(
            "  best at full length: "
            + ", ".join(f"{labelled[i][0]} ({scores[full][i]:.3f})" for i in best_full)
        )
    print(json.dumps({"tasks": report}))


if __name__ == "__main__":
    main()
