"""Run-level memory of a search's envs: the best loss so far and what every loss scored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loss_rl.expr import Expr
from loss_rl.results import EvalResult, Status


@dataclass
class RunStats:
    """Run-level memory the rewards need, shared by the envs of one search.

    The training *budget* is counted by the search, not here; these counters are for the info
    dict and progress reports.

    Attributes:
        best_score: Best ok score seen in the run (``None`` before any).
        best_expression: The loss that scored it.
        best_state: Its state in the space that found it (lets an episode start there).
        n_evaluations: Results received (steps with a candidate, and start evaluations).
        n_trainings: Results that cost an inner training (``result.trained``).
        n_rejected: Rejected results.
        n_diverged: Diverged or errored results.
        n_invalid: Masked actions taken anyway.
        n_steps: Env steps.
        n_episodes: Episodes started.
        scores: Score by canonical key of every loss evaluated (``None``: not ok). Knowledge of
            the evaluator, so :meth:`clear` keeps it.
        states: A space state by canonical key, to restart from an injected best loss.
    """

    best_score: float | None = None
    best_expression: Expr | None = None
    best_state: Any = None
    n_evaluations: int = 0
    n_trainings: int = 0
    n_rejected: int = 0
    n_diverged: int = 0
    n_invalid: int = 0
    n_steps: int = 0
    n_episodes: int = 0
    scores: dict[str, float | None] = field(default_factory=dict)
    states: dict[str, Any] = field(default_factory=dict)

    def clear(self) -> None:
        """Start a new run: forget the best and the counters (not the known scores)."""
        self.best_score = self.best_expression = self.best_state = None
        self.n_evaluations = self.n_trainings = self.n_rejected = self.n_diverged = 0
        self.n_invalid = self.n_steps = self.n_episodes = 0

    def offer(self, expression: Expr, score: float, state: Any = None) -> bool:
        """Record ``expression`` as the run's best if ``score`` beats it (the search's hook).

        Returns:
            Whether it became the best.
        """
        if state is None:
            state = self.states.get(expression.key)
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_expression, self.best_state = score, expression, state
            return True
        return False

    def record(self, expression: Expr, result: EvalResult, state: Any) -> None:
        """Count a result and remember its score and state."""
        self.n_evaluations += 1
        self.n_trainings += int(result.trained)
        if result.status is Status.REJECTED:
            self.n_rejected += 1
        elif not result.ok:
            self.n_diverged += 1
        score = float(result.score) if result.ok and result.score is not None else None
        self.scores[result.key] = score
        if expression.key != result.key:
            self.scores[expression.key] = score
        if state is not None:
            self.states.setdefault(expression.key, state)
        if score is not None:
            self.offer(expression, score, state)
