"""The evaluator: static checks → cache lookup → batched training → results recorded.

The environment (:mod:`loss_rl.envs`) knows the evaluator only through :class:`EvaluatorLike`:
``evaluate(candidates) -> results``, in order, never raising for a bad candidate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loss_rl.errors import ConfigError
from loss_rl.expr import Expr, TaskKind, check, fingerprint, known_loss
from loss_rl.results import EvalResult, Status

if TYPE_CHECKING:
    from loss_rl.tasks import TaskConfig
    from loss_rl.training import TrainResult

logger = logging.getLogger(__name__)


class LedgerLike(Protocol):
    """Where an evaluator keeps its results (:class:`loss_rl.store.Ledger` is the SQLite one).

    Results recorded by one session warm the cache of the next (a resume trains nothing twice).
    """

    def resolved(self) -> Iterable[EvalResult]:
        """Every result that decided a key by itself (trained or rejected), oldest first."""
        ...

    def record(
        self, results: Sequence[EvalResult], contexts: Sequence[dict[str, Any]] | None = None
    ) -> None:
        """Append one batch of results (with their bookkeeping contexts) atomically."""
        ...


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


# ---------------------------------------------------------------------------------------------
# Executors: where the batched training of new candidates runs.


@runtime_checkable
class Executor(Protocol):
    """Runs the batched trainer on candidates (in-process by default; Ray is a drop-in).

    An executor may also have ``start()`` (connect / start workers; a search calls it before it
    trains anything, so a bad set-up fails at start-up) and ``close()``. See
    :mod:`loss_rl.executors`.
    """

    def run(
        self,
        candidates: Sequence[Expr],
        task: TaskConfig,
        steps: int,
        seeds: Sequence[int],
        data_seed: int | None,
        splits: Sequence[str] = ("val",),
    ) -> list[TrainResult]:
        """Train every candidate on every seed; one result per pair, candidate-major.

        The result's ``score`` is the task metric on the first of ``splits``.
        """
        ...


class InProcessExecutor:
    """Trains in this process with :func:`loss_rl.training.train` (the default)."""

    def start(self) -> None:
        """Start the trainer's worker processes now, not in the first evaluation."""
        from loss_rl.training import start_workers

        start_workers()

    def close(self) -> None:
        """Nothing to do: the worker pool is shared by the process and stops at exit."""

    def run(
        self,
        candidates: Sequence[Expr],
        task: TaskConfig,
        steps: int,
        seeds: Sequence[int],
        data_seed: int | None,
        splits: Sequence[str] = ("val",),
    ) -> list[TrainResult]:
        """See :meth:`Executor.run`."""
        from loss_rl.training import train

        return train(candidates, task, steps, seeds, splits=splits, data_seed=data_seed)


# ---------------------------------------------------------------------------------------------
# The evaluator.


@dataclass
class EvalStats:
    """Counters of one evaluator's life (a resumed run starts them at zero)."""

    proposed: int = 0
    trained: int = 0
    cached: int = 0
    rejected: int = 0
    diverged: int = 0
    errors: int = 0
    train_seconds: float = 0.0

    @property
    def resolved_without_training(self) -> float:
        """Share of proposals answered by the checks or the cache."""
        return (self.cached + self.rejected) / self.proposed if self.proposed else 0.0


class Evaluator:
    """Scores candidate losses: checks → cache (key, then fingerprint) → batched training → ledger.

    Args:
        task: The task the candidates are trained on.
        steps: Inner-training steps (the search fidelity); defaults to ``task.training.steps``.
        seeds: Paired model seeds; a candidate's score is the mean validation score over them.
        data_seed: Seed of the data split and corruption (fixed for a run so seeds are paired).
        ledger: Where results are recorded; its earlier results warm the cache (resume).
        executor: Where training runs; :class:`InProcessExecutor` by default.
        reference: The reference loss whose score defines ``reference_score`` (CE).
    """

    def __init__(
        self,
        task: TaskConfig,
        *,
        steps: int | None = None,
        seeds: Sequence[int] = (0, 1),
        data_seed: int | None = 0,
        ledger: LedgerLike | None = None,
        executor: Executor | None = None,
        reference: Expr | None = None,
    ) -> None:
        self.task = task
        self.kind = task.kind
        self.steps = int(steps if steps is not None else task.training.steps)
        self.seeds = tuple(int(s) for s in seeds)
        if not self.seeds:
            raise ConfigError("needs at least one seed", field="evaluation.seeds")
        self.data_seed = data_seed
        self.ledger = ledger
        self.executor = executor or InProcessExecutor()
        self._reference_expr = reference or _default_reference(self.kind)
        self._reference_score: float | None = None
        self.stats = EvalStats()
        self._by_key: dict[str, EvalResult] = {}
        self._by_fp: dict[str, EvalResult] = {}
        if ledger is not None:
            for r in ledger.resolved():
                self._remember(r)

    def _remember(self, r: EvalResult) -> None:
        if r.status is Status.ERROR:
            return  # an error is not an answer: the candidate may be tried again
        self._by_key[r.key] = r
        if r.fingerprint and r.source == "trained":
            self._by_fp.setdefault(r.fingerprint, r)

    @property
    def reference_score(self) -> float:
        """Validation score of the reference loss (CE) on the same seeds (trained once)."""
        if self._reference_score is None:
            (res,) = self.evaluate([self._reference_expr], [{"role": "reference"}])
            self._reference_score = res.score if res.score is not None else 0.0
        return self._reference_score

    def lookup(self, expr: Expr) -> EvalResult | None:
        """The cached result for ``expr``'s canonical key, if any."""
        return self._by_key.get(expr.key)

    def evaluate(
        self, candidates: Sequence[Expr], context: Sequence[dict[str, Any]] | None = None
    ) -> list[EvalResult]:
        """Evaluate a batch (see :class:`EvaluatorLike`); records the batch in the ledger."""
        n = len(candidates)
        results: list[EvalResult | None] = [None] * n
        pending: dict[str, list[int]] = {}  # key -> indices waiting for that key's training
        pending_fp: dict[str, str] = {}  # fingerprint -> key trained for it in this batch
        order: list[tuple[str, Expr, str | None]] = []
        for i, expr in enumerate(candidates):
            try:
                key = expr.key
            except Exception as err:  # recorded as status=error, never raised into the agent
                results[i] = EvalResult("", str(expr), None, Status.ERROR, reason=repr(err))
                continue
            hit = self._by_key.get(key)
            if hit is not None:
                results[i] = replace(hit, expression=str(expr), source="cache_key", seconds=0.0)
                continue
            if key in pending:
                pending[key].append(i)
                continue
            verdict = check(expr, self.kind)
            if not verdict.ok:
                res = EvalResult(
                    key, str(expr), None, Status.REJECTED, source="check", reason=str(verdict)
                )
                self._remember(res)
                results[i] = res
                continue
            fp = fingerprint(expr, self.kind)
            if fp is not None and fp in self._by_fp:
                res = replace(
                    self._by_fp[fp],
                    key=key,
                    expression=str(expr),
                    source="cache_fingerprint",
                    seconds=0.0,
                )
                self._by_key[key] = res
                results[i] = res
                continue
            if fp is not None and fp in pending_fp:
                pending[pending_fp[fp]].append(i)
                continue
            pending[key] = [i]
            if fp is not None:
                pending_fp[fp] = key
            order.append((key, expr, fp))

        if order:
            trained = self._train([e for _, e, _ in order])
            for (key, expr, fp), res in zip(order, trained, strict=True):
                res = replace(res, key=key, expression=str(expr), fingerprint=fp)
                self._remember(res)
                first, *rest = pending[key]
                results[first] = res
                for j in rest:
                    same_key = candidates[j].key == key
                    results[j] = replace(
                        res,
                        key=candidates[j].key,
                        expression=str(candidates[j]),
                        source="cache_key" if same_key else "cache_fingerprint",
                        seconds=0.0,
                    )

        final = [r for r in results if r is not None]
        assert len(final) == n
        self._count(final)
        if self.ledger is not None and final:
            self.ledger.record(final, context)
        return final

    def _train(self, exprs: list[Expr]) -> list[EvalResult]:
        t0 = time.perf_counter()

        def failed(e: Expr, status: Status, reason: str, seconds: float = 0.0) -> EvalResult:
            return EvalResult(
                "",
                str(e),
                None,
                status,
                fidelity=self.steps,
                seeds=self.seeds,
                seconds=seconds,
                reason=reason,
            )

        try:
            raw = self.executor.run(exprs, self.task, self.steps, self.seeds, self.data_seed)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # recorded as status=error, never raised into the agent
            logger.exception("training batch of %d candidates failed", len(exprs))
            return [failed(e, Status.ERROR, f"{type(err).__name__}: {err}") for e in exprs]
        elapsed = time.perf_counter() - t0
        self.stats.train_seconds += elapsed
        seconds = elapsed / max(len(exprs), 1)
        per: dict[int, list[TrainResult]] = {}
        for r in raw:
            per.setdefault(r.candidate, []).append(r)
        out: list[EvalResult] = []
        for i, e in enumerate(exprs):
            rs = per.get(i, [])
            bad = [r for r in rs if r.status != "ok" or r.score is None]
            if len(rs) != len(self.seeds):
                out.append(failed(e, Status.ERROR, "trainer returned a wrong number of results"))
            elif bad:
                # Diverged on any seed = diverged (the trainer's rule, loss_rl.training.TrainResult:
                # NaN/inf, or a loss or outputs exploded past its bounds); each seed says why.
                reason = "; ".join(f"seed {r.seed}: {_why(r)}" for r in bad)
                out.append(failed(e, Status.DIVERGED, reason, seconds))
            else:
                score = sum(float(r.score) for r in rs) / len(rs)  # type: ignore[arg-type]
                names = set().union(*(r.metrics.get("val", {}).keys() for r in rs))
                metrics = {
                    m: sum(r.metrics["val"][m] for r in rs) / len(rs)
                    for m in sorted(names)
                    if all(m in r.metrics.get("val", {}) for r in rs)
                }
                out.append(
                    EvalResult(
                        "",
                        str(e),
                        score,
                        Status.OK,
                        metrics=metrics,
                        fidelity=self.steps,
                        seeds=self.seeds,
                        seconds=seconds,
                    )
                )
        return out

    def _count(self, results: Sequence[EvalResult]) -> None:
        s = self.stats
        s.proposed += len(results)
        for r in results:
            if r.source.startswith("cache"):
                s.cached += 1
            elif r.status is Status.REJECTED:
                s.rejected += 1
            elif r.trained:
                s.trained += 1
                s.diverged += r.status is Status.DIVERGED
                s.errors += r.status is Status.ERROR


def _why(r: TrainResult) -> str:
    """Why one seed's training has no score: the trainer's reason, else what is known."""
    if r.reason:
        return r.reason
    return "no score" if r.diverged_at is None else f"diverged at step {r.diverged_at}"


def _default_reference(kind: TaskKind) -> Expr:
    return known_loss("ce" if kind is TaskKind.CLASSIFICATION else "mse")
