"""Does a policy pretrained across tasks search an unseen task faster than random search?

Leave-one-out over held-out tasks of a suite. For each held-out task T a policy is pretrained on
the suite without T (``loss-rl pretrain --exclude T``; with ``--pretrain-once`` a single policy is
pretrained without *all* held-out tasks, a stricter test at 1/n of the cost), then T is searched
by

- ``pretrained``: that policy rolled out, no further learning (``--no-train``);
- ``finetuned``: that policy, fine-tuned on T;
- ``fresh``: a fresh agent of the same algorithm;
- ``random``: random search;
- ``evolution``: regularised evolution,

all through the same evaluator, with the same budget of inner trainings and the same search
seeds. Counted are inner trainings (landmarks and the CE reference included), never env steps.
Printed per task and method: best-so-far validation score at 25/50/100/200 trainings (those
within the budget), the final best, the trainings needed to reach random search's final best
(mean over seeds of random's final best; median over seeds, ``inf`` if never) and to 99 % of
random's gain over CE (near the top one validation sample decides the first race), and the verified
test score of the method's best loss (the best loss of each seed retrained at full length on
fresh seeds; mean over the method's seeds).

The last line printed is one JSON object::

    {"suite": str, "budget": int, "pretrain_budget": int, "seeds": int,
     "tasks": {task: {method: {"best_at": {n: float}, "final_best": float,
                               "to_random_best": float, "to_random_99": float, "test": float}}},
     "ce_test": {task: float},                  # CE's verified test score, for scale
     "to_random_best_ratio": {method: float},   # median over tasks of to_random_best / budget
                                                 # (null: never reached on the median task)
     "to_random_99_ratio": {method: float},     # the same for 99 % of random's gain over CE
     "target_met": bool}                         # pretrained ratio <= 1/3 on the median task and
                                                 # its mean test score >= random's

Usage::

    python benchmarks/pretrained_transfer.py --suite classification --seeds 3 --budget 100 \
        --pretrain-budget 1500
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_efficiency import best_so_far

DEFAULT_HOLDOUT = (
    "digits_sym40", "digits_clean", "mnist1d", "digits_pair30", "breast_cancer_sym30",
    "synth4_sym40",
)  # fmt: skip
METHODS = ("pretrained", "finetuned", "fresh", "random", "evolution")


def _finished(path: Path) -> bool:
    f = path / "summary.json"
    return f.is_file() and json.loads(f.read_text()).get("status") == "finished"


def _best_loss(path: Path) -> tuple[str, float] | None:
    with sqlite3.connect(path / "ledger.sqlite") as db:
        row = db.execute(
            "SELECT expression, score FROM evaluations WHERE status='ok' AND source='trained' "
            "ORDER BY score DESC, id LIMIT 1"
        ).fetchone()
    return (row[0], float(row[1])) if row else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", default="classification")
    ap.add_argument("--holdout", nargs="+", default=list(DEFAULT_HOLDOUT))
    ap.add_argument("--agent", default="maskable_ppo")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--pretrain-budget", type=int, default=None)
    ap.add_argument("--verify-seeds", type=int, default=5)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument(
        "--pretrain-once",
        action="store_true",
        help="one pretraining without all held-out tasks instead of one per task",
    )
    ap.add_argument("--out", type=Path, default=Path("results/bench_pretrained_transfer"))
    args = ap.parse_args()

    from loss_rl._search import Search
    from loss_rl.agents.cards import CARD_JSON
    from loss_rl.expr import parse
    from loss_rl.presets import load_suite
    from loss_rl.pretrain import Pretraining
    from loss_rl.verify import verify

    suite = load_suite(args.suite)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoints = [n for n in (25, 50, 100, 200) if n <= args.budget]
    report: dict[str, dict[str, dict]] = {}
    ce_tests: dict[str, float] = {}
    t_start = time.perf_counter()
    for task in args.holdout:
        suite.task(task)  # fail early on a typo
    for task in args.holdout:
        # Leave-one-out: pretrain without T. --pretrain-once: one policy pretrained without any
        # held-out task serves them all (stricter: it saw none of them; and 1 pretraining, not n).
        left_out = args.holdout if args.pretrain_once else [task]
        folder = args.out / ("pretrain_without_holdout" if args.pretrain_once
                             else f"pretrain_without_{task}")  # fmt: skip
        if not (folder / CARD_JSON).is_file():
            if folder.exists():
                p = Pretraining.open(folder)
            else:
                p = Pretraining.create(suite, args.agent, budget=args.pretrain_budget,
                                       seed=0, exclude=left_out, out=args.out,
                                       name=folder.name)  # fmt: skip
            t0 = time.perf_counter()
            p.run()
            print(f"[{', '.join(left_out)}] pretrained without in {time.perf_counter() - t0:.0f} s",
                  flush=True)  # fmt: skip
        curves: dict[str, list[np.ndarray]] = {}
        bests: dict[str, list[str]] = {}
        for method in args.methods:
            for seed in range(args.seeds):
                path = args.out / f"{task}_{method}_s{seed}"
                if not _finished(path):
                    if path.exists():
                        s = Search.open(path)
                    else:
                        agent = {"random": "random", "evolution": "evolution"}.get(
                            method, args.agent
                        )
                        init = folder if method in ("pretrained", "finetuned") else None
                        s = Search.create(f"{args.suite}:{task}", agent, budget=args.budget,
                                          seed=seed, out=args.out, name=path.name,
                                          init_agent=init,
                                          train=method != "pretrained")  # fmt: skip
                    s.run(verify_top=False)
                curves.setdefault(method, []).append(best_so_far(path, args.budget))
                b = _best_loss(path)
                if b is not None:
                    bests.setdefault(method, []).append(b[0])
        # Verify every method's best losses together: one batched pass, paired seeds, test split.
        preset = suite.task(task)
        unique = sorted({e for es in bests.values() for e in es})
        table = verify({f"cand_{i}": parse(e) for i, e in enumerate(unique)}, preset.task,
                       seeds=args.verify_seeds, references=("ce",))  # fmt: skip
        test_of = {unique[int(r.loss[5:])]: float(r.mean) for r in table.itertuples()
                   if r.loss.startswith("cand_")}  # fmt: skip
        ce_test = float(table.loc[table["loss"] == "ce", "mean"].iloc[0])
        random_final = float(np.mean([c[-1] for c in curves["random"]]))
        # Near the top one validation sample decides the race to random's final best, so also
        # count the trainings to 99 % of random's gain over CE (the first training of every run).
        start = float(np.mean([c[0] for cs in curves.values() for c in cs]))
        random_99 = start + 0.99 * (random_final - start)

        def first_hit(c: np.ndarray, level: float) -> float:
            hit = np.nonzero(c >= level - 1e-9)[0]
            return float(hit[0] + 1) if hit.size else math.inf

        rows: dict[str, dict] = {}
        for method, cs in curves.items():
            arr = np.stack(cs)
            to_best = [first_hit(c, random_final) for c in cs]
            to_99 = [first_hit(c, random_99) for c in cs]
            rows[method] = {
                "best_at": {
                    str(n): round(float(np.nanmean(arr[:, n - 1])), 4) for n in checkpoints
                },
                "final_best": round(float(np.nanmean(arr[:, -1])), 4),
                "to_random_best": float(np.median(to_best)),
                "to_random_99": float(np.median(to_99)),
                "test": round(float(np.mean([test_of[e] for e in bests.get(method, [])])), 4)
                if bests.get(method)
                else float("nan"),
            }
        report[task] = rows
        ce_tests[task] = round(ce_test, 4)
        print(
            f"\n[{task}] random final best (mean of {args.seeds} seeds) {random_final:.4f}; "
            f"CE test {ce_test:.4f}"
        )
        head = " ".join(f"@{n:>4}" for n in checkpoints)
        print(f"{'method':11s} {head}   final  to_random_best  to_random_99  test")
        for m, r in rows.items():
            at = " ".join(f"{r['best_at'][str(n)]:.4f}"[1:].rjust(5) for n in checkpoints)
            print(f"{m:11s} {at}  {r['final_best']:.4f}  {r['to_random_best']:>14}  "
                  f"{r['to_random_99']:>12}  {r['test']:.4f}", flush=True)  # fmt: skip
    ratio = {
        m: float(np.median([report[t][m]["to_random_best"] / args.budget for t in report]))
        for m in args.methods
    }
    ratio_99 = {
        m: float(np.median([report[t][m]["to_random_99"] / args.budget for t in report]))
        for m in args.methods
    }
    test_mean = {m: float(np.mean([report[t][m]["test"] for t in report])) for m in args.methods}
    summary = {m: round(float(np.mean([report[t][m]["final_best"] for t in report])), 4)
               for m in args.methods}  # fmt: skip
    target = (
        "pretrained" in ratio and "random" in test_mean
        and ratio["pretrained"] <= 1 / 3 and test_mean["pretrained"] >= test_mean["random"]
    )  # fmt: skip
    print(f"\nmedian over tasks of trainings to random's final best / budget: {ratio}")
    print(f"median over tasks of trainings to 99 % of random's gain / budget: {ratio_99}")
    print(f"mean verified test score: { {m: round(v, 4) for m, v in test_mean.items()} }")
    print(f"wall {time.perf_counter() - t_start:.0f} s")

    def clean(v: object) -> object:  # JSON has no infinity: "never reached" is null
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return None if isinstance(v, float) and math.isinf(v) else v

    print(json.dumps(clean({
        "suite": args.suite, "budget": args.budget,
        "pretrain_budget": args.pretrain_budget or suite.pretrain_budget, "seeds": args.seeds,
        "tasks": report, "ce_test": ce_tests, "to_random_best_ratio": ratio,
        "to_random_99_ratio": ratio_99,
        "test_mean": {m: round(v, 4) for m, v in test_mean.items()},
        "final_best_mean": summary, "target_met": bool(target),
    })))  # fmt: skip


if __name__ == "__main__":
    main()
