"""What one evaluation returns: :class:`EvalResult` and its :class:`Status`.

The contract shared by the evaluator that produces results, the ledger that keeps them
(:mod:`loss_rl.store`) and the agents that read them. It sits at the bottom of the house so that
each of those imports it downward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Status(str, Enum):
    """Outcome of one candidate's evaluation."""

    OK = "ok"
    REJECTED = "rejected"  # failed a validity check; never trained
    DIVERGED = "diverged"  # loss, gradients or outputs became NaN/inf or exploded past bounds
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
