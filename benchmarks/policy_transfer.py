"""Policy transfer: does a policy trained on one task reach a score sooner on a task it never saw?

A MaskablePPO policy is trained on ``--source-env`` (or taken from ``--source-run``), then three
searches run on ``--target-env`` at the same budget of inner trainings, for several seeds:
``fresh`` (a new agent), ``fine-tuned`` (``--init-agent``: starts from the trained policy and
keeps learning) and ``rollout`` (``--no-train``: the trained policy only samples). Printed: the
trainings each needed to reach ``--target`` validation score (median over seeds, ``inf`` if never)
and the final best. Source and target presets must share the search space (same terms/grids).

The last line printed is one JSON object::

    {"source": str, "target_env": str, "budget": int, "seeds": int, "threshold": float,
     "methods": {name: {"to_threshold": float, "reached": int, "final_best": float}}}

Usage::

    python benchmarks/policy_transfer.py --source-env digits_noisy --target-env digits_clean \\
        --budget 64 --seeds 3 --target 0.98
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source-env", default="digits_noisy")
    ap.add_argument("--source-run", type=Path, default=None, help="reuse a trained run")
    ap.add_argument("--source-budget", type=int, default=150)
    ap.add_argument("--target-env", default="digits_clean")
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.98, help="validation score to reach")
    ap.add_argument("--out", type=Path, default=Path("results/bench_policy_transfer"))
    args = ap.parse_args()

    from loss_rl import Search

    sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmark's curve helper
    from search_efficiency import best_so_far

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    source = args.source_run
    if source is None:
        src = Search.create(args.source_env, "maskable_ppo", budget=args.source_budget,
                            out=args.out, name="source")  # fmt: skip
        src.run(verify_top=False)
        source = src.path

    methods = {
        "fresh": {"agent": "maskable_ppo"},
        "fine-tuned": {"agent": "maskable_ppo", "init_agent": source},
        "rollout": {"agent": source, "train": False},
    }
    report = {}
    for name, kw in methods.items():
        hits, finals = [], []
        for seed in range(args.seeds):
            s = Search.create(args.target_env, budget=args.budget, seed=seed, out=args.out,
                              name=f"{name}_s{seed}", **kw)  # type: ignore[arg-type]  # fmt: skip
            s.run(verify_top=False)
            c = best_so_far(s.path, args.budget)
            idx = np.flatnonzero(c >= args.target)
            hits.append(float(idx[0] + 1) if len(idx) else math.inf)
            finals.append(float(c[-1]))
        report[name] = {
            "to_threshold": float(np.median(hits)),
            "reached": int(np.isfinite(hits).sum()),
            "final_best": float(np.mean(finals)),
        }
        print(f"{name:11s} trainings to {args.target}: {report[name]['to_threshold']:6.1f} "
              f"(reached {report[name]['reached']}/{args.seeds}), final best "
              f"{report[name]['final_best']:.4f}", flush=True)  # fmt: skip
    print(json.dumps({"source": str(source), "target_env": args.target_env,
                      "budget": args.budget, "seeds": args.seeds, "threshold": args.target,
                      "methods": report}))  # fmt: skip


if __name__ == "__main__":
    main()
