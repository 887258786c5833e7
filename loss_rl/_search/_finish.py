"""The end of a search: re-check the top candidates, export the winner, write ``summary.json``."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from loss_rl.agents import SearchState
from loss_rl.export import export
from loss_rl.expr import Expr, TaskKind, parse
from loss_rl.presets import EnvPreset
from loss_rl.store import SUMMARY, Ledger
from loss_rl.verify import verify

BEST = "best"
"""Folder of the exported winner: ``loss.json``, ``loss.py``, ``loss.pt``."""


def verify_and_export(run_dir: Path, preset: EnvPreset, ledger: Ledger) -> dict[str, Any] | None:
    """Re-train the top candidates at full length on fresh seeds and export the winner.

    The winner is chosen on the *validation* split of the full-length re-training; the test
    split is only reported (never select on test).

    Returns:
        The verification record of ``summary.json`` (``None`` if nothing trained to a score).
    """
    df = ledger.frame()
    ok = df[(df["status"] == "ok") & (df["source"] == "trained")]
    if ok.empty:
        return None
    top = ok.sort_values("score", ascending=False).drop_duplicates("key")
    top = top.head(preset.verification.top_k)
    losses = {f"found_{i + 1}": parse(e) for i, e in enumerate(top["expression"])}
    val_scores = dict(zip(losses, top["score"], strict=True))
    table = verify(
        losses,
        preset.task,
        seeds=preset.verification.seeds,
        references=preset.verification.references,
        data_seed=preset.evaluation.data_seed,
    )
    found = table[table["loss"].isin(list(losses))]
    found = found.sort_values("val_mean", ascending=False, na_position="last")
    win = found.iloc[0]
    expr: Expr = losses[win["loss"]]
    metadata = {
        "search_val_score": float(val_scores[win["loss"]]),
        "test_mean": float(win["mean"]),
        "test_ci95": [float(win["ci_low"]), float(win["ci_high"])],
        "diff_vs_ce": float(win["diff_vs_ce"]),
        "env": preset.name,
        "run": run_dir.name,
    }
    best = run_dir / BEST
    best.mkdir(exist_ok=True)
    kind: TaskKind = preset.task.kind
    for fmt, fname in (("json", "loss.json"), ("py", "loss.py"), ("torchscript", "loss.pt")):
        export(expr, best / fname, format=fmt, kind=kind, metadata=metadata)
    return {
        "winner": win["loss"],
        "expression": str(expr),
        "key": expr.key,
        "search_val_score": float(val_scores[win["loss"]]),
        "steps": table.attrs.get("steps"),
        "seeds": table.attrs.get("seeds"),
        "metric": table.attrs.get("metric"),
        "table": json.loads(table.to_json(orient="records")),
    }


def write_summary(
    run_dir: Path,
    *,
    env: str,
    agent: str,
    budget: int,
    ledger: Ledger,
    state: SearchState,
    seconds: float,
    verification: dict[str, Any] | None,
    status: str,
) -> None:
    """Write ``summary.json`` atomically; wall time adds up over the sessions of a run.

    ``stopped`` is ``None`` when the session spent its budget (or was interrupted), else why it
    stopped short (:attr:`loss_rl.agents.SearchState.stop_reason`): the CLI prints it and exits
    with a non-zero code.
    """
    counts = ledger.counts()
    prev: dict[str, Any] = {}
    if (run_dir / SUMMARY).is_file():
        with contextlib.suppress(json.JSONDecodeError):
            prev = json.loads((run_dir / SUMMARY).read_text())
    wall = float(prev.get("wall_seconds", 0.0)) + seconds
    best: dict[str, Any] | None = None
    if verification is not None:
        best = {
            "expression": verification["expression"],
            "key": verification["key"],
            "val_score": verification["search_val_score"],
        }
    elif state.best_expression is not None:
        best = {
            "expression": state.best_expression,
            "key": parse(state.best_expression).key,
            "val_score": state.best_score,
        }
    proposed = counts["proposed"]
    resolved = (counts["cached"] + counts["rejected"]) / proposed if proposed else 0.0
    summary = {
        "status": status,
        # Why a search ended before its budget (a proposal or env-step cap), else None.
        "stopped": state.stop_reason,
        "env": env,
        "agent": agent,
        "budget": budget,
        "best": best,
        "verification": verification,
        "evaluations": counts,
        "resolved_without_training": resolved,
        "wall_seconds": wall,
        "evals_per_second": counts["trained"] / wall if wall > 0 else 0.0,
        "train_seconds": state.evaluator.stats.train_seconds,
    }
    tmp = run_dir / "summary.tmp.json"
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    os.replace(tmp, run_dir / SUMMARY)
