"""The evaluator: static checks → cache lookup → batched training → results recorded.

The environment (:mod:`loss_rl.envs`) knows the evaluator only through :class:`EvaluatorLike`:
``evaluate(candidates) -> results``, in order, never raising for a bad candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from loss_rl.expr import Expr


class Status(str, Enum):
    """Outcome of one candidate's evaluation."""

    OK = "ok"
    REJECTED = "rejected"  # failed a validity check; never trained
    DIVERGED = "diverged"  # loss or gradients became NaN/inf during training
    ERROR = "error"  # anything else went wrong while evaluating it


@dataclass(frozen=True)
class EvalResult:
    """Result of evaluating one candidate loss.

    Attributes:
        key: Canonical key of the expression.
        expression: Readable form of the expression as proposed.
        score: Validation score (mean over paired seeds; higher is better), ``None`` unless ok.
        status: See :class:`Status`.
        metrics: Validation metrics averaged over seeds (e.g. ``accuracy``, ``nll``).
        fidelity: Inner-training steps used.
        seeds: Paired seeds trained.
        seconds: Wall time attributed to this candidate (0 for cached/rejected).
        source: ``"trained"``, ``"cache_key"``, ``"cache_fingerprint"`` or ``"check"``.
        reason: Why it was rejected / diverged / errored.
        fingerprint: Numeric fingerprint (``None`` when it could not be computed).
    """

    key: str
    expression: str
    score: float | None
    status: Status
    metrics: dict[str, float] = field(default_factory=dict)
    fidelity: int = 0
    seeds: tuple[int, ...] = ()
    seconds: float = 0.0
    source: str = "trained"
    reason: str = ""
    fingerprint: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the candidate trained to a finite score."""
        return self.status is Status.OK

    @property
    def trained(self) -> bool:
        """Whether this evaluation cost an inner training (counts against the budget)."""
        return self.source == "trained"


@runtime_checkable
class EvaluatorLike(Protocol):
    """What the environment needs from an evaluator."""

    @property
    def reference_score(self) -> float:
        """Validation score of the reference loss (CE) trained on the same paired seeds."""
        ...

    def evaluate(
        self, candidates: Sequence[Expr], context: Sequence[dict[str, Any]] | None = None
    ) -> list[EvalResult]:
        """Evaluate candidates in one batch; results are in the candidates' order.

        Args:
            candidates: Loss expressions.
            context: Optional per-candidate bookkeeping recorded with the result (episode, step,
                env index).

        Never raises for a bad candidate: it gets a non-ok :class:`EvalResult`.
        """
        ...
