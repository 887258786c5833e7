"""Inspecting a run: what the agent learned (policy rollouts) and what it found (plots, report).

Everything here reads a run folder (:class:`loss_rl.store.Run`) and never writes to its ledger:

- run facts (:func:`missing`, :func:`policy_file`, :func:`load_policy`);
- :func:`rollout` replays the trained agent in the run's MDP, with its action distribution (or
  Q-values) at every step; :func:`action_usage` counts the edits of seeded stochastic rollouts
  of the saved policy (its preferences at the end of training);
- ledger statistics: :func:`best_so_far`, :func:`outcomes_over_training` (how the proposals
  changed during training; the ledger keeps only the last checkpoint of the agent, so per-edit
  usage *during* training comes from the ledger's ``action`` column), :func:`episode_rewards`
  (reconstructed, see its docstring for what is approximate);
- ``plot_*`` write PNGs under ``<run>/plots/``; :func:`loss_sweep` / :func:`plot_loss` draw a
  single loss against the known ones;
- :func:`inspect_run` gathers everything into an :class:`Inspection` that renders as JSON
  (:meth:`Inspection.to_dict`) or as a self-contained HTML page (:meth:`Inspection.write_html`).
"""

from loss_rl.inspect._facts import (
    AGENT_FILE,
    is_baseline,
    load_policy,
    missing,
    policy_file,
)
from loss_rl.inspect._format import format_number
from loss_rl.inspect._plots import (
    PLOT_FILES,
    PLOTS,
    loss_sweep,
    plot_all,
    plot_best_so_far,
    plot_loss,
    plot_loss_curve,
    plot_rewards,
    plot_scores,
)
from loss_rl.inspect._report import REPORT, Inspection, inspect_run, report_html, run_summary
from loss_rl.inspect._rollout import (
    TOP_ACTIONS,
    Rollout,
    RolloutStep,
    action_usage,
    rollout,
    rollout_rows,
)
from loss_rl.inspect._stats import (
    best_so_far,
    episode_rewards,
    outcomes_over_training,
    outcomes_recorded_actions,
    reference_score,
    rejection_reasons,
)

__all__ = [
    "AGENT_FILE",
    "PLOTS",
    "PLOT_FILES",
    "REPORT",
    "TOP_ACTIONS",
    "Inspection",
    "Rollout",
    "RolloutStep",
    "action_usage",
    "best_so_far",
    "episode_rewards",
    "format_number",
    "inspect_run",
    "is_baseline",
    "load_policy",
    "loss_sweep",
    "missing",
    "outcomes_over_training",
    "outcomes_recorded_actions",
    "plot_all",
    "plot_best_so_far",
    "plot_loss",
    "plot_loss_curve",
    "plot_rewards",
    "plot_scores",
    "policy_file",
    "reference_score",
    "rejection_reasons",
    "report_html",
    "rollout",
    "rollout_rows",
    "run_summary",
]
