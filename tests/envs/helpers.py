"""Instant evaluators for env tests (no torch): scores from a table or from a hash of the key."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from loss_rl.evaluation import EvalResult, Status
from loss_rl.expr import Expr


class TableEvaluator:
    """Scores by canonical key from a table (``default`` otherwise); a status instead of a
    score makes the candidate rejected/diverged. The first evaluation of a key counts as trained.
    """

    def __init__(
        self,
        table: dict[str, float | Status] | None = None,
        default: float | Status = 0.4,
        reference: float = 0.5,
    ) -> None:
        self.table = dict(table or {})
        self.default = default
        self.reference = reference
        self.calls: list[int] = []
        self.contexts: list[list[dict[str, Any]]] = []
        self.seen: set[str] = set()

    @property
    def reference_score(self) -> float:
        return self.reference

    def set(self, expr: Expr, value: float | Status) -> None:
        self.table[expr.key] = value

    def value(self, key: str) -> float | Status:
        return self.table.get(key, self.default)

    def evaluate(
        self, candidates: Sequence[Expr], context: Sequence[dict[str, Any]] | None = None
    ) -> list[EvalResult]:
        self.calls.append(len(candidates))
        self.contexts.append(list(context or []))
        out = []
        for e in candidates:
            key = e.key
            v = self.value(key)
            if isinstance(v, Status):
                source = "check" if v is Status.REJECTED else "trained"
                out.append(EvalResult(key, str(e), None, v, source=source, reason="scripted"))
                continue
            source = "cache_key" if key in self.seen else "trained"
            self.seen.add(key)
            out.append(EvalResult(key, str(e), float(v), Status.OK, source=source))
        return out


class HashEvaluator(TableEvaluator):
    """A pseudo-random but deterministic landscape: 1 in 8 keys rejected, 1 in 16 diverged."""

    def value(self, key: str) -> float | Status:
        h = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
        if h % 8 == 0:
            return Status.REJECTED
        if h % 16 == 1:
            return Status.DIVERGED
        return (h % 1000) / 1000
