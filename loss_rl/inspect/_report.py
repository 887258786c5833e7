"""The whole inspection of a run: :class:`Inspection`, gathered by :func:`inspect_run`.

An :class:`Inspection` renders as JSON (:meth:`Inspection.to_dict`, what ``loss-rl inspect
--json`` prints) or as a self-contained HTML page (:meth:`Inspection.write_html`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from loss_rl.errors import LossRLError
from loss_rl.expr import parse, simplified_size, simplify
from loss_rl.inspect._facts import load_policy, missing, policy_file
from loss_rl.inspect._format import json_ready
from loss_rl.inspect._html import render_html
from loss_rl.inspect._plots import plot_all
from loss_rl.inspect._rollout import Rollout, action_usage, rollout
from loss_rl.inspect._stats import (
    episode_rewards,
    outcomes_over_training,
    outcomes_recorded_actions,
    reference_score,
)
from loss_rl.presets import TRUST_HINT
from loss_rl.store import Run, load_run, run_hall_of_fame

REPORT = "report.html"


@dataclass
class Inspection:
    """Everything ``loss-rl inspect`` shows about a run.

    Attributes:
        run: The run.
        summary: Run facts (JSON-ready): task, agent, budget, counts, timing, best, top-K,
            verification, hall of fame.
        rollout: The greedy rollout of the policy (``None`` without one, or when skipped).
        usage: Edit usage of the policy (:func:`action_usage`).
        outcomes: Proposals over training (:func:`outcomes_over_training`).
        episodes: Reconstructed episode returns (:func:`episode_rewards`).
        plots: Plot name → PNG path.
        missing: What could not be shown, and why.
    """

    run: Run
    summary: dict[str, Any]
    rollout: Rollout | None
    usage: pd.DataFrame
    outcomes: pd.DataFrame
    episodes: pd.DataFrame
    plots: dict[str, Path]
    missing: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable summary (what ``loss-rl inspect --json`` prints)."""
        eps = self.episodes
        return json_ready(
            {
                **self.summary,
                "rollout": self.rollout.to_dict() if self.rollout is not None else None,
                "action_usage": self.usage.to_dict(orient="records"),
                "outcomes_over_training": self.outcomes.to_dict(orient="records"),
                "episodes": {
                    "count": len(eps),
                    "mean_return": float(eps["reward"].mean()) if len(eps) else None,
                    "returns": [float(v) for v in eps["reward"]] if len(eps) else [],
                },
                "plots": {k: str(v) for k, v in self.plots.items()},
                "missing": self.missing,
            }
        )

    def write_html(self, path: str | Path | None = None) -> Path:
        """Write the self-contained report (images embedded); default ``<run>/report.html``."""
        out = Path(path) if path is not None else self.run.path / REPORT
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            render_html(
                self.summary,
                rollout=self.rollout,
                usage=self.usage,
                outcomes=self.outcomes,
                plots=self.plots,
                missing=self.missing,
            ),
            encoding="utf-8",
        )
        return out


def run_summary(run: Run, top: int = 5) -> dict[str, Any]:
    """Task, agent, budget, counts, timing, best, top-``top`` losses and hall of fame of a run.

    ``best`` carries its readable form and size (``simplified``, ``size``);
    ``hall_of_fame`` is the Pareto front of validation score against size
    (:func:`loss_rl.store.run_hall_of_fame`, best score first): from ``summary.json`` when the
    search finished, else computed from the ledger.
    """
    s = run.summary or {}
    counts = run.counts
    wall = s.get("wall_seconds")
    estimated = False
    if wall is None:
        created = run.ledger["created"].dropna()
        wall = float(created.max() - created.min()) if len(created) > 1 else None
        estimated = True
    resolved = s.get("resolved_without_training")
    if resolved is None and counts["proposed"]:
        resolved = (counts["cached"] + counts["rejected"]) / counts["proposed"]
    env = run.env
    task = env.get("task", {})
    topk = run.top(top)
    return json_ready(
        {
            "run": str(run.path),
            "name": run.path.name,
            "status": s.get("status", "interrupted (no summary.json)"),
            "env": run.env_name,
            "task": env.get("description"),
            "dataset": task.get("dataset", {}).get("name") if isinstance(task, dict) else None,
            "metric": task.get("metric") if isinstance(task, dict) else None,
            # A search on the user's data: what the file held (data.json), else None.
            "data": run.data,
            "protocol": s.get("protocol"),
            "agent": run.algo,
            "budget": run.budget,
            "evaluations": counts,
            "wall_seconds": wall,
            "wall_seconds_estimated": estimated,
            "evals_per_second": (counts["trained"] / wall) if wall else None,
            "resolved_without_training": resolved,
            "reference_score": reference_score(run),
            "best": _with_simplified(run.best),
            "top": [
                {
                    "rank": i + 1,
                    "expression": r.expression,
                    "score": r.score,
                    "fidelity": r.fidelity,
                }
                for i, r in enumerate(topk.itertuples(index=False))
            ],
            "verification": s.get("verification"),
            "hall_of_fame": run_hall_of_fame(run),
        }
    )


def _with_simplified(best: dict[str, Any] | None) -> dict[str, Any] | None:
    """``best`` with ``simplified`` and ``size`` (summaries before them lack both)."""
    if not best or "simplified" in best or not best.get("expression"):
        return best
    try:
        expr = parse(str(best["expression"]))
    except LossRLError:  # a summary from another loss_rl: show it as it is
        return best
    return {**best, "simplified": simplify(expr), "size": simplified_size(expr)}


def inspect_run(
    run: Run | str | Path,
    others: Sequence[Run | str | Path] = (),
    *,
    top: int = 5,
    rollout_policy: bool = True,
    seed: int = 0,
    usage_episodes: int = 8,
    train: bool = True,
    trust_code: bool = False,
) -> Inspection:
    """Gather the summary, policy inspection and plots of a run.

    Args:
        run: The run (or its folder).
        others: Runs to overlay on the best-so-far plot (runs of another env are skipped, with
            a note).
        top: How many of the best losses to list.
        rollout_policy: Roll the policy out (greedy rollout and edit usage).
        seed: Seed of the rollouts.
        usage_episodes: Stochastic episodes behind the edit usage.
        train: Let the greedy rollout train losses the search never evaluated.
        trust_code: Let that training import the model factory the run folder names
            (``task.model.factory``); without it such a run's rollout answers from the ledger
            only, with a note (opening a shared run folder never runs its code).

    Raises:
        RunError: if ``run`` is not a run folder or its ledger is from a newer loss_rl.
    """
    run = run if isinstance(run, Run) else load_run(run)
    notes = missing(run)
    overlay = []
    for o in others:
        other = o if isinstance(o, Run) else load_run(o)
        if other.env != run.env:
            notes.append(f"{other.path} searched another task ({other.env_name}): not overlaid")
        else:
            overlay.append(other)
    # Read from the raw config: parsing the task would read (and check) its data file.
    model = run.env.get("task", {}).get("model", {})
    if train and not trust_code and model.get("kind") == "module":
        train = False
        notes.append(
            f"the rollout trains nothing new: the run's model is built by code it names "
            f"({model.get('factory')!r}); pass {TRUST_HINT} to let it"
        )
    roll: Rollout | None = None
    usage = pd.DataFrame(columns=["edit", "count", "share"])
    compatible = not any("newer loss_rl" in n for n in notes)
    if not rollout_policy:
        notes.append("policy rollout skipped (--no-rollout)")
    elif compatible and policy_file(run) is not None:
        try:
            model = load_policy(run)
            roll = rollout(run, seed=seed, train=train, model=model)
            usage = action_usage(run, episodes=usage_episodes, seed=seed, model=model)
        except LossRLError as err:
            notes.append(f"policy inspection failed: {err}")
    if roll is not None and not outcomes_recorded_actions(run):
        notes.append(
            "this run's ledger predates the `action` column: edit usage during training is not "
            "recorded, only the final policy's usage is shown"
        )
    return Inspection(
        run=run,
        summary=run_summary(run, top),
        rollout=roll,
        usage=usage,
        outcomes=outcomes_over_training(run),
        episodes=episode_rewards(run),
        plots=plot_all(run, overlay),
        missing=notes,
    )


def report_html(run: Run, path: str | Path | None = None, **kwargs: Any) -> Path:
    """Inspect ``run`` (see :func:`inspect_run`) and write its self-contained HTML report."""
    return inspect_run(run, **kwargs).write_html(path)
