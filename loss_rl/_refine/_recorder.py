"""An executor wrapper that keeps the raw per-seed results of a verification."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from loss_rl.evaluation import InProcessExecutor
from loss_rl.expr import Expr
from loss_rl.tasks import TaskConfig


class VerificationRecorder:
    """Runs a verification's trainings through ``executor`` and keeps their per-seed results.

    :func:`loss_rl.verify.verify` reports each loss against CE; the refined-vs-unrefined paired
    difference needs the per-seed scores, which this recorder keeps (same trainer, same run).

    Args:
        executor: The :class:`loss_rl.evaluation.Executor` to wrap; in-process by default.
    """

    def __init__(self, executor: Any = None) -> None:
        self.executor = executor or InProcessExecutor()
        self.candidates: list[Expr] = []
        self.seeds: list[int] = []
        self.results: list[Any] = []

    def run(
        self,
        candidates: Sequence[Expr],
        task: TaskConfig,
        steps: int,
        seeds: Sequence[int],
        data_seed: int | None,
        splits: Sequence[str] = ("val",),
    ) -> list[Any]:
        """Run the wrapped executor and remember what it returned."""
        out = self.executor.run(candidates, task, steps, seeds, data_seed, splits=splits)
        self.candidates, self.seeds, self.results = list(candidates), list(seeds), list(out)
        return out

    def scores(self, expr: Expr, occurrence: int = 0) -> np.ndarray:
        """Per-seed test scores of the ``occurrence``-th candidate equal to ``expr``."""
        idx = [i for i, c in enumerate(self.candidates) if c == expr]
        if len(idx) <= occurrence:
            return np.full(len(self.seeds), np.nan)
        i = idx[occurrence]
        out = np.full(len(self.seeds), np.nan)
        for r in self.results:
            if r.candidate == i and r.status == "ok" and r.score is not None:
                out[self.seeds.index(r.seed)] = r.score
        return out
