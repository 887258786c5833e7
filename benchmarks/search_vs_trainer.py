"""How busy does a search keep the batched trainer? (one run, printed ratios)

(a) search: a real search (default: env ``synthetic_noisy``, agent ``maskable_ppo``, budget 300,
    verification off) in a temporary folder. Its end-to-end rate is trained models per second:
    trainings (the ledger's ``source == "trained"`` rows) × seeds per training, divided by
    ``summary.json``'s ``wall_seconds`` (the search loop; the trainer's workers are started
    before it). ``train_seconds`` is the evaluator's own time inside the trainer.
    Batch sizes come from the ledger's ``batch`` column: one id per evaluator call (the ledger
    records each ``Evaluator.evaluate`` call as one batch); a call's new candidates are its
    ``trained`` rows, and the calls with at least one are the trainer's calls.
(b) trainer alone at the same batch size: :func:`loss_rl.training.train` on the search's own
    trained expressions (distinct, in the order it trained them) in ``--chunks`` chunks of the
    median new candidates per trainer call, the chunks spread evenly over the search (same
    task, ``task.training.steps``, seeds, data seed and default worker setting as the
    evaluator), one call per chunk; ``--repeats`` passes, median models/s;
(b') the search's own trainer calls replayed as they were (``--chunks`` of them, spread evenly
    over the search): the same sizes *and* the same mix of loss structures (losses of one
    structure train fused; ``structs`` in the table is the mean number of distinct structures
    per call);
(c) one large batch (``--large`` candidates, default 64): the trainer's best case.
The passes of (b), (b') and (c) are interleaved, so they see the same load.

The trainer's workers are warm when (b) and (c) run (the search started them), and the
expressions were already seen once by the search: (b) is the trainer's rate without anything
of the search around it, not a cold start.

The last line printed is JSON with keys: ``search_models_per_s``, ``evaluator_models_per_s``
(models / ``train_seconds``), ``trainer_models_per_s_same_batch``,
``trainer_models_per_s_large_batch``, ``search_vs_trainer`` (search / (b)),
``search_vs_trainer_large`` (search / (c)), ``trainer_models_per_s_replay`` (b'),
``search_vs_trainer_replay`` (search / (b')), ``evaluator_vs_trainer`` (evaluator / (b)),
``median_batch_candidates``, ``mean_batch_candidates`` (per trainer call),
``median_batch_candidates_all_calls``, ``mean_batch_candidates_all_calls`` (per evaluator call,
calls answered without training included), ``evaluator_calls``, ``trainer_calls``,
``same_batch_candidates``, ``replayed_calls``, ``structures_per_call`` (the search's),
``structures_per_same_batch`` (b's), ``large_batch_candidates``, ``seeds``, ``steps``,
``trainings``, ``proposed``, ``cached``, ``rejected``, ``diverged``, ``wall_seconds``,
``train_seconds``, ``train_share`` (train_seconds / wall_seconds), ``budget``, ``env``,
``agent``, ``workers``, ``cores``, ``load_avg_before``.

Run ``python benchmarks/search_vs_trainer.py --help`` for smaller runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence

from loss_rl import Search, load_run, parse
from loss_rl.expr import Expr
from loss_rl.tasks import TaskConfig
from loss_rl.training import default_workers, structure, train


def time_pass(
    chunks: Sequence[Sequence[Expr]],
    task: TaskConfig,
    steps: int,
    seeds: Sequence[int],
    data_seed: int | None,
) -> float:
    """Trained models per second of one pass: one :func:`train` call per chunk."""
    models = 0
    start = time.perf_counter()
    for chunk in chunks:
        models += len(train(chunk, task, steps, seeds, data_seed=data_seed))
    return models / (time.perf_counter() - start)


def spread_chunks(exprs: Sequence[Expr], size: int, n: int) -> list[list[Expr]]:
    """``n`` chunks of ``size`` consecutive losses, their starts spread evenly over ``exprs``."""
    if len(exprs) <= size * n:
        pool = itertools.cycle(exprs)
        return [[next(pool) for _ in range(size)] for _ in range(n)]
    step = (len(exprs) - size) / max(n - 1, 1)
    return [list(exprs[round(i * step) : round(i * step) + size]) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="synthetic_noisy", help="env preset (name or path)")
    parser.add_argument("--agent", default="maskable_ppo", help="agent preset (name or path)")
    parser.add_argument("--budget", type=int, default=300, help="inner trainings of the search")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search")
    parser.add_argument("--chunks", type=int, default=12, help="same-batch trainer calls per pass")
    parser.add_argument("--large", type=int, default=64, help="candidates of the large batch")
    parser.add_argument("--repeats", type=int, default=3, help="trainer passes timed (median)")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = default_workers()
    print(f"load average before: {load:.2f} (the CPU may be shared with other jobs)")

    with tempfile.TemporaryDirectory(prefix="search_vs_trainer_") as tmp:
        search = Search.create(
            args.env, args.agent, budget=args.budget, seed=args.seed, out=tmp, name="bench"
        )
        start = time.perf_counter()
        run = search.run(None, verify_top=False)
        outer = time.perf_counter() - start
        summary = run.summary
        ledger = load_run(run.path).ledger

    preset = search.env_preset
    task = preset.task
    steps = int(task.training.steps)
    seeds = [int(s) for s in preset.evaluation.seeds]
    data_seed = preset.evaluation.data_seed

    trained = ledger[ledger["source"] == "trained"]
    per_call = ledger.groupby("batch")["source"].apply(lambda s: int((s == "trained").sum()))
    train_calls = per_call[per_call > 0]
    trainings = len(trained)
    models = trainings * len(seeds)
    wall = float(summary["wall_seconds"])
    train_s = float(summary["train_seconds"])
    search_rate = models / wall
    evaluator_rate = models / train_s if train_s > 0 else float("nan")
    median_batch = float(statistics.median(train_calls)) if len(train_calls) else 0.0
    mean_batch = float(train_calls.mean()) if len(train_calls) else 0.0
    counts = summary["evaluations"]

    # The search's own trained losses, distinct, in the order it trained them.
    exprs = [parse(e) for e in dict.fromkeys(trained["expression"])]
    if not exprs:
        raise SystemExit("the search trained nothing: nothing to compare")
    same = max(1, round(median_batch))
    same_chunks = spread_chunks(exprs, same, args.chunks)
    large_chunk = spread_chunks(exprs, args.large, 1)[0]
    # The search's own trainer calls, replayed as they were: ``--chunks`` of them, spread evenly.
    calls = [[parse(e) for e in g["expression"]] for _, g in trained.groupby("batch", sort=True)]
    picks = sorted(
        {round(i * (len(calls) - 1) / max(args.chunks - 1, 1)) for i in range(args.chunks)}
    )
    replay = [calls[i] for i in picks]

    def structures(chunks: Sequence[Sequence[Expr]]) -> float:
        return statistics.mean(len({structure(e) for e in c}) for c in chunks)

    # Warm-up of both sizes: a small batch may train in this process, a large one in the workers.
    train(same_chunks[0], task, steps, seeds, data_seed=data_seed)
    train(large_chunk, task, steps, seeds, data_seed=data_seed)
    same_rates, replay_rates, large_rates = [], [], []
    for _ in range(args.repeats):  # interleaved: all three see the same load
        same_rates.append(time_pass(same_chunks, task, steps, seeds, data_seed))
        replay_rates.append(time_pass(replay, task, steps, seeds, data_seed))
        large_rates.append(time_pass([large_chunk], task, steps, seeds, data_seed))
    same_rate = statistics.median(same_rates)
    replay_rate = statistics.median(replay_rates)
    large_rate = statistics.median(large_rates)

    hist = ", ".join(f"{k}: {v}" for k, v in sorted(train_calls.value_counts().items()))
    print(
        f"search: {args.env} / {args.agent}, budget {args.budget}: {trainings} trainings x "
        f"{len(seeds)} seeds = {models} models, {steps} steps each; proposed "
        f"{counts['proposed']}, cached {counts['cached']}, rejected {counts['rejected']}, "
        f"diverged {counts['diverged']}"
    )
    print(
        f"evaluator calls: {len(per_call)}, of which {len(train_calls)} trained something; new "
        f"candidates per trainer call: mean {mean_batch:.2f}, median {median_batch:g} "
        f"(size: calls — {hist}); per evaluator call: mean {per_call.mean():.2f}, median "
        f"{statistics.median(per_call):g}"
    )
    print(
        f"wall {wall:.1f} s (run() {outer:.1f} s), in the trainer {train_s:.1f} s "
        f"({100 * train_s / wall:.1f} %), outside it {wall - train_s:.1f} s "
        f"({100 * (1 - train_s / wall):.1f} %); {workers} worker(s), {cores} core(s)"
    )
    print()
    search_structures = structures(calls) if calls else 0.0

    def passes(rates: Sequence[float]) -> str:
        return ", ".join(f"{r:.1f}" for r in rates)

    rows = [
        ("(a) search, end to end", search_rate, mean_batch, search_structures, ""),
        ("    evaluator's trainer time", evaluator_rate, mean_batch, search_structures, ""),
        (
            "(b) trainer alone, same batch",
            same_rate,
            same,
            structures(same_chunks),
            passes(same_rates),
        ),
        (
            "(b') trainer, search's calls",
            replay_rate,
            statistics.mean(len(c) for c in replay),
            structures(replay),
            passes(replay_rates),
        ),
        (
            "(c) trainer alone, large batch",
            large_rate,
            args.large,
            structures([large_chunk]),
            passes(large_rates),
        ),
    ]
    print(f"{'':32s} {'models/s':>9s} {'cands/call':>10s} {'structs':>7s} {'vs (b)':>7s}  passes")
    for label, rate, batch, structs, ps in rows:
        print(f"{label:32s} {rate:9.2f} {batch:10.2f} {structs:7.2f} {rate / same_rate:7.2f}  {ps}")
    print()
    print(
        json.dumps(
            {
                "search_models_per_s": round(search_rate, 3),
                "evaluator_models_per_s": round(evaluator_rate, 3),
                "trainer_models_per_s_same_batch": round(same_rate, 3),
                "trainer_models_per_s_large_batch": round(large_rate, 3),
                "search_vs_trainer": round(search_rate / same_rate, 3),
                "search_vs_trainer_large": round(search_rate / large_rate, 3),
                "trainer_models_per_s_replay": round(replay_rate, 3),
                "search_vs_trainer_replay": round(search_rate / replay_rate, 3),
                "evaluator_vs_trainer": round(evaluator_rate / same_rate, 3),
                "median_batch_candidates": median_batch,
                "mean_batch_candidates": round(mean_batch, 3),
                "median_batch_candidates_all_calls": float(statistics.median(per_call)),
                "mean_batch_candidates_all_calls": round(float(per_call.mean()), 3),
                "evaluator_calls": len(per_call),
                "trainer_calls": len(train_calls),
                "same_batch_candidates": same,
                "replayed_calls": len(replay),
                "structures_per_call": round(search_structures, 3),
                "structures_per_same_batch": round(structures(same_chunks), 3),
                "large_batch_candidates": args.large,
                "seeds": len(seeds),
                "steps": steps,
                "trainings": trainings,
                "proposed": counts["proposed"],
                "cached": counts["cached"],
                "rejected": counts["rejected"],
                "diverged": counts["diverged"],
                "wall_seconds": round(wall, 2),
                "train_seconds": round(train_s, 2),
                "train_share": round(train_s / wall, 3),
                "budget": args.budget,
                "env": args.env,
                "agent": args.agent,
                "workers": workers,
                "cores": cores,
                "load_avg_before": round(load, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
