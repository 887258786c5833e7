"""Refined vs unrefined vs CE: meta-gradient refinement of a loss's constants on two tasks.

For each env preset, a source loss has its constants refined by
:func:`loss_rl.meta.refine` (unrolled meta-gradients through the task's own Adam training,
support = train minibatches, query = val), then the refined loss, the unrefined loss and CE are
verified by :func:`loss_rl.verify.verify` (the search's verification code) on the *test* split
with the same fresh paired seeds.

Default sources (no RL run is assumed; pass ``--source ENV=EXPR`` for e.g. the best loss of a
run):

- ``digits_noisy`` (40 % symmetric label noise): GCE with q = 0.3, a mostly CE-like GCE that still
  memorises wrong labels; refinement should move q towards the robust region.
- ``mnist1d`` (clean): label smoothing with α = 0.1.

Usage::

    python benchmarks/meta_refine.py                      # both envs, 10 seeds
    python benchmarks/meta_refine.py --envs digits_noisy --seeds 3 --meta-steps digits_noisy=3
    python benchmarks/meta_refine.py --verify-steps mnist1d=1000 --inner-steps mnist1d=1000

The last stdout line is one JSON object of headline figures. For every env ``E`` (``digits_noisy``,
``mnist1d``) it holds:

- ``E_ce``, ``E_unrefined``, ``E_refined``: mean test score (accuracy) over the seeds;
- ``E_refined_minus_unrefined`` and ``E_p_refined_vs_unrefined``: paired difference and paired
  t-test p-value;
- ``E_refined_minus_ce`` and ``E_p_refined_vs_ce``: the same against CE;
- ``E_unrefined_minus_ce``: the unrefined loss against CE;
- ``E_source`` and ``E_refined_expr``: the expressions;
- ``E_meta_loss_first`` and ``E_meta_loss_last``: query loss over the first and last fifth of
  the outer steps;
- ``E_seconds_refine`` and ``E_seconds_verify``: wall time;

plus ``seeds`` (number of paired seeds), ``verify_steps`` (per env) and ``objective``.
Non-finite numbers are written as ``null``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from loss_rl import refine
from loss_rl.expr import known_loss
from loss_rl.meta import MetaProgress

DEFAULT_SOURCES = {
    "digits_noisy": str(known_loss("gce", q=0.3)),
    "mnist1d": str(known_loss("label_smoothing", alpha=0.1)),
}
# Outer budget per env: the inner horizon is the preset's full_steps (300 on digits, 2000 on
# MNIST-1D), so MNIST-1D gets fewer, single-episode outer steps to fit ~5 minutes on 2 cores.
DEFAULT_META_STEPS = {"digits_noisy": 30, "mnist1d": 20}
DEFAULT_TASKS_PER_STEP = {"digits_noisy": 2, "mnist1d": 1}


def _per_env(values: list[str], cast: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in values:
        env, _, rest = v.partition("=")
        if not rest:
            raise SystemExit(f"expected ENV=VALUE, got {v!r}")
        out[env] = cast(rest)
    return out


def _fmt(x: float, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "  n/a"
    return f"{100 * x:6.2f}" if pct else f"{x:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", nargs="+", default=["digits_noisy", "mnist1d"])
    ap.add_argument("--seeds", type=int, default=10, help="fresh paired verification seeds")
    ap.add_argument(
        "--meta-steps",
        nargs="*",
        default=[],
        metavar="ENV=N",
        help=f"outer steps (default {DEFAULT_META_STEPS}, else 30)",
    )
    ap.add_argument(
        "--tasks-per-step",
        nargs="*",
        default=[],
        metavar="ENV=N",
        help=f"episodes per outer step (default {DEFAULT_TASKS_PER_STEP}, else 2)",
    )
    ap.add_argument("--unroll", type=int, default=20)
    ap.add_argument("--meta-lr", type=float, default=0.05)
    ap.add_argument(
        "--inner-steps",
        nargs="*",
        default=[],
        metavar="ENV=K",
        help="inner steps per episode (default: the preset's full_steps)",
    )
    ap.add_argument(
        "--verify-steps",
        nargs="*",
        default=[],
        metavar="ENV=N",
        help="verification steps (default: the preset's training.full_steps)",
    )
    ap.add_argument("--source", nargs="*", default=[], metavar="ENV=EXPR")
    ap.add_argument("--objective", default="auto", choices=["auto", "ce", "soft_error"])
    ap.add_argument("--out", default="results/bench_meta_refine")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)

    inner = _per_env(args.inner_steps, int)
    meta_steps = {**DEFAULT_META_STEPS, **_per_env(args.meta_steps, int)}
    tasks = {**DEFAULT_TASKS_PER_STEP, **_per_env(args.tasks_per_step, int)}
    vsteps = _per_env(args.verify_steps, int)
    sources = {**DEFAULT_SOURCES, **_per_env(args.source, str)}
    head: dict[str, Any] = {"seeds": args.seeds, "objective": args.objective,
                            "verify_steps": {}}  # fmt: skip
    for env in args.envs:
        t0 = time.perf_counter()
        last = [0.0]

        def progress(p: MetaProgress, env: str = env, last: list[float] = last) -> None:
            if p.phase == "meta" and (p.step % 5 == 0 or p.step == p.total):
                print(
                    f"  [{env}] outer step {p.step}/{p.total}: meta-loss {p.meta_loss:.4f} "
                    f"|g| {p.grad_norm:.3g}{' (clipped)' if p.clipped else ''}",
                    flush=True,
                )
            last[0] = time.perf_counter()

        print(f"== {env}: refining {sources[env]}", flush=True)
        res = refine(sources[env], env, meta_steps=meta_steps.get(env, 30),
                     inner_steps=inner.get(env), unroll=args.unroll,
                     tasks_per_step=tasks.get(env, 2), meta_lr=args.meta_lr,
                     objective=args.objective, verify_seeds=args.seeds,
                     verify_steps=vsteps.get(env), references=["ce"],
                     out=Path(args.out) / env, progress=progress)  # fmt: skip
        t_refine = (last[0] or time.perf_counter()) - t0
        t_verify = time.perf_counter() - t0 - t_refine
        s = res.summary
        v = s["verification"]
        pair = s["refined_vs_unrefined"]
        print(f"  refined: {s['refined']}")
        for c in s["no_gradient_constants"]:
            print(f"  note: {c['message']}")
        print(f"  test {s.get('metric', 'score')} over {args.seeds} paired seeds, "
              f"{s.get('verification_steps')} steps:")  # fmt: skip
        print(f"  {'loss':<10} {'mean':>7} {'95% CI':>17} {'vs CE':>8} {'p':>8}")
        for name in ("refined", "unrefined", "ce"):
            r = v[name]
            print(f"  {name:<10} {_fmt(r['mean'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] "
                  f"{_fmt(r['diff_vs_ce']):>8} {_fmt(r['p_vs_ce'], False):>8}")  # fmt: skip
        print(f"  refined - unrefined: {_fmt(pair['diff'])} pts (paired p = "
              f"{_fmt(pair['p'], False)})", flush=True)  # fmt: skip
        head.update({
            f"{env}_source": s["original"],
            f"{env}_refined_expr": s["refined"],
            f"{env}_ce": v["ce"]["mean"],
            f"{env}_unrefined": v["unrefined"]["mean"],
            f"{env}_refined": v["refined"]["mean"],
            f"{env}_refined_minus_unrefined": pair["diff"],
            f"{env}_p_refined_vs_unrefined": pair["p"],
            f"{env}_refined_minus_ce": v["refined"]["diff_vs_ce"],
            f"{env}_p_refined_vs_ce": v["refined"]["p_vs_ce"],
            f"{env}_unrefined_minus_ce": v["unrefined"]["diff_vs_ce"],
            f"{env}_meta_loss_first": s["meta"]["meta_loss_first"],
            f"{env}_meta_loss_last": s["meta"]["meta_loss_last"],
            f"{env}_seconds_refine": round(t_refine, 1),
            f"{env}_seconds_verify": round(t_verify, 1),
        })  # fmt: skip
        head["verify_steps"][env] = s.get("verification_steps")
    print(json.dumps(head))


if __name__ == "__main__":
    main()
