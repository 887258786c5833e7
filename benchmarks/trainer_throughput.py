"""Throughput of the batched inner trainer against a plain PyTorch loop (one run, printed ratios).

Standard proxy: digits, MLP 64-64-10, Adam 1e-2, batch 128, 200 steps, 34 different losses
(the classification losses of the known-loss library, variants of their hyper-parameters and a
dozen hand-written expressions — what a search proposes).

(a) plain loop: :func:`loss_rl.training.train_reference` — one ``nn.Module``, ``torch.optim.Adam``,
    the compiled loss and autograd, one model at a time. Timed with torch's default thread count
    and with one thread; the faster one is the baseline.
(b) batched: :func:`loss_rl.training.train` on all losses in one pass (worker processes of one
    thread each), after a warm-up call that starts the workers, with checkpoint selection
    (``select: best``, a validation check every 50 steps: the default protocol);
(c) the same without checkpoint selection (``select: last``), its passes interleaved with (b)'s,
    so that ``selection_cost`` (1 − b/c) is measured under the same load;
(d) the machine's practical FP32 matmul peak at the trainer's shapes: ``torch.bmm`` of
    ``[N, 128, 64] @ [N, 64, 64]`` (the hidden layer of the MLP 64-64 at batch 128; ``N`` the
    models of the batched pass), timed for ≥ 1 s after a few warm-up calls, after each pair of
    (b)/(c) passes (the median is reported, so that it sees the same load). It is measured the
    way (b) runs: in the same worker processes of one thread each, every worker timing its share
    (``N / workers`` models) at the same time, and the peak is the *sum* of their GFLOP/s. One
    process with that many threads measures a setup the trainer does not use, and one that
    collapses when another job holds a core (measured on the 2-core machine with another job
    running: 5 GFLOP/s for one process × 2 threads, 64 summed over 2 workers; see
    :mod:`loss_rl.training._workers`). ``fraction_of_peak`` is (b)'s matmul GFLOP/s over this
    peak.

Where the rest of the step goes: the same population with parts of the step taken away, each as
``fraction_of_peak`` would read if the trainer were only that part (a ladder: each rung does
less than the one before it, so its fraction bounds what the trainer can reach by speeding up
the parts it leaves out):

(e) ``fraction_ce``: the batched pass of (b) with every model training cross-entropy (one
    structure group: the loss programs at their cheapest), its passes interleaved with (b)'s;
(f) ``fraction_model_step``: in the same worker processes, each on its share of the models, the
    step of the stacked model alone — :class:`~loss_rl.training.StackedModel`'s forward and
    backward and the Adam update, on a fixed minibatch and a fixed ``dL/dZ`` (no loss, no
    divergence check, no minibatch gather, no validation checks);
(g) ``fraction_matmuls``: the step's matmuls alone, at the trainer's shapes and in the layouts
    the trainer uses (outputs narrower than 16 computed transposed: see ``_dense``), every
    other op free.

``gflop_per_eval`` counts the matmuls the trainer does per step — forward, weight gradients and
input gradients (all layers but the first) — not the validation checks' forward passes.

The last line printed is JSON with keys: ``plain_evals_per_s``, ``plain_threads``,
``batched_evals_per_s``, ``ratio`` (b/a), ``select_last_evals_per_s`` (c),
``selection_cost`` (1 − b/c), ``gflop_per_eval``, ``plain_gflops``,
``batched_gflops``, ``bmm_peak_gflops``, ``fraction_of_peak`` (batched over peak GFLOP/s),
``ce_evals_per_s`` (e), ``fraction_ce``, ``fraction_model_step`` (f), ``fraction_matmuls``
(g), ``n_losses``, ``n_structures``, ``seeds``, ``steps``, ``workers``, ``device``, ``cores``,
``load_avg_before``.

``--device cuda`` (or ``auto``) runs (b)-(d) on the GPU (the whole population in this process;
the peak is then the GPU's ``bmm`` at the same shapes), (a) stays the CPU's plain loop.

Run ``python benchmarks/trainer_throughput.py --help`` for smaller runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from loss_rl.expr import Expr, known_loss, parse
from loss_rl.tasks import TaskConfig, build_model, load_task
from loss_rl.training import (
    StackedModel,
    default_workers,
    make_optimizer,
    resolve_device,
    structure,
    train,
    train_reference,
)
from loss_rl.training._workers import run_chunks

HAND_WRITTEN = (
    "sum_c(square(p - t))",
    "tanh(-log_p_y)",
    "1 - p_y",
    "-log_p_y + 0.5 * (1 - p_y)^2",
    "sqrt(-log_p_y)",
    "min(-log_p_y, 2)",
    "-log(p_y + 0.1)",
    "(1 - p_y)^2",
    "softplus(-log_p_y) - 0.6931471805599453",
    "exp(-p_y)",
    "-log_p_y * (1 - p_y + 0.1)",
    "sum_c(abs(p - t)) - 0.1 * log_p_y",
)


def benchmark_losses() -> list[tuple[str, Expr]]:
    """34 diverse classification losses: ``(label, expression)``."""
    named = [
        "ce",
        "label_smoothing",
        "focal",
        "mae",
        "gce",
        "sce",
        "nce_rce",
        "poly1",
        "baikal",
        "taylor_glo",
    ]
    out = [(n, known_loss(n)) for n in named]
    out += [(f"gce q={q}", known_loss("gce", q=q)) for q in (0.3, 0.5, 0.9)]
    out += [(f"focal g={g}", known_loss("focal", gamma=g)) for g in (0.5, 1.0, 3.0)]
    out += [(f"ls a={a}", known_loss("label_smoothing", alpha=a)) for a in (0.05, 0.2, 0.3)]
    out += [(f"poly1 e={e}", known_loss("poly1", epsilon=e)) for e in (-1.0, 2.0)]
    out += [("sce a=0.5 b=0.5", known_loss("sce", alpha=0.5, beta=0.5))]
    out += [(s, parse(s)) for s in HAND_WRITTEN]
    return out


def mlp_step_flops(widths: Sequence[int], batch: int) -> int:
    """Matmul FLOPs of one model's training step: forward, weight and input gradients."""
    macs = [a * b for a, b in itertools.pairwise(widths)]
    return 2 * batch * (2 * sum(macs) + sum(macs[1:]))


def mlp_shape(task: TaskConfig) -> tuple[list[int], int]:
    """Layer widths (inputs to outputs) and minibatch size of an MLP task."""
    data = load_task(task, 0)
    widths = [data.num_features, *task.model.hidden, data.num_outputs]
    return widths, min(task.training.batch_size, len(data.train))


def bmm_gflops(n_models: int, min_seconds: float = 1.0, device: str = "cpu") -> float:
    """GFLOP/s of FP32 ``torch.bmm`` ``[n, 128, 64] @ [n, 64, 64]`` in this process."""
    a = torch.randn(n_models, 128, 64, device=device)
    b = torch.randn(n_models, 64, 64, device=device)
    out = torch.empty(n_models, 128, 64, device=device)
    flop = 2 * n_models * 128 * 64 * 64
    return _timed_gflops(lambda: torch.bmm(a, b, out=out), flop, device, min_seconds)


def in_workers(
    fn: Callable[..., float], args: tuple[object, ...], n_models: int, workers: int, device: str
) -> float:
    """Summed GFLOP/s of ``fn(*args, n_models / workers)`` run in every worker process at once
    (each one thread, as the trainer's); on a GPU, ``fn`` on all ``n_models`` in this process."""
    if device != "cpu":
        return fn(*args, n_models, 1.0, device)
    if workers <= 1:
        return fn(*args, n_models)
    share = math.ceil(n_models / workers)
    return sum(run_chunks(fn, [(*args, share)] * workers))


def _timed_gflops(step: Callable[[], None], flop: float, device: str, min_seconds: float) -> float:
    """GFLOP/s of ``step`` (``flop`` FLOPs a call), timed for ``min_seconds`` after warm-up."""
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    for _ in range(10):
        step()
    sync()
    reps, elapsed = 0, 0.0
    start = time.perf_counter()
    while elapsed < min_seconds:
        for _ in range(20):
            step()
        sync()
        reps += 20
        elapsed = time.perf_counter() - start
    return flop * reps / elapsed / 1e9


def model_step_gflops(
    task_dict: dict[str, object], n_models: int, min_seconds: float = 1.0, device: str = "cpu"
) -> float:
    """Matmul GFLOP/s of the stacked model's step alone: forward, backward, Adam (rung (f))."""
    task = TaskConfig.from_dict(task_dict)
    widths, batch = mlp_shape(task)
    n_in, n_out = widths[0], widths[-1]
    inits = [build_model(task.model, n_in, n_out, seed=s) for s in (0, 1)]
    model = StackedModel(
        task.model,
        n_in,
        n_out,
        inits,
        [m % 2 for m in range(n_models)],
        device=torch.device(device),
    )
    optimizer = make_optimizer(model.params, task.training)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, batch, n_in, generator=gen).to(device)
    x = x.expand(n_models, *x.shape[1:])
    dz = (torch.randn(n_models, batch, n_out, generator=gen) * 1e-3).to(device)

    def step() -> None:
        model.train_forward(x)
        grads = model.train_backward(dz)
        with torch.no_grad():
            optimizer.step(model.params, grads)

    flop = n_models * mlp_step_flops(widths, batch)
    return _timed_gflops(step, flop, device, min_seconds)


def matmul_step_gflops(
    widths: list[int], batch: int, n_models: int, min_seconds: float = 1.0, device: str = "cpu"
) -> float:
    """GFLOP/s of the MLP step's matmuls alone, in the trainer's layouts (rung (g))."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    layers = list(itertools.pairwise(widths))
    hs = [rand(n_models, batch, a) for a, _ in layers]  # each layer's input
    gs = [rand(n_models, batch, b) for _, b in layers]  # each layer's output gradient
    ws = [rand(n_models, a, b) for a, b in layers]
    bs = [rand(n_models, b) for _, b in layers]
    wgrads = [torch.empty(n_models, a, b, device=device) for a, b in layers]
    narrow = 16  # the trainer's _NARROW_OUTPUT: narrower outputs are computed transposed

    def step() -> None:
        for h, w, b in zip(hs, ws, bs, strict=True):
            if w.shape[-1] < narrow:
                out = torch.baddbmm(b.unsqueeze(-1), w.transpose(1, 2), h.transpose(1, 2))
                out.transpose(1, 2).contiguous()
            else:
                torch.baddbmm(b.unsqueeze(1), h, w)
        for j in reversed(range(len(layers))):
            h, g, out = hs[j], gs[j], wgrads[j]
            if out.shape[-1] < narrow:
                out.copy_(torch.bmm(g.transpose(1, 2), h).transpose(1, 2))
            else:
                torch.bmm(h.transpose(1, 2), g, out=out)
            if j > 0:
                torch.bmm(g, ws[j].transpose(1, 2))

    flop = n_models * mlp_step_flops(widths, batch)
    return _timed_gflops(step, flop, device, min_seconds)


def time_plain(losses: list[Expr], task: TaskConfig, steps: int, threads: int) -> float:
    """Evaluations per second of the plain loop with ``threads`` torch threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        train_reference(losses[0], task, 5, 0)  # warm-up
        start = time.perf_counter()
        for i, loss in enumerate(losses):
            train_reference(loss, task, steps, i)
        return len(losses) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--losses", type=int, default=34, help="number of losses (max 34)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=1, help="paired seeds per loss (batched)")
    parser.add_argument("--plain-evals", type=int, default=8, help="plain-loop trainings timed")
    parser.add_argument("--repeats", type=int, default=3, help="batched passes timed (median)")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--scores", default=None, help="write each loss's score (last pass) here")
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda or auto: where (b)-(d) run (a: the CPU)"
    )
    args = parser.parse_args()

    load = os.getloadavg()[0]
    task = TaskConfig.from_dict(
        {
            "dataset": "digits",
            "model": {"kind": "mlp", "widths": [64, 64]},
            "training": {"optimizer": "adam", "lr": 1e-2, "batch_size": 128, "steps": args.steps},
        }
    )
    labelled = benchmark_losses()[: args.losses]
    losses = [e for _, e in labelled]
    device = str(resolve_device(args.device))
    workers = default_workers() if args.workers is None else args.workers
    if device != "cpu":
        workers = 0  # a GPU trains the whole population in this process
    cores = torch.get_num_threads()
    print(f"load average before: {load:.2f} (the CPU may be shared with other jobs)")

    plain = {
        t: time_plain(losses[: args.plain_evals], task, args.steps, t) for t in sorted({cores, 1})
    }
    plain_threads = max(plain, key=lambda t: plain[t])
    for t, v in plain.items():
        print(f"(a) plain loop, {t} thread(s): {v:6.2f} evaluations/s")

    seeds = list(range(args.seeds))
    train(losses[:4], task, 5, seeds, workers=workers, device=device)  # warm-up (workers, CUDA)
    last_task = TaskConfig.from_dict(
        {**task.to_dict(), "training": {**task.training.to_dict(), "select": "last"}}
    )
    ce = [known_loss("ce")] * len(losses)
    n_models = len(losses) * args.seeds
    widths, batch = mlp_shape(task)
    rates, last_rates, ce_rates, peaks, model_steps, matmuls = [], [], [], [], [], []
    for _ in range(args.repeats):
        for t, pop, out in (
            (task, losses, rates),
            (last_task, losses, last_rates),
            (task, ce, ce_rates),
        ):
            start = time.perf_counter()
            results = train(pop, t, args.steps, seeds, workers=workers, device=device)
            out.append(len(results) / (time.perf_counter() - start))
            assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
            if out is rates:
                best_results = results
        peaks.append(in_workers(bmm_gflops, (), n_models, workers, device))
        model_steps.append(
            in_workers(model_step_gflops, (task.to_dict(),), n_models, workers, device)
        )
        matmuls.append(in_workers(matmul_step_gflops, (widths, batch), n_models, workers, device))
    peak = statistics.median(peaks)
    if args.scores:
        with open(args.scores, "w") as f:
            labels = [label for label, _ in labelled for _ in seeds]
            scores = zip(labels, best_results, strict=True)
            json.dump([[lab, r.seed, r.score] for lab, r in scores], f)
    batched = statistics.median(rates)
    last = statistics.median(last_rates)
    print(
        f"(b) batched on {device}, {workers} worker(s), select best: {batched:6.2f} evaluations/s "
        f"(passes: {', '.join(f'{r:.1f}' for r in rates)})"
    )
    print(
        f"(c) batched, select last: {last:6.2f} evaluations/s "
        f"(passes: {', '.join(f'{r:.1f}' for r in last_rates)}); checkpoint selection costs "
        f"{100 * (1 - batched / last):.1f} %"
    )
    ratio = batched / plain[plain_threads]
    gflop = mlp_step_flops(widths, batch) * args.steps / 1e9
    print(
        f"ratio b/a: {ratio:.1f}x; {gflop:.2f} GFLOP/evaluation; plain "
        f"{plain[plain_threads] * gflop:.1f} GFLOP/s, batched {batched * gflop:.1f} GFLOP/s"
    )
    fraction = batched * gflop / peak
    print(
        f"(d) bmm peak, {workers} worker(s): {peak:.1f} GFLOP/s (after each pass pair: "
        f"{', '.join(f'{p:.1f}' for p in peaks)}); batched at {fraction:.1%} of it"
    )
    ce_rate = statistics.median(ce_rates)
    fraction_ce = ce_rate * gflop / peak
    fraction_model = statistics.median(model_steps) / peak
    fraction_matmuls = statistics.median(matmuls) / peak
    print(
        "where the step goes, as fractions of the peak: "
        f"(g) matmuls alone {fraction_matmuls:.1%} > (f) model step alone {fraction_model:.1%} > "
        f"(e) every model on CE {fraction_ce:.1%} ({ce_rate:.1f} evaluations/s) > "
        f"(b) the {len(losses)} losses {fraction:.1%}"
    )
    print(
        json.dumps(
            {
                "plain_evals_per_s": round(plain[plain_threads], 3),
                "plain_threads": plain_threads,
                "batched_evals_per_s": round(batched, 3),
                "ratio": round(ratio, 2),
                "select_last_evals_per_s": round(last, 3),
                "selection_cost": round(1 - batched / last, 3),
                "gflop_per_eval": round(gflop, 4),
                "plain_gflops": round(plain[plain_threads] * gflop, 2),
                "batched_gflops": round(batched * gflop, 2),
                "bmm_peak_gflops": round(peak, 2),
                "fraction_of_peak": round(fraction, 4),
                "ce_evals_per_s": round(ce_rate, 3),
                "fraction_ce": round(fraction_ce, 4),
                "fraction_model_step": round(fraction_model, 4),
                "fraction_matmuls": round(fraction_matmuls, 4),
                "n_losses": len(losses),
                "n_structures": len({structure(e) for e in losses}),
                "seeds": args.seeds,
                "steps": args.steps,
                "workers": workers,
                "device": device,
                "cores": cores,
                "load_avg_before": round(load, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
