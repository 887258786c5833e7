"""The end of a search: re-check the top candidates, export the winner, write ``summary.json``."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from loss_rl._refine import refine
from loss_rl.agents import SearchState
from loss_rl.errors import LossSpecError
from loss_rl.evaluation import InProcessExecutor
from loss_rl.export import export
from loss_rl.expr import (
    Expr,
    TaskKind,
    format_params,
    known_equivalent,
    parse,
    simplified_size,
    simplify,
)
from loss_rl.presets import EnvPreset
from loss_rl.stats import paired_comparison
from loss_rl.store import SUMMARY, Ledger, hall_of_fame, hall_of_fame_records
from loss_rl.verify import verify

logger = logging.getLogger(__name__)

BEST = "best"
"""Folder of the exported winner: ``loss.json``, ``loss.py``, ``loss.pt``."""


def verify_and_export(
    run_dir: Path, preset: EnvPreset, ledger: Ledger, device: str | None = None
) -> dict[str, Any] | None:
    """Re-train the top candidates at full length on fresh seeds and export the winner.

    ``device`` is where the re-trainings run (the run's ``executor.device``; in-process).

    The winner is chosen on the *validation* split of the full-length re-training; the test
    split is only reported (never select on test). The references are tuned on validation
    (:func:`loss_rl.verify.verify`), and the winner is checked against the library
    (:func:`loss_rl.expr.known_equivalent`): a known loss is not a discovery.

    Returns:
        The verification record of ``summary.json`` (``None`` if nothing trained to a score):
        ``winner`` (its row name), ``expression``, ``simplified`` and ``size`` (its readable
        form, :func:`loss_rl.expr.simplify`, and that form's node count), ``key``,
        ``search_val_score`` (``NaN`` for a refined winner, which the search never scored),
        ``refinement`` (``None`` unless ``verification.refine_constants``: ``source``,
        ``row`` (the best candidate with a movable constant, e.g. ``found_1``), ``refined``,
        ``changed``, ``meta_steps``, ``seconds``, and what it bought on the verification
        seeds: ``val_diff``, ``test_diff``, ``test_ci95``, ``p`` of row ``refined`` against
        ``row``; ``None`` when no candidate has such a constant), ``steps``,
        ``seeds``, ``metric``, ``select``, ``trainings`` and ``tuning_trainings`` (of the
        verification; the tuning ones are part of it), ``tuning`` (per reference: the chosen
        parameters and each grid point's validation mean), ``best_reference`` (``name``,
        ``params``, ``expression``, ``test_mean``, ``test_ci95``), ``novelty`` (``known``: a
        library loss up to a positive scale; then ``name``, ``params``, ``scale``, ``how``,
        ``text``), ``vs_best_reference`` and ``vs_ce`` (the winner's paired ``diff``,
        ``ci95``, ``p``), ``verdict`` (one sentence) and ``table`` (every row of the
        verification table, :data:`loss_rl.verify.COLUMNS`).
    """
    df = ledger.frame()
    ok = df[(df["status"] == "ok") & (df["source"] == "trained")]
    if ok.empty:
        return None
    top = ok.sort_values("score", ascending=False).drop_duplicates("key")
    top = top.head(preset.verification.top_k)
    losses = {f"found_{i + 1}": parse(e) for i, e in enumerate(top["expression"])}
    val_scores = dict(zip(losses, top["score"], strict=True))
    refined = None
    if preset.verification.refine_constants:
        # The best candidate with a constant a meta-gradient can move.
        for name, candidate in list(losses.items()):
            refined = _refine_best(candidate, preset)
            if refined is not None:
                refined["row"] = name
                break
    if refined is not None and refined["changed"]:
        losses["refined"] = parse(refined["refined"])
    table = verify(
        losses,
        preset.task,
        seeds=preset.verification.seeds,
        references=preset.verification.references,
        tune_references=preset.verification.tune_references,
        data_seed=preset.evaluation.data_seed,
        executor=InProcessExecutor(device=device),
    )
    found = table[table["loss"].isin(list(losses))]
    found = found.sort_values("val_mean", ascending=False, na_position="last")
    win = found.iloc[0]
    expr: Expr = losses[win["loss"]]
    kind: TaskKind = preset.task.kind
    match = known_equivalent(expr, kind)
    novelty = {"known": match is not None, **(match.to_dict() if match is not None else {})}
    refs = table[table["reference"]]
    best_ref = refs[refs["loss"] == table.attrs["best_reference"]].iloc[0]
    ce_name = "ce" if kind is TaskKind.CLASSIFICATION else "mse"
    comparisons = {
        "vs_best_reference": _comparison(win, "best_ref"),
        "vs_ce": _comparison(win, "ce") if ce_name in set(table["loss"]) else None,
    }
    best_reference = {
        "name": str(best_ref["loss"]),
        "params": table.attrs["tuning"][best_ref["loss"]]["chosen"],
        "expression": str(best_ref["expression"]),
        "test_mean": float(best_ref["mean"]),
        "test_ci95": [float(best_ref["ci_low"]), float(best_ref["ci_high"])],
    }
    if refined is not None:
        refined.update(_refinement_effect(table, refined["row"], refined["changed"]))
    metadata = {
        "search_val_score": float(val_scores.get(win["loss"], math.nan)),
        "test_mean": float(win["mean"]),
        "test_ci95": [float(win["ci_low"]), float(win["ci_high"])],
        "diff_vs_ce": float(win["diff_vs_ce"]),
        "diff_vs_best_reference": float(win["diff_vs_best_ref"]),
        "best_reference": best_reference["name"],
        "known_as": novelty.get("text"),
        "env": preset.name,
        "run": run_dir.name,
    }
    best = run_dir / BEST
    best.mkdir(exist_ok=True)
    for fmt, fname in (("json", "loss.json"), ("py", "loss.py"), ("torchscript", "loss.pt")):
        export(expr, best / fname, format=fmt, kind=kind, metadata=metadata)
    return {
        "winner": win["loss"],
        "expression": str(expr),
        "simplified": simplify(expr),
        "size": simplified_size(expr),
        "key": expr.key,
        "search_val_score": float(val_scores.get(win["loss"], math.nan)),
        "refinement": refined,
        "steps": table.attrs.get("steps"),
        "seeds": table.attrs.get("seeds"),
        "metric": table.attrs.get("metric"),
        "select": table.attrs.get("select"),
        "trainings": table.attrs.get("trainings"),
        "tuning_trainings": table.attrs.get("tuning_trainings"),
        "tuning": table.attrs.get("tuning"),
        "best_reference": best_reference,
        "novelty": novelty,
        **comparisons,
        "verdict": verdict(str(win["loss"]), novelty, best_reference, comparisons),
        "table": json.loads(table.to_json(orient="records")),
    }


def _refine_best(expr: Expr, preset: EnvPreset) -> dict[str, Any] | None:
    """Refine the best candidate's constants (no verification here: the caller verifies).

    Returns:
        ``{"source", "refined", "changed", "meta_steps", "seconds"}``; ``None`` when the loss
        has no constant a meta-gradient can move (logged).
    """
    start = time.perf_counter()
    try:
        result = refine(
            expr,
            preset,
            meta_steps=preset.verification.refine_meta_steps,
            verify_seeds=0,
            write=False,
        )
    except LossSpecError as err:  # e.g. a loss without learnable constants
        logger.info("constants not refined: %s", err)
        return None
    return {
        "source": str(expr),
        "refined": str(result.refined),
        "changed": result.refined.key != expr.key,
        "meta_steps": preset.verification.refine_meta_steps,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _refinement_effect(table: Any, source: str, changed: bool) -> dict[str, Any]:
    """What refinement bought: row ``refined`` against row ``source``, on the same seeds.

    ``val_diff`` (validation, what selection sees) and ``test_diff`` with its paired 95 % CI and
    p over the verification seeds; all ``None`` when refinement left the loss unchanged.
    """
    if not changed:
        return {"val_diff": None, "test_diff": None, "test_ci95": None, "p": None}
    rows = table.set_index("loss")
    per_seed = table.attrs["per_seed"]
    cmp = paired_comparison(
        np.asarray(per_seed["refined"], float), np.asarray(per_seed[source], float)
    )
    return {
        "val_diff": float(rows.loc["refined", "val_mean"] - rows.loc[source, "val_mean"]),
        "test_diff": cmp.diff,
        "test_ci95": [cmp.ci_low, cmp.ci_high],
        "p": cmp.p,
    }


def _comparison(row: Any, against: str) -> dict[str, Any]:
    """The winner's paired difference against ``ce`` or ``best_ref`` (a verification row)."""
    return {
        "diff": float(row[f"diff_vs_{against}"]),
        "ci95": [float(row[f"diff_vs_{against}_low"]), float(row[f"diff_vs_{against}_high"])],
        "p": float(row[f"p_vs_{against}"]),
    }


def verdict(
    winner: str,
    novelty: dict[str, Any],
    best_reference: dict[str, Any],
    comparisons: dict[str, Any],
    alpha: float = 0.05,
) -> str:
    """One plain sentence on what the search found: known or new, better than the references?

    The claim is "beats the best tuned reference" only at ``p < alpha`` with a positive
    difference; otherwise the sentence says it does not (or is worse).
    """
    ref = best_reference["name"]
    if best_reference.get("params"):
        ref += f" ({format_params(best_reference['params'])})"
    vs = comparisons["vs_best_reference"]
    if winner == best_reference["name"]:
        head = f"The winner is the best tuned reference {ref}"
    elif novelty.get("known"):
        head = f"The winner {winner} is a known loss: {novelty['text']}"
    else:
        head = f"The winner {winner} is not a library loss up to scale"
    diff, p, (lo, hi) = vs["diff"], vs["p"], vs["ci95"]
    if not math.isfinite(diff):
        return f"{head}; its comparison with the best tuned reference {ref} has too few seeds."
    stats = f"Δ {diff:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}], p = {p:.3g}"
    if diff > 0 and p < alpha:
        how = f"it beats the best tuned reference {ref} ({stats})"
    elif diff < 0 and p < alpha:
        how = f"it is worse than the best tuned reference {ref} ({stats})"
    else:
        how = f"it does not beat the best tuned reference {ref} ({stats}: not significant)"
    return f"{head}; {how}."


def protocol(preset: EnvPreset) -> dict[str, Any]:
    """How the run's losses were trained and compared (``summary.json``'s ``protocol``).

    Keys: ``select`` (``best``: every training ends at its best validation checkpoint;
    ``last``), ``eval_every`` (steps between validation checks), ``val_labels`` (``noisy``:
    the validation labels are corrupted like the training labels; ``clean``; ``none``: the
    task has no label noise), ``test_labels`` (always ``clean``), ``val_size`` (validation
    samples, ``None`` if not known without loading the data), ``verification_seeds``,
    ``tune_references``.
    """
    task = preset.task
    corruption = task.corruption
    if corruption.kind in ("symmetric", "pairflip"):
        val_labels = "noisy" if corruption.noisy_val else "clean"
    else:
        val_labels = "none"
    return {
        "select": task.training.select,
        "eval_every": task.training.eval_every,
        "val_labels": val_labels,
        "test_labels": "clean",
        "verification_seeds": preset.verification.seeds,
        "tune_references": preset.verification.tune_references,
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
    protocol: dict[str, Any] | None = None,
) -> None:
    """Write ``summary.json`` atomically; wall time adds up over the sessions of a run.

    Keys: ``status``, ``stopped`` (``None`` when the session spent its budget or was
    interrupted, else why it stopped short — :attr:`loss_rl.agents.SearchState.stop_reason`:
    the CLI prints it and exits with a non-zero code), ``env``, ``agent``, ``budget``,
    ``protocol`` (:func:`protocol`), ``best`` (``expression``, ``simplified``, ``size``,
    ``key``, ``val_score``: the winner's search score on the validation split; ``simplified`` is
    :func:`loss_rl.expr.simplify`'s readable form and ``size`` its node count),
    ``verification`` (``None`` until the search finished; see :func:`verify_and_export`),
    ``hall_of_fame`` (the Pareto front of validation score against simplified size over the
    ledger, best score first: a list of dicts with ``rank``, ``size``, ``score``,
    ``expression``, ``simplified``, ``key``, ``known_as``, ``fidelity``; see
    :func:`loss_rl.store.hall_of_fame`; ``None`` for an interrupted session), ``evaluations``
    (ledger counts), ``resolved_without_training``, ``wall_seconds``, ``evals_per_second``,
    ``train_seconds``.
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
    if best is not None:
        expr = parse(best["expression"])
        best = {**best, "simplified": simplify(expr), "size": simplified_size(expr)}
    # An interrupted session skips the front (simplifying every loss takes seconds, and Ctrl-C
    # should not wait); `loss-rl inspect` computes it from the ledger then.
    front = None
    if status != "interrupted":
        front = hall_of_fame_records(hall_of_fame(ledger.frame()))
    proposed = counts["proposed"]
    resolved = (counts["cached"] + counts["rejected"]) / proposed if proposed else 0.0
    summary = {
        "status": status,
        # Why a search ended before its budget (a proposal or env-step cap), else None.
        "stopped": state.stop_reason,
        "env": env,
        "agent": agent,
        "budget": budget,
        "protocol": protocol,
        "best": best,
        "verification": verification,
        "hall_of_fame": front,
        "evaluations": counts,
        "resolved_without_training": resolved,
        "wall_seconds": wall,
        "evals_per_second": counts["trained"] / wall if wall > 0 else 0.0,
        "train_seconds": state.evaluator.stats.train_seconds,
    }
    tmp = run_dir / "summary.tmp.json"
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    os.replace(tmp, run_dir / SUMMARY)
