"""Plots: a run's search (best so far, scores, rewards) and a loss against known losses.

matplotlib's object API with the Agg canvas: no global state, no display needed. A run's plots
go under ``<run>/plots/`` (:data:`PLOT_FILES`); :func:`loss_sweep` is the one sweep of a loss
and its gradient behind both :func:`plot_loss_curve` and :func:`plot_loss`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from loss_rl.expr import Expr, TaskKind, compile_loss, known_loss, parse, task_kind
from loss_rl.inspect._facts import is_baseline
from loss_rl.inspect._format import format_number
from loss_rl.inspect._stats import (
    best_so_far,
    episode_rewards,
    reference_score,
    rejection_reasons,
)
from loss_rl.store import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOTS = "plots"

PLOT_FILES = {
    "best_so_far": "best_so_far.png",
    "loss_curve": "loss_curve.png",
    "scores": "scores.png",
    "rewards": "rewards.png",
}

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A compiled loss: ``fn(input, target)`` → per-sample losses."""

_LOGIT_STEP = 0.025  # spacing of the logit sweep (561 points over [-7, 7])


def loss_sweep(
    fn: LossFn, kind: TaskKind, logit_bound: float = 7.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A loss and its gradient along a 1-D sweep.

    Classification: two classes, target 0, logits ``(s, 0)`` with ``s`` in
    ``[-logit_bound, logit_bound]``, so ``x = p_y = sigmoid(s)``; the gradient is with respect
    to the true-class logit ``z_y``. Regression: the residual ``x`` in ``[-3, 3]`` (target 0);
    the gradient is with respect to the prediction.

    Args:
        fn: The compiled loss (per-sample values).
        kind: The task kind.
        logit_bound: Half-width of the logit sweep (classification).

    Returns:
        ``(x, loss, gradient)`` as float64 arrays.
    """
    with torch.enable_grad():
        if kind is TaskKind.CLASSIFICATION:
            n = round(2 * logit_bound / _LOGIT_STEP) + 1
            s = torch.linspace(-logit_bound, logit_bound, n, dtype=torch.float64)
            z = torch.stack([s, torch.zeros_like(s)], -1).requires_grad_(True)
            value = fn(z, torch.zeros(len(s), dtype=torch.int64))
            (g,) = torch.autograd.grad(value.sum(), z, allow_unused=True)
            grad = torch.zeros_like(z) if g is None else g
            return torch.sigmoid(s).numpy(), value.detach().numpy(), grad[:, 0].numpy()
        r = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64)
        pred = r.clone().requires_grad_(True)
        value = fn(pred, torch.zeros_like(r))
        (g,) = torch.autograd.grad(value.sum(), pred, allow_unused=True)
        grad = torch.zeros_like(pred) if g is None else g
        return r.numpy(), value.detach().numpy(), grad.numpy()


def _figure(width: float = 7.0, height: float = 4.0) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, run: Run, name: str, path: str | Path | None) -> Path:
    out = Path(path) if path is not None else run.path / PLOTS / PLOT_FILES[name]
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


_GRADIENT_LABEL = {
    TaskKind.CLASSIFICATION: r"$\partial \ell / \partial z_y$",
    TaskKind.REGRESSION: r"$\partial \ell / \partial \hat y$",
}
_P_Y_LABEL = "true-class probability $p_y$"


def plot_loss(expr: Expr, kind: TaskKind, path: str | Path, *, label: str | None = None) -> Path:
    """Save a loss and its gradient along the sweep, next to cross-entropy (or MSE).

    Classification: against the true-class probability ``p_y`` (logits in ``[-9, 9]``);
    regression: against the residual. What ``loss-rl show --plot`` draws.

    Args:
        expr: The loss (it must compile for ``kind``; its checks need not pass).
        kind: The task kind.
        path: The PNG to write (its folder is created).
        label: The loss's name in the legend (default: the expression; past 40 characters the
            legend says ``loss``). The title is the expression.

    Returns:
        The path written.
    """
    classification = kind is TaskKind.CLASSIFICATION
    reference, ref_label = ("ce", "cross-entropy") if classification else ("mse", "MSE")
    axis_label = _P_Y_LABEL if classification else r"residual $\hat y - y$"
    x, values, grads = loss_sweep(compile_loss(expr, kind), kind, logit_bound=9.0)
    _, ref_values, ref_grads = loss_sweep(compile_loss(known_loss(reference), kind), kind, 9.0)
    label = str(expr) if label is None else label
    title = str(expr)
    fig = _figure(9.0, 3.6)
    for ax, ys, ref, ylabel in zip(
        fig.subplots(1, 2),
        (values, grads),
        (ref_values, ref_grads),
        ("loss", _GRADIENT_LABEL[kind]),
        strict=True,
    ):
        ax.plot(x, ys, label=label if len(label) <= 40 else "loss", color="tab:blue")
        ax.plot(x, ref, "--", label=ref_label, color="tab:gray")
        ax.set_xlabel(axis_label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title if len(title) <= 90 else title[:87] + "...", fontsize="medium")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def plot_best_so_far(run: Run, others: Sequence[Run] = (), path: str | Path | None = None) -> Path:
    """Best-so-far validation score against inner trainings, other runs overlaid.

    Args:
        run: The run.
        others: Other runs (of the same task) drawn on the same axes.
        path: Output file (default ``<run>/plots/best_so_far.png``).
    """
    fig = _figure()
    ax = fig.subplots()
    drawn = 0
    for i, r in enumerate([run, *others]):
        curve = best_so_far(r)
        if curve["best"].notna().any():
            algo = r.algo
            ax.step(
                curve["trainings"],
                curve["best"],
                where="post",
                lw=2.2 if i == 0 else 1.4,
                label=f"{r.path.name} ({'?' if algo is None else algo})",
            )
            drawn += 1
    ref = reference_score(run)
    if ref is not None:
        ax.axhline(ref, ls="--", color="tab:gray", label="reference (CE)")
    if drawn:
        ax.set_xlabel("inner trainings")
        ax.set_ylabel(f"best validation {run.metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    else:
        _empty(ax, "no inner training finished with an ok score yet")
    ax.set_title(f"best so far: {run.path.name}", fontsize="medium")
    return _save(fig, run, "best_so_far", path)


def plot_loss_curve(run: Run, path: str | Path | None = None) -> Path:
    """The best loss and its gradient against p_y (or the residual), next to known losses.

    Classification: CE, MAE and GCE (q = 0.7), two classes, target 0, logits ``(s, 0)``, so
    ``p_y = sigmoid(s)``; the gradient is with respect to the true-class logit. Regression: MSE,
    L1 and Huber against the residual.
    """
    fig = _figure(10.0, 4.0)
    ax_l, ax_g = fig.subplots(1, 2)
    best = run.best
    if not best:
        _empty(ax_l, "no loss with an ok score yet")
        _empty(ax_g, "")
        return _save(fig, run, "loss_curve", path)
    expr = parse(str(best["expression"]))
    kind = task_kind(expr) or TaskKind.CLASSIFICATION
    refs = ("ce", "mae", "gce") if kind is TaskKind.CLASSIFICATION else ("mse", "l1", "huber")
    label = str(expr) if len(str(expr)) <= 45 else str(expr)[:42] + "..."
    x, y, g = loss_sweep(compile_loss(expr, kind), kind)
    ax_l.plot(x, y, lw=2.4, color="tab:red", label=f"found: {label}")
    ax_g.plot(x, g, lw=2.4, color="tab:red", label="found")
    # Axis limits from the references and from the found loss away from p_y → 0, where losses
    # such as -log_p_y / p_y blow up and would flatten every other curve.
    window = x >= 0.05 if kind is TaskKind.CLASSIFICATION else np.ones_like(x, dtype=bool)
    seen_l, seen_g = [y[window]], [g[window]]
    for name, style in zip(refs, ("--", ":", "-."), strict=True):
        _, ry, rg = loss_sweep(compile_loss(known_loss(name), kind), kind)
        ax_l.plot(x, ry, style, color="tab:gray", label=name.upper())
        ax_g.plot(x, rg, style, color="tab:gray", label=name.upper())
        seen_l.append(ry[window])
        seen_g.append(rg[window])
    xlabel = _P_Y_LABEL if kind is TaskKind.CLASSIFICATION else "residual"
    for ax, ylabel, seen in ((ax_l, "loss", seen_l), (ax_g, _GRADIENT_LABEL[kind], seen_g)):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        values = np.concatenate(seen)
        values = values[np.isfinite(values)]
        if values.size:
            lo, hi = float(values.min()), float(values.max())
            pad = 0.08 * max(hi - lo, 1e-6)
            ax.set_ylim(lo - pad, hi + pad)
    fig.suptitle(
        f"best loss of {run.path.name}: val {format_number(best.get('val_score'))}",
        fontsize="medium",
    )
    return _save(fig, run, "loss_curve", path)


def plot_scores(run: Run, path: str | Path | None = None) -> Path:
    """Distribution of the validation scores of trained losses, and of rejection reasons."""
    fig = _figure(10.0, 4.0)
    ax_s, ax_r = fig.subplots(1, 2)
    df = run.ledger
    ok = df[(df["source"] == "trained") & (df["status"] == "ok")]["score"].dropna()
    if len(ok):
        ax_s.hist(ok, bins=min(30, max(5, len(ok) // 2)), color="tab:blue", alpha=0.8)
        ref = reference_score(run)
        if ref is not None:
            ax_s.axvline(ref, ls="--", color="tab:gray", label="reference (CE)")
            ax_s.legend(fontsize="small")
        ax_s.set_xlabel("validation score")
        ax_s.set_ylabel("trained losses")
        ax_s.grid(alpha=0.3)
    else:
        _empty(ax_s, "no trained loss with an ok score")
    ax_s.set_title("scores of trained losses", fontsize="medium")
    reasons = rejection_reasons(run)
    if len(reasons):
        ax_r.barh(list(reasons.index)[::-1], list(reasons.values)[::-1], color="tab:orange")
        ax_r.set_xlabel("proposals (incl. repeats answered from the cache)")
        ax_r.grid(alpha=0.3, axis="x")
    else:
        _empty(ax_r, "no rejected or diverged proposal")
    ax_r.set_title("why proposals failed", fontsize="medium")
    return _save(fig, run, "scores", path)


def plot_rewards(run: Run, path: str | Path | None = None) -> Path:
    """Return per episode (reconstructed, see :func:`episode_rewards`) with a moving average."""
    fig = _figure()
    ax = fig.subplots()
    eps = episode_rewards(run)
    if len(eps):
        x, y = eps["episode"].to_numpy(), eps["reward"].to_numpy(dtype=float)
        ax.plot(x, y, ".", alpha=0.5, color="tab:blue", label="episode return")
        w = max(1, len(y) // 10)
        ma = pd.Series(y).rolling(w, min_periods=1).mean()
        ax.plot(x, ma, color="tab:red", lw=2, label=f"moving average ({w})")
        ax.set_xlabel("episode (order of start)")
        ax.set_ylabel("return (reconstructed from the ledger)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    elif is_baseline(run):
        _empty(ax, f"no rewards: {run.algo} is a baseline searcher, not an RL agent")
    else:
        _empty(ax, "no episode in the ledger")
    ax.set_title("reward per episode", fontsize="medium")
    return _save(fig, run, "rewards", path)


def plot_all(run: Run, others: Sequence[Run] = ()) -> dict[str, Path]:
    """Write every plot under ``<run>/plots/``; returns name → path."""
    return {
        "best_so_far": plot_best_so_far(run, others),
        "loss_curve": plot_loss_curve(run),
        "scores": plot_scores(run),
        "rewards": plot_rewards(run),
    }
