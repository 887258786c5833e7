"""The evaluator: static checks → cache lookup → batched training → results recorded.

The environment (:mod:`loss_rl.envs`) knows the evaluator only through :class:`EvaluatorLike`:
``evaluate(candidates) -> results``, in order, never raising for a bad candidate.

Multi-fidelity evaluation (``evaluation.fidelity``, :class:`FidelityConfig`; off by default) is
successive halving inside each batch with ASHA's promotion rule across batches: new candidates
train to the lowest rung, and those in the top ``keep`` share of everyone that has reached a rung
so far are continued, from their saved model and optimiser state, to the next. A finished rung
is recorded in the ledger (with the states its promotion continues from) before the next one
starts, so a killed run resumes mid-batch without retraining it. Only the batch's own candidates
are promoted: once a batch's results are returned (the agent's rewards), they stay the cached
answer, and their saved states are dropped. The budget then counts optimiser steps
(:attr:`Evaluator.training_equivalents`).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loss_rl.errors import ConfigError
from loss_rl.expr import Expr, TaskKind, fingerprint, known_loss
from loss_rl.results import EvalResult, Status
from loss_rl.store import RungRecord
from loss_rl.training import check_batch, states_from_bytes, states_to_bytes

if TYPE_CHECKING:
    from loss_rl.tasks import TaskConfig
    from loss_rl.training import ModelState, TrainResult

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
class RungLedgerLike(Protocol):
    """A ledger that also keeps multi-fidelity rungs (:class:`loss_rl.store.Ledger` does).

    A finished rung is recorded, with the training state its promotion continues from, before
    the next rung starts, so a killed run never trains a finished rung again.
    """

    def record_rungs(self, rows: Sequence[RungRecord]) -> None:
        """Append finished rungs (and their states) atomically."""
        ...

    def rungs(self) -> list[RungRecord]:
        """Every finished rung, oldest first, without the states."""
        ...

    def rung_state(self, key: str, rung: int) -> bytes | None:
        """The saved state of ``key`` at ``rung`` (``None`` if none is kept)."""
        ...

    def drop_rung_states(self, keys: Sequence[str]) -> None:
        """Forget the states of ``keys`` (their batch is decided; nothing continues them)."""
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


@runtime_checkable
class ContinuingExecutor(Protocol):
    """An executor that can also continue models from saved states (multi-fidelity rungs)."""

    def run_from(
        self,
        candidates: Sequence[Expr],
        task: TaskConfig,
        steps: int,
        seeds: Sequence[int],
        data_seed: int | None,
        start: Sequence[ModelState] | None,
        keep_state: bool,
    ) -> list[TrainResult]:
        """:meth:`Executor.run` from ``start`` states (see :func:`loss_rl.training.train`)."""
        ...


class InProcessExecutor:
    """Trains in this process with :func:`loss_rl.training.train` (the default).

    Args:
        device: Where the trainings run (see :func:`loss_rl.training.resolve_device`): ``None``
            or ``"cpu"``, the trainer's worker processes; ``"cuda"``, ``"cuda:N"`` or
            ``"auto"``, a GPU when there is one.
    """

    #: A class default too: a subclass that does not call ``__init__`` trains on the CPU.
    device: str | None = None

    def __init__(self, device: str | None = None) -> None:
        self.device = device

    def start(self) -> None:
        """Check the device, and start the trainer's worker processes now (CPU), not in the
        first evaluation.

        Raises:
            ConfigError: (field ``device``) for a GPU this machine does not have.
        """
        from loss_rl.training import resolve_device, start_workers

        if resolve_device(self.device).type == "cpu":
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

        return train(
            candidates, task, steps, seeds, splits=splits, data_seed=data_seed, device=self.device
        )

    def run_from(
        self,
        candidates: Sequence[Expr],
        task: TaskConfig,
        steps: int,
        seeds: Sequence[int],
        data_seed: int | None,
        start: Sequence[ModelState] | None,
        keep_state: bool,
    ) -> list[TrainResult]:
        """See :meth:`ContinuingExecutor.run_from`."""
        from loss_rl.training import train

        return train(
            candidates,
            task,
            steps,
            seeds,
            data_seed=data_seed,
            start=start,
            keep_state=keep_state,
            device=self.device,
        )


# ---------------------------------------------------------------------------------------------
# Multi-fidelity evaluation (successive halving / ASHA).


@dataclass(frozen=True)
class FidelityConfig:
    """Successive halving of each batch of candidates (``evaluation.fidelity`` in an env preset).

    Every new candidate trains to ``rungs[0]`` optimiser steps; at each rung a candidate goes on
    (continued from its saved model and optimiser state, not from scratch) while its score is in
    the top ``keep`` share of *every* candidate that has reached that rung so far (ASHA's
    rule, Li et al. 2018), up to ``rungs[-1]``, the search fidelity.

    Attributes:
        rungs: Optimiser steps of the rungs, increasing; the last is the search's steps.
        keep: Share promoted at each rung (``1/η``; ``0.33`` keeps the top third).
    """

    rungs: tuple[int, ...]
    keep: float = 1 / 3

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], prefix: str = "evaluation.fidelity"
    ) -> FidelityConfig:
        """Validate ``{rungs: [...], keep: ...}``.

        Raises:
            ConfigError: naming the field for unknown keys or bad values.
        """
        if not isinstance(data, Mapping):
            raise ConfigError("must be a mapping {rungs: [...], keep: ...}", field=prefix)
        unknown = sorted(set(data) - {"rungs", "keep"})
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r}; allowed: keep, rungs", field=prefix)
        rungs = data.get("rungs")
        if (
            not isinstance(rungs, list)
            or not rungs
            or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rungs)
            or any(a >= b for a, b in itertools.pairwise(rungs))
        ):
            raise ConfigError(
                "must be a list of increasing positive step counts, e.g. [50, 150, 400]",
                field=f"{prefix}.rungs",
            )
        keep = data.get("keep", 1 / 3)
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep < 1:
            raise ConfigError("must be a share between 0 and 1, e.g. 0.33", field=f"{prefix}.keep")
        return cls(tuple(rungs), float(keep))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``config.yaml``."""
        return {"rungs": list(self.rungs), "keep": self.keep}


def promoted(
    scores: Sequence[float | None], everyone: Sequence[float | None], keep: float
) -> list[bool]:
    """ASHA's promotion rule at one rung.

    Args:
        scores: Scores of the candidates deciding now (``None``: diverged or failed).
        everyone: Scores of every candidate that has reached the rung, these included.
        keep: Share promoted.

    Returns:
        For each of ``scores``: whether it is among the top ``ceil(keep · len(everyone))`` of
        ``everyone`` (a tie with the last place promoted goes on too; ``None`` never does).
    """
    quota = math.ceil(keep * len(everyone))
    ranked = sorted((s for s in everyone if s is not None), reverse=True)
    if quota == 0 or not ranked:
        return [False] * len(scores)
    bar = ranked[min(quota, len(ranked)) - 1]
    return [s is not None and s >= bar for s in scores]


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
    #: Optimiser steps spent on candidates (per candidate, not per seed): ``steps`` per training
    #: without fidelity levels; each rung's increment with them.
    optimiser_steps: int = 0

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
        fidelity: Successive halving of each batch (:class:`FidelityConfig`); ``None`` (the
            default) trains every new candidate to ``steps``. With it, a result's ``fidelity``
            is the highest rung the candidate reached and its ``score`` the score there, as is:
            a candidate stopped at a low rung keeps its (usually lower) low-rung score, so the
            reward never credits steps that were not trained. The reference trains through
            every rung. The ledger must keep rungs (:class:`RungLedgerLike`) and the executor
            continue training (:class:`ContinuingExecutor`).

    Raises:
        ConfigError: for no seeds, or fidelity rungs that do not end at ``steps``, or fidelity
            with a ledger or executor that cannot keep or continue rungs.
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
        fidelity: FidelityConfig | None = None,
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
        self.fidelity = fidelity
        # Rung bookkeeping (fidelity only): every finished rung by (key, rung), this run's and
        # earlier sessions'; states of this batch's unfinished candidates without a ledger.
        self._rungs: dict[tuple[str, int], RungRecord] = {}
        self._states: dict[tuple[str, int], list[ModelState]] = {}
        self.steps_before = 0  # optimiser steps recorded by earlier sessions (fidelity only)
        if fidelity is not None:
            self._check_fidelity(fidelity)
            if isinstance(ledger, RungLedgerLike):
                for row in ledger.rungs():
                    self._rungs[(row.key, row.rung)] = row
                    self.steps_before += row.steps - self._below(row.rung)

    def _check_fidelity(self, fidelity: FidelityConfig) -> None:
        if fidelity.rungs[-1] != self.steps:
            raise ConfigError(
                f"the last rung must be the search's {self.steps} steps, got {fidelity.rungs[-1]}",
                field="evaluation.fidelity.rungs",
            )
        if not isinstance(self.executor, ContinuingExecutor):
            raise ConfigError(
                f"fidelity levels need an executor that continues training from saved states "
                f"(the in-process or the Ray executor); {type(self.executor).__name__} does not",
                field="evaluation.fidelity",
            )
        if self.ledger is not None and not isinstance(self.ledger, RungLedgerLike):
            raise ConfigError(
                f"fidelity levels need a ledger that keeps rungs; {type(self.ledger).__name__} "
                "does not",
                field="evaluation.fidelity",
            )

    def _below(self, rung: int) -> int:
        """Optimiser steps of the rung before ``rung`` (0 for the first)."""
        assert self.fidelity is not None
        return self.fidelity.rungs[rung - 1] if rung > 0 else 0

    @property
    def training_equivalents(self) -> float | None:
        """With fidelity levels, the optimiser steps spent by the run (earlier sessions
        included) in full-length trainings (``steps`` each); ``None`` without them.
        """
        if self.fidelity is None:
            return None
        return (self.steps_before + self.stats.optimiser_steps) / self.steps

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
            ref = self._reference_expr
            (res,) = self.evaluate([ref], [{"role": "reference"}])
            if self.fidelity is not None and res.ok and res.fidelity < self.steps:
                # The same loss proposed as a candidate stopped at a low rung; the reference is
                # its full-length score (its finished rungs are reused, as on a resume).
                (res,) = self._train_rungs([res.key], [ref], [True])
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
        keys: list[str | None] = [None] * n
        first_of_key: dict[str, int] = {}
        for i, expr in enumerate(candidates):
            try:
                key = expr.key
            except Exception as err:  # recorded as status=error, never raised into the agent
                results[i] = EvalResult("", str(expr), None, Status.ERROR, reason=repr(err))
                continue
            keys[i] = key
            if key not in self._by_key:
                first_of_key.setdefault(key, i)
        # The checks of the batch's new keys in one call: their descent checks run together.
        to_check = list(first_of_key.values())
        verdicts = dict(
            zip(to_check, check_batch([candidates[i] for i in to_check], self.kind), strict=True)
        )
        for i, expr in enumerate(candidates):
            key = keys[i]
            if key is None:
                continue
            hit = self._by_key.get(key)
            if hit is not None:
                results[i] = replace(hit, expression=str(expr), source="cache_key", seconds=0.0)
                continue
            if key in pending:
                pending[key].append(i)
                continue
            # A repeat of a key whose first candidate joined another key's training through
            # its fingerprint is neither cached nor pending: it shares that first verdict.
            verdict = verdicts[first_of_key[key]]
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
            exprs = [e for _, e, _ in order]
            if self.fidelity is None:
                trained = self._train(exprs)
            else:
                # The reference defines the reward's zero: it always trains to the last rung.
                roles = {
                    candidates[i].key
                    for i, c in enumerate(context or [])
                    if c.get("role") == "reference" and results[i] is None
                }
                full = [k in roles for k, _, _ in order]
                trained = self._train_rungs([k for k, _, _ in order], exprs, full)
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
        if self.fidelity is not None and order:
            # The batch is decided: its candidates are never promoted again (a reward, once
            # given, stays the cached answer), so their saved states can go.
            keys = [k for k, _, _ in order]
            if isinstance(self.ledger, RungLedgerLike):
                self.ledger.drop_rung_states(keys)
            self._states = {}
        return final

    def _failed(
        self, e: Expr, status: Status, reason: str, seconds: float = 0.0, steps: int | None = None
    ) -> EvalResult:
        return EvalResult(
            "",
            str(e),
            None,
            status,
            fidelity=self.steps if steps is None else steps,
            seeds=self.seeds,
            seconds=seconds,
            reason=reason,
        )

    def _train(self, exprs: list[Expr]) -> list[EvalResult]:
        t0 = time.perf_counter()
        try:
            raw = self.executor.run(exprs, self.task, self.steps, self.seeds, self.data_seed)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # recorded as status=error, never raised into the agent
            logger.exception("training batch of %d candidates failed", len(exprs))
            return [self._failed(e, Status.ERROR, f"{type(err).__name__}: {err}") for e in exprs]
        return self._aggregate(exprs, raw, self.steps, time.perf_counter() - t0)

    def _aggregate(
        self, exprs: Sequence[Expr], raw: Sequence[TrainResult], steps: int, elapsed: float
    ) -> list[EvalResult]:
        """One result per candidate from the trainer's per-seed results."""
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
                out.append(
                    self._failed(
                        e, Status.ERROR, "trainer returned a wrong number of results", steps=steps
                    )
                )
            elif bad:
                # Diverged on any seed = diverged (the trainer's rule, loss_rl.training.TrainResult:
                # NaN/inf, or a loss or outputs exploded past its bounds); each seed says why.
                reason = "; ".join(f"seed {r.seed}: {_why(r)}" for r in bad)
                out.append(self._failed(e, Status.DIVERGED, reason, seconds, steps))
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
                        fidelity=steps,
                        seeds=self.seeds,
                        seconds=seconds,
                    )
                )
        return out

    # ------------------------------------------------------------------ fidelity levels
    def _train_rungs(
        self, keys: Sequence[str], exprs: Sequence[Expr], full: Sequence[bool]
    ) -> list[EvalResult]:
        """Successive halving of one batch of new candidates (see :class:`FidelityConfig`).

        A rung already in the ledger (a resumed run) is taken from it, never trained again;
        each finished rung is recorded, with the states its promotion continues from, before
        the next starts.
        """
        fid = self.fidelity
        assert fid is not None
        last = len(fid.rungs) - 1
        final: dict[int, EvalResult] = {}
        failed: set[int] = set()
        seconds = [0.0] * len(exprs)
        active = list(range(len(exprs)))
        for k, steps in enumerate(fid.rungs):
            todo = [i for i in active if (keys[i], k) not in self._rungs]
            # A candidate whose saved state is gone (it should not be) trains from scratch.
            states = {i: self._state(keys[i], k - 1) for i in todo} if k else {}
            cont = [i for i in todo if states.get(i) is not None]
            fresh = [i for i in todo if states.get(i) is None]
            new: dict[int, list[ModelState] | None] = {}
            for group, start in ((cont, [s for i in cont for s in states[i] or []]), (fresh, None)):
                if not group:
                    continue
                for i, res, st in self._train_rung(group, exprs, steps, start, keep_state=k < last):
                    if res.status is Status.ERROR:
                        final[i] = replace(res, seconds=seconds[i] + res.seconds)
                        failed.add(i)
                        continue  # an error is not an answer: nothing recorded, no promotion
                    self._rungs[(keys[i], k)] = RungRecord(
                        keys[i],
                        k,
                        steps,
                        res.status,
                        res.score,
                        res.metrics,
                        res.reason,
                        res.seconds,
                    )
                    new[i] = st
            active = [i for i in active if i not in failed]
            for i in active:
                row = self._rungs[(keys[i], k)]
                seconds[i] += row.seconds if i in new else 0.0
                final[i] = EvalResult(
                    "",
                    str(exprs[i]),
                    row.score,
                    row.status,
                    metrics=dict(row.metrics),
                    fidelity=row.steps,
                    seeds=self.seeds,
                    seconds=seconds[i],
                    reason=row.reason,
                )
            going: list[int] = []
            if k < last:
                everyone = [r.score for (_, kk), r in self._rungs.items() if kk == k]
                go = promoted([final[i].score for i in active], everyone, fid.keep)
                going = [
                    i for i, g in zip(active, go, strict=True) if g or (full[i] and final[i].ok)
                ]
            # Record the rung before training the next one; only the promoted keep their states
            # (a resume recomputes the same promotions from the same rows).
            if new:
                rows = []
                for i, st in new.items():
                    kept = st if i in going else None
                    if kept is not None and self.ledger is None:
                        self._states[(keys[i], k)] = kept
                    blob = None if kept is None or self.ledger is None else states_to_bytes(kept)
                    rows.append(replace(self._rungs[(keys[i], k)], state=blob))
                if isinstance(self.ledger, RungLedgerLike):
                    self.ledger.record_rungs(rows)
            active = going
            if not active:
                break
        return [final[i] for i in range(len(exprs))]

    def _train_rung(
        self,
        idx: Sequence[int],
        exprs: Sequence[Expr],
        steps: int,
        start: list[ModelState] | None,
        *,
        keep_state: bool,
    ) -> list[tuple[int, EvalResult, list[ModelState] | None]]:
        """Train candidates ``idx`` to ``steps`` (from ``start`` states, candidate-major)."""
        assert isinstance(self.executor, ContinuingExecutor)
        group = [exprs[i] for i in idx]
        begun = start[0].step if start else 0
        t0 = time.perf_counter()
        try:
            raw = self.executor.run_from(
                group, self.task, steps, self.seeds, self.data_seed, start, keep_state
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # recorded as status=error, never raised into the agent
            logger.exception("training rung of %d candidates failed", len(group))
            why = f"{type(err).__name__}: {err}"
            return [
                (i, self._failed(e, Status.ERROR, why, steps=steps), None)
                for i, e in zip(idx, group, strict=True)
            ]
        self.stats.optimiser_steps += (steps - begun) * len(group)
        evals = self._aggregate(group, raw, steps, time.perf_counter() - t0)
        n = len(self.seeds)
        out: list[tuple[int, EvalResult, list[ModelState] | None]] = []
        for c, (i, res) in enumerate(zip(idx, evals, strict=True)):
            st = [r.state for r in raw[c * n : (c + 1) * n]]
            kept = st if res.ok and all(x is not None for x in st) else None
            out.append((i, res, kept))  # type: ignore[arg-type]
        return out

    def _state(self, key: str, rung: int) -> list[ModelState] | None:
        """The saved states of ``key`` after ``rung`` (``None`` if none is kept)."""
        if (key, rung) in self._states:
            return self._states[(key, rung)]
        if isinstance(self.ledger, RungLedgerLike):
            blob = self.ledger.rung_state(key, rung)
            if blob is not None:
                try:
                    return states_from_bytes(blob)
                except ConfigError:
                    logger.warning("saved state of %s at rung %d is unreadable", key, rung)
        return None

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
                if self.fidelity is None:  # with fidelity levels, each rung counts its steps
                    s.optimiser_steps += self.steps


def _why(r: TrainResult) -> str:
    """Why one seed's training has no score: the trainer's reason, else what is known."""
    if r.reason:
        return r.reason
    return "no score" if r.diverged_at is None else f"diverged at step {r.diverged_at}"


def _default_reference(kind: TaskKind) -> Expr:
    return known_loss("ce" if kind is TaskKind.CLASSIFICATION else "mse")
