"""The evaluator of an inspection: the run's own, its ledger read for the cache, never written."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from loss_rl.evaluation import Evaluator
from loss_rl.inspect._facts import env_preset
from loss_rl.results import EvalResult, Status
from loss_rl.store import LEDGER, Ledger, Run


class ReadOnlyLedger:
    """The run's resolved results for the evaluator's cache; new results are not recorded."""

    def __init__(self, path: Path) -> None:
        led = Ledger(path)
        try:
            self._results = list(led.resolved())
        finally:
            led.close()

    def resolved(self) -> Iterator[EvalResult]:
        """The run's results, as a ledger hands them to a resuming evaluator."""
        return iter(self._results)

    def record(self, results: Sequence[EvalResult], contexts: Any = None) -> None:
        """Inspection never writes to the run's ledger."""


class InspectEvaluator:
    """Answers from the run's cache; trains unknown losses only if ``train`` (counted).

    Without ``train``, a loss the run never evaluated gets status ``error`` (reason: not
    evaluated), which the MDP treats like a diverged candidate.

    Args:
        inner: The run's evaluator (its cache warmed from the ledger).
        train: Whether a loss the run never evaluated is trained.
    """

    def __init__(self, inner: Evaluator, train: bool) -> None:
        self.inner = inner
        self.train = train
        self.trained = 0

    @property
    def reference_score(self) -> float:
        """The reference (CE) score of the run's evaluator."""
        return self.inner.reference_score

    def evaluate(
        self, candidates: Sequence[Any], context: Sequence[dict[str, Any]] | None = None
    ) -> list[EvalResult]:
        """Evaluate a batch (see :class:`loss_rl.evaluation.EvaluatorLike`)."""
        if self.train:
            out = self.inner.evaluate(candidates, context)
            self.trained += sum(r.trained for r in out)
            return out
        out = []
        for expr in candidates:
            hit = self.inner.lookup(expr)
            if hit is not None:
                out.append(replace(hit, expression=str(expr), source="cache_key", seconds=0.0))
                continue
            # Not even checked: the probe checks cost a sizeable fraction of a tiny training.
            reason = "not evaluated in this run (inspection without training)"
            out.append(
                EvalResult(expr.key, str(expr), None, Status.ERROR, source="none", reason=reason)
            )
        return out


def inspect_evaluator(run: Run, train: bool) -> InspectEvaluator:
    """The evaluator of ``run``'s task, its cache warmed from the run's ledger."""
    preset = env_preset(run)
    inner = Evaluator(
        preset.task,
        seeds=preset.evaluation.seeds,
        data_seed=preset.evaluation.data_seed,
        ledger=ReadOnlyLedger(run.path / LEDGER),  # type: ignore[arg-type]
    )
    return InspectEvaluator(inner, train)
