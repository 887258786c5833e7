"""The batched inner trainer: ``N`` models × ``N`` losses in one pass.

``train(candidates, task, steps, seeds)`` trains one model per (candidate, seed). All of them
live in one :class:`~loss_rl.training._population.StackedModel` (each parameter stacked along a
leading model dimension); a step is

1. one gather of each seed's minibatch (same order for every candidate of that seed);
2. one batched forward of all models;
3. per-model losses and ``dL/dZ`` from :class:`~loss_rl.training._ploss.PopulationLoss`;
4. a health check (:meth:`_Run._check`, the one place that decides divergence): a model whose
   loss or ``dL/dZ`` is not finite, whose mean minibatch loss has exploded past
   :data:`LOSS_BOUND` (and :data:`LOSS_GROWTH` × its first step's), or whose outputs have
   exploded past :data:`OUTPUT_BOUND` is marked ``diverged`` at this step and frozen — its
   ``dL/dZ`` and gradient rows are zeroed and its parameters restored after every update. Rows
   never mix, so the other models are bit-for-bit unaffected (a parameter gradient can only
   become non-finite by overflow, which makes the next loss non-finite);
5. one backward into the parameters and one stacked optimiser update (exactly per model).

**Pairing.** Models with the same seed share initialisation, data split / noise realisation and
minibatch order, so differences between candidates are differences between losses. A model's
result does not depend on what else is in the batch beyond float rounding (batched kernels may
round differently for different population sizes).

**Processes.** :func:`train` splits the population over worker processes of one thread each
(:func:`split_candidates`; see :mod:`loss_rl.training._workers` for the measurements behind that
choice); :func:`start_workers` starts them ahead of the first call.

**Devices.** ``train(..., device=...)`` (see :func:`~loss_rl.training.resolve_device`) runs on
the CPU by default, as above. On a CUDA device the whole population trains in the calling
process (no worker processes: one GPU holds every model) and every tensor of the run lives on
the device — data, minibatch schedule, parameters, optimiser state, loss constants, health and
checkpoint bookkeeping; metrics and saved states come back to the CPU.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from loss_rl.errors import ConfigError
from loss_rl.expr import Expr, TaskKind, compile_loss
from loss_rl.tasks import TaskConfig, TaskData, build_model, load_task
from loss_rl.training._device import host_copy, resolve_device
from loss_rl.training._functional import build_population
from loss_rl.training._metrics import classification_metrics, regression_metrics, score_of
from loss_rl.training._optim import make_optimizer
from loss_rl.training._ploss import PopulationLoss
from loss_rl.training._population import PopulationModel
from loss_rl.training._program import structure
from loss_rl.training._reference import batch_schedule, init_seed
from loss_rl.training._state import ModelState
from loss_rl.training._workers import default_workers, get_pool, run_chunks

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

#: A model's mean minibatch loss beyond this magnitude (and beyond :data:`LOSS_GROWTH` times its
#: first step's) means the training exploded. The library's losses stay below 15 on every bundled
#: preset and suite task (full-length runs, two seeds; Baikal on a linear model is the largest);
#: at 1e6 float32 resolves a loss to no better than 0.06, the whole range of a healthy loss.
LOSS_BOUND = 1e6
#: A loss that only *starts* large (a healthy loss times a big constant, which Adam trains exactly
#: like the loss itself) is not an explosion: the bound is at least this factor times the
#: magnitude of the model's first-step loss.
LOSS_GROWTH = 10.0
#: A model output (logit or standardised prediction) beyond this magnitude means the training
#: exploded, whatever the loss's scale. The library's losses keep outputs below 1e3 on the same
#: runs (MAE on MNIST-1D after 2000 steps: 907); at 1e6 float32 resolves a logit to no better
#: than 0.06.
OUTPUT_BOUND = 1e6

_EVAL_CHUNK_ELEMENTS = 1 << 22  # activations per evaluation chunk (N · n · width)
_GATHER_BLOCK_ELEMENTS = 1 << 20  # minibatch inputs gathered at once (steps · S · b · features)
_MIN_MODELS_PER_WORKER = 2


@dataclass(frozen=True)
class TrainResult:
    """Outcome of training one model (one candidate loss with one seed).

    Attributes:
        candidate: Index of the candidate in the list passed to :func:`train`.
        seed: The training seed.
        status: ``"ok"`` or ``"diverged"``: at some step the loss or ``dL/dZ`` was NaN/inf, the
            mean minibatch loss exceeded ``max(LOSS_BOUND, LOSS_GROWTH · |first-step loss|)`` in
            magnitude, or an output exceeded ``OUTPUT_BOUND`` (see :meth:`_Run._check`); or the
            candidate could not be evaluated at all. ``reason`` says which.
        metrics: ``{split: {metric: value}}`` for the requested splits (empty if diverged).
        score: The task's score metric on the first requested split (higher is better);
            ``None`` if diverged.
        diverged_at: Step at which the model diverged (``None`` if it did not).
        seconds: Wall time of the pass divided by the number of models in it.
        steps: Optimiser steps actually taken (fewer after divergence or early stopping).
        reason: Why the model diverged, with the step and the offending value (empty when ok).
        selected_step: With checkpoint selection (``task.training.select == "best"``), the step
            of the checkpoint the model ends with and is scored with (the best validation
            score among the checks; the earliest on a tie); ``None`` for ``select: last``.
        state: With ``train(..., keep_state=True)``, what a later call needs to continue this
            model (``start=``); ``None`` otherwise and for a diverged model.
    """

    candidate: int
    seed: int
    status: str
    metrics: dict[str, dict[str, float]]
    score: float | None
    diverged_at: int | None
    seconds: float
    steps: int = 0
    reason: str = ""
    selected_step: int | None = None
    state: ModelState | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """Whether training finished without diverging (see ``status``)."""
        return self.status == "ok"


@dataclass
class _Outcome:
    status: str = "ok"
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    score: float | None = None
    diverged_at: int | None = None
    steps: int = 0
    reason: str = ""
    selected_step: int | None = None
    state: ModelState | None = None


class _Data:
    """The seeds' training data concatenated, and their minibatches gathered in blocks of steps.

    :attr:`x` and :attr:`y` (and the schedule, the evaluation splits of :meth:`split`) are on
    ``device``; :attr:`datas` keep the loaded (CPU) task data.
    """

    def __init__(
        self,
        task: TaskConfig,
        seeds: Sequence[int],
        data_seed: int | None,
        device: torch.device | None = None,
    ) -> None:
        self.device = torch.device("cpu") if device is None else device
        self.seeds = list(seeds)
        self.shared = data_seed is not None or len(set(self.seeds)) == 1
        data_seeds = [data_seed] * len(seeds) if data_seed is not None else self.seeds
        self.datas: list[TaskData] = [load_task(task, s) for s in data_seeds]
        first = self.datas[0]
        self.kind: TaskKind = first.kind
        self.num_classes = first.num_classes
        self.num_features = first.num_features
        self.num_outputs = first.num_outputs
        trains = [first.train] if self.shared else [d.train for d in self.datas]
        self.x = trains[0].x if len(trains) == 1 else torch.cat([t.x for t in trains])
        self.y = trains[0].y if len(trains) == 1 else torch.cat([t.y for t in trains])
        # Moved once (``.to`` returns the tensor itself on the CPU).
        self.x, self.y = self.x.to(self.device), self.y.to(self.device)
        self._splits: dict[str, list[tuple[Tensor, Tensor]]] = {}
        sizes = [len(t) for t in trains]
        self.offsets = [0] * len(seeds)
        if not self.shared:
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            self.offsets = starts
        self.sizes = [sizes[0]] * len(seeds) if self.shared else sizes
        self.batch = min(task.training.batch_size, min(self.sizes))

    def schedule(self, steps: int) -> Tensor:
        """Row indices ``[steps, S, b]`` into :attr:`x` / :attr:`y`, on their device.

        Drawn on the CPU (the same order on every device), then moved in one copy so that a
        step's gather does not copy indices to the device.
        """
        per_seed = [
            batch_schedule(n, self.batch, steps, s) + off
            for n, s, off in zip(self.sizes, self.seeds, self.offsets, strict=True)
        ]
        return torch.stack(per_seed, dim=1).to(self.device)

    def minibatches(
        self, schedule: Tensor, begin: int, end: int
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The per-seed minibatches ``(x [S, b, ...], y [S, b])`` of steps ``begin .. end - 1``.

        Gathered a block of steps at a time, one ``index_select`` per tensor and block: a
        gather per step costs ~20 µs of dispatch for a few KB (measured here: ~0.2 ms of a
        ~1.1 ms step for one candidate), a block costs one. A block holds at most
        ``_GATHER_BLOCK_ELEMENTS`` inputs.
        """
        row = self.x[0].numel() * max(1, schedule.shape[1] * schedule.shape[2])
        block = max(1, _GATHER_BLOCK_ELEMENTS // row)
        for first in range(begin, end, block):
            last = min(first + block, end)
            flat = schedule[first:last].reshape(-1)
            shape = (last - first, *schedule.shape[1:])
            xs = self.x.index_select(0, flat).view(*shape, *self.x.shape[1:])
            ys = self.y.index_select(0, flat).view(*shape, *self.y.shape[1:])
            for k in range(last - first):
                yield xs[k], ys[k]

    def split(self, name: str) -> list[tuple[Tensor, Tensor]]:
        """``(x, y)`` of split ``name`` for each of :attr:`datas`, on :attr:`device`."""
        # Moved once per run, not at every validation check (on the CPU ``.to`` returns the
        # task's own tensors).
        cached = self._splits.get(name)
        if cached is None:
            parts = [d.split(name) for d in self.datas]
            cached = [(p.x.to(self.device), p.y.to(self.device)) for p in parts]
            self._splits[name] = cached
        return cached


def _check_args(task: TaskConfig, steps: int, seeds: Sequence[int], splits: Sequence[str]) -> None:
    if not isinstance(task, TaskConfig):
        raise ConfigError(
            f"expected a TaskConfig (build one with TaskConfig.from_dict), got "
            f"{type(task).__name__}",
            field="task",
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps must be a non-negative integer, got {steps!r}", field="steps")
    if isinstance(seeds, (str, bytes)) or len(seeds) == 0:
        raise ConfigError("give at least one seed", field="seeds")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"seeds must be non-negative integers, got {s!r}", field="seeds")
    if isinstance(splits, str) or not splits:
        raise ConfigError("give a non-empty list of splits, e.g. ('val',)", field="splits")
    for s in splits:
        if s not in SPLITS:
            raise ConfigError(f"unknown split {s!r}; use train, val or test", field="splits")


class _Run:
    """One population trained in this process.

    With ``start`` (one :class:`ModelState` per (candidate, seed), candidate-major, all at the
    same step), every model continues from its saved state instead of its initialisation.

    Every tensor of the run is on ``device`` (default the CPU): models are built on the CPU by
    :func:`~loss_rl.tasks.build_model` and moved, saved states are moved in by :meth:`_load`
    and copied out to the CPU by :meth:`_snapshot`.
    """

    def __init__(
        self,
        exprs: Sequence[Expr],
        task: TaskConfig,
        seeds: Sequence[int],
        data_seed: int | None,
        start: Sequence[ModelState] | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.task = task
        self.device = torch.device("cpu") if device is None else device
        dev = self.device
        self.data = _Data(task, seeds, data_seed, dev)
        self.n_seeds = len(seeds)
        self.n_cands = len(exprs)
        self.n = self.n_cands * self.n_seeds
        self.loss = PopulationLoss(
            exprs, self.n_seeds, self.data.kind, self.data.num_classes, device=dev
        )
        inits = [
            build_model(
                task.model, self.data.num_features, self.data.num_outputs, seed=init_seed(s)
            )
            for s in seeds
        ]
        # Built-in kinds: StackedModel; ``module`` models: FunctionalModel (torch.func), whose
        # random ops (dropout) draw from a private stream seeded by the first seed.
        self.model: PopulationModel = build_population(
            task.model,
            self.data.num_features,
            self.data.num_outputs,
            inits,
            [m % self.n_seeds for m in range(self.n)],
            rng_seed=seeds[0],
            device=dev,
        )
        self.optimizer = make_optimizer(self.model.params, task.training)
        self.alive = torch.ones(self.n, dtype=torch.bool, device=dev)
        self.diverged_at: list[int | None] = [None] * self.n
        self.diverge_reason: list[str] = [""] * self.n
        self.stopped_at: list[int | None] = [None] * self.n
        self.loss_bound: Tensor | None = None  # [N], set from the first step's losses
        self.frozen: list[Tensor] = []
        self.dead_idx = torch.empty(0, dtype=torch.long, device=dev)
        self.step = 0  # optimiser steps taken by every model (frozen ones included)
        self.state: list[ModelState] | None = None  # set by fit(keep_state=True)
        select = task.training.select == "best"
        if select:
            self.best = torch.full((self.n,), -math.inf, dtype=torch.float64, device=dev)
            self.best_params = [p.detach().clone() for p in self.model.params]
            self.best_step = torch.full((self.n,), -1, dtype=torch.long, device=dev)
            self.waits = torch.zeros(self.n, dtype=torch.long, device=dev)
        if start is not None:
            self._load(start)

    # ------------------------------------------------------------------ saved state
    def _source(self, m: int) -> int:
        """Candidate-major index (as :func:`train` numbers results) of model row ``m``."""
        pos, s = divmod(m, self.n_seeds)
        return self.loss.order[pos] * self.n_seeds + s

    def _load(self, start: Sequence[ModelState]) -> None:
        """Continue every model from its saved state (see :class:`ModelState`)."""
        if len(start) != self.n:
            raise ConfigError(
                f"give one state per (candidate, seed): {self.n}, got {len(start)}", field="start"
            )
        rows = [start[self._source(m)] for m in range(self.n)]
        steps = {r.step for r in rows}
        if len(steps) != 1:
            raise ConfigError(
                f"states to continue together must be at one step, got {sorted(steps)}",
                field="start",
            )
        self.step = steps.pop()
        select = self.task.training.select == "best"
        dev = self.device

        def moved(ts: Sequence[Tensor]) -> list[Tensor]:
            # Saved states are on the CPU (or wherever the caller kept them); ``.to`` is a
            # no-op for tensors already on the run's device.
            return [t.to(dev) for t in ts]

        with torch.no_grad():
            for k, p in enumerate(self.model.params):
                for m, r in enumerate(rows):
                    p[m] = r.params[k].to(dev)
            self.optimizer.load_rows(
                self.model.params, [moved(r.optimizer) for r in rows], self.step
            )
            if select:
                for k, b in enumerate(self.best_params):
                    for m, r in enumerate(rows):
                        b[m] = (r.best_params[k] if r.best_params else r.params[k]).to(dev)
        if self.step > 0:
            bounds = [LOSS_BOUND if r.loss_bound is None else r.loss_bound for r in rows]
            self.loss_bound = torch.tensor(bounds, dtype=torch.float64, device=dev)
        if select:
            self.best = torch.tensor([r.best_score for r in rows], dtype=torch.float64, device=dev)
            self.best_step = torch.tensor([r.best_step for r in rows], dtype=torch.long, device=dev)
            self.waits = torch.tensor([r.waits for r in rows], dtype=torch.long, device=dev)
        stopped = torch.tensor([r.stopped_at is not None for r in rows], device=dev)
        if bool(stopped.any()):
            self._freeze(stopped, self.step, diverged=False)
            self.stopped_at = [r.stopped_at for r in rows]

    def _snapshot(self) -> list[ModelState]:
        """Every model's state now, candidate-major, on the CPU whatever the run's device."""
        select = self.task.training.select == "best"
        out: list[ModelState | None] = [None] * self.n
        # Off the CPU, each stacked tensor comes back in one copy (not one per model and
        # number); on the CPU ``.cpu()`` is a no-op and ``host_copy`` the per-row ``clone``.
        params = [p.detach().cpu() for p in self.model.params]
        best_params = [b.cpu() for b in self.best_params] if select else []
        bounds = None if self.loss_bound is None else self.loss_bound.cpu()
        if select:
            best, best_step, waits = self.best.cpu(), self.best_step.cpu(), self.waits.cpu()
        for m in range(self.n):
            bound = None if bounds is None else float(bounds[m])
            out[self._source(m)] = ModelState(
                step=self.step,
                params=tuple(host_copy(p[m]) for p in params),
                # row_state copies already; ``.cpu()`` only moves them (a no-op on the CPU).
                optimizer=tuple(t.cpu() for t in self.optimizer.row_state(m)),
                loss_bound=bound,
                best_score=float(best[m]) if select else -math.inf,
                best_step=int(best_step[m]) if select else -1,
                waits=int(waits[m]) if select else 0,
                best_params=tuple(host_copy(b[m]) for b in best_params) if select else (),
                stopped_at=self.stopped_at[m],
            )
        return [s for s in out if s is not None]

    # ------------------------------------------------------------------ inputs per model
    def _per_model(self, t: Tensor) -> Tensor:
        """``[S, ...]`` per-seed (or ``[1, ...]`` shared) tensor -> ``[N, ...]``.

        Model ``m`` has seed ``m % S``.
        """
        if t.shape[0] == 1:
            return t.expand(self.n, *t.shape[1:])
        if self.n_cands == 1:
            return t
        # expand + reshape copies once, as ``repeat`` would, at half its dispatch cost.
        return t.unsqueeze(0).expand(self.n_cands, *t.shape).reshape(self.n, *t.shape[1:])

    def _freeze(self, rows: Tensor, step: int, diverged: bool, reasons: Sequence[str] = ()) -> None:
        """Stop training the models in ``rows`` (bool ``[N]``), keeping their parameters.

        ``reasons`` (for diverged models) holds one reason per model, indexed by model row.
        """
        idx = rows.nonzero().flatten()
        if not self.frozen:
            self.frozen = [p.detach().clone() for p in self.model.params]
        with torch.no_grad():
            for keep, p in zip(self.frozen, self.model.params, strict=True):
                keep[idx] = p[idx]
        for i in idx.tolist():
            if diverged:
                self.diverged_at[i] = step
                self.diverge_reason[i] = reasons[i] if reasons else ""
            else:
                self.stopped_at[i] = step
        self.alive[idx] = False
        self.dead_idx = (~self.alive).nonzero().flatten()

    def _check(self, loss: Tensor, dz: Tensor, z: Tensor, step: int) -> None:
        """Freeze, as diverged, the live models whose training failed or exploded at ``step``.

        This is where divergence is decided, for every model alike (CE included). A model
        diverged at the first step where any of these holds:

        1. *non-finite*: its mean minibatch loss or any entry of its ``dL/dZ`` is NaN or ±inf;
        2. *loss exploded*: ``|loss| > max(LOSS_BOUND, LOSS_GROWTH · |loss at step 0|)``, the
           loss being the mean over the minibatch of the per-sample loss (1e6, or ten times the
           model's first-step loss for a loss that starts larger: a constant scale is not an
           explosion);
        3. *outputs exploded*: some output (logit, or prediction in standardised target units)
           on the minibatch has ``|z| > OUTPUT_BOUND`` (1e6), whatever the loss's scale.

        Both bounds are finite-valued blow-ups that a NaN check misses (``-100 * p_y^-3`` drives
        its loss to -1e9 and the model to chance accuracy, finite throughout); the library's
        losses stay orders of magnitude inside them. The reason recorded names the rule, the
        step and the value. Vectorised over the population: a few ``[N]`` operations and one
        reduction over ``z`` per step; reasons are formatted only when a model diverges.

        Args:
            loss: Per-model mean minibatch loss ``[N]``.
            dz: ``dL/dZ`` of every model (shape of ``z``).
            z: The models' outputs on the minibatch (``[N, B, C]`` or ``[N, B]``).
            step: The optimiser step (0-based) these values belong to.
        """
        n = self.n
        if self.loss_bound is None:  # the first step sets each model's scale
            first = (loss.detach().abs() * LOSS_GROWTH).nan_to_num(LOSS_BOUND, LOSS_BOUND)
            self.loss_bound = first.clamp(min=LOSS_BOUND)
        grad_sum = dz.reshape(n, -1).sum(1)  # NaN/inf anywhere in dL/dZ makes it non-finite
        # Every step but a divergence passes: on the CPU, decide that from whole-population
        # reductions first (half the ops of the per-model test below, which was ~10 % of a
        # small population's step). Each passes exactly when every model passes its rule: NaN
        # fails every comparison and propagates through amax/aminmax/sum; |loss| - bound <= 0
        # iff |loss| <= bound (float64, exact); the sum of the per-model sums is finite only if
        # each is (when it overflows, the per-model test decides). On a GPU each of these reads
        # would be a device sync, so the per-model test (one sync) runs alone there.
        if z.device.type == "cpu":
            z_min, z_max = torch.aminmax(z)
            if (
                float((loss.abs() - self.loss_bound).amax()) <= 0.0
                and float(z_min) >= -OUTPUT_BOUND
                and float(z_max) <= OUTPUT_BOUND
                and math.isfinite(float(grad_sum.sum()))
            ):
                return
        out_max = z.reshape(n, -1).abs().amax(1)  # NaN propagates, and fails the bound
        ok = (loss.abs() <= self.loss_bound) & (out_max <= OUTPUT_BOUND) & grad_sum.isfinite()
        if bool(ok.all()):
            return
        new = ~ok & self.alive
        if not bool(new.any()):
            return
        reasons = [""] * n
        for i in new.nonzero().flatten().tolist():
            value, bound, out = float(loss[i]), float(self.loss_bound[i]), float(out_max[i])
            if not (math.isfinite(value) and math.isfinite(float(grad_sum[i]))):
                reasons[i] = f"non-finite loss or gradient at step {step}"
                continue
            why = []
            if abs(value) > bound:
                why.append(
                    f"loss exploded at step {step}: mean loss {value:.3g} beyond ±{bound:.3g}"
                )
            if not out <= OUTPUT_BOUND:
                why.append(
                    f"outputs exploded at step {step}: |output| {out:.3g} > {OUTPUT_BOUND:.0e}"
                )
            reasons[i] = "; ".join(why)
        self._freeze(new, step, diverged=True, reasons=reasons)

    # ------------------------------------------------------------------ training
    def fit(self, steps: int, *, keep_state: bool = False) -> None:
        """Train every model up to ``steps`` optimiser steps in all (fewer if it diverges/stops).

        A run continued from saved states (``start``) takes steps ``self.step .. steps - 1``.

        Args:
            steps: Total optimiser steps to reach.
            keep_state: Keep each model's state after its last step in :attr:`state` (taken
                before the closing validation check and the switch to the selected checkpoint,
                so that a continued run goes on exactly as one trained straight through).
        """
        cfg = self.task.training
        begin = self.step
        schedule = self.data.schedule(steps)
        model = self.model
        # Checkpoint selection (``select: best``) and early stopping share the validation
        # checks: every ``eval_every`` steps and after the last step.
        select = cfg.select == "best"
        reached = begin
        batches = self.data.minibatches(schedule, begin, steps)
        for t, (xb, yb) in zip(range(begin, steps), batches, strict=True):
            z = model.train_forward(self._per_model(xb))
            ev = self.loss(z, self._per_model(yb))
            dz = ev.grad
            self._check(ev.loss, dz, z, t)
            if self.dead_idx.numel():
                dz = dz.index_fill(0, self.dead_idx, 0.0)
            grads = model.train_backward(dz)
            # Parameter gradients are not checked separately: with finite dL/dZ and finite
            # parameters they can only overflow, and then the model's next loss is non-finite.
            with torch.no_grad():
                if self.dead_idx.numel():
                    for g in grads:
                        g.index_fill_(0, self.dead_idx, 0.0)
                self.optimizer.step(model.params, grads)
                if self.dead_idx.numel():
                    for keep, p in zip(self.frozen, model.params, strict=True):
                        p.index_copy_(0, self.dead_idx, keep[self.dead_idx])
            reached = t + 1
            if select and reached % cfg.eval_every == 0:
                self._checkpoint(reached)
            if self.dead_idx.numel() == self.n:  # every model frozen (no sync needed)
                break
        # A loop cut short has frozen every model (diverged or stopped); frozen models never
        # change again, so their state is the one a run to ``steps`` would end with.
        self.step = max(begin, steps)
        if keep_state:
            self.state = self._snapshot()
        if select and reached == steps > begin and steps % cfg.eval_every:
            self._checkpoint(steps)  # the closing check, off the every-``eval_every`` grid
        if select:
            # Every model ends with its selected checkpoint. A model with no finite check (it
            # diverged before the first one) keeps its parameters: it is reported as diverged.
            with torch.no_grad():
                ok = torch.isfinite(self.best)
                for best, p in zip(self.best_params, model.params, strict=True):
                    p[ok] = best[ok]

    def _checkpoint(self, step: int) -> None:
        """Validation check at ``step``: keep each live model's best parameters so far.

        Strict improvement only, so a tie keeps the earlier checkpoint. With ``patience``, a
        model that has not improved for that many checks stops training.
        """
        cfg = self.task.training
        scores = self.scores("val")
        improved = (scores > self.best) & self.alive
        self.best = torch.where(improved, scores, self.best)
        self.best_step = torch.where(improved, step, self.best_step)
        with torch.no_grad():
            for best, p in zip(self.best_params, self.model.params, strict=True):
                best[improved] = p[improved]
        if cfg.patience is None:
            return
        self.waits = torch.where(improved, 0, self.waits + 1)
        stop = (self.waits >= cfg.patience) & self.alive
        if bool(stop.any()):
            self._freeze(stop, step, diverged=False)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _outputs(self, x: Tensor) -> Tensor:
        """Outputs of every model on per-model inputs ``x`` ``[N, n, F]`` (chunked)."""
        width = max([self.data.num_features, *self.task.model.hidden, *self.task.model.channels])
        if self.task.model.kind == "cnn1d":
            width *= self.data.num_features
        chunk = max(1, _EVAL_CHUNK_ELEMENTS // (self.n * width))
        outs = [self.model.forward(x[:, i : i + chunk]) for i in range(0, x.shape[1], chunk)]
        return torch.cat(outs, 1)

    def metrics(self, split: str) -> dict[str, Tensor]:
        """Metric name -> ``[N]`` values on ``split`` (each model on its own seed's data)."""
        data = self.data
        parts = data.split(split)
        if data.shared:
            xs, ys = parts[0][0].unsqueeze(0), parts[0][1].unsqueeze(0)
            outs = self._outputs(self._per_model(xs))
            y = ys[0]
        elif len({len(x) for x, _ in parts}) == 1:
            xs = torch.stack([x for x, _ in parts])
            ys = torch.stack([y for _, y in parts])
            outs = self._outputs(self._per_model(xs))
            y = self._per_model(ys)
        else:  # per-seed training sets of different sizes: evaluate seed by seed
            per: dict[str, Tensor] = {}
            for s, (x, y_s) in enumerate(parts):
                out = self._outputs(x.unsqueeze(0).expand(self.n, *x.shape))
                m = self._metric_values(out, y_s)
                for k, v in m.items():
                    per.setdefault(k, torch.empty(self.n, dtype=torch.float64, device=self.device))
                    per[k][s :: self.n_seeds] = v[s :: self.n_seeds]
            return per
        return self._metric_values(outs, y)

    def _metric_values(self, out: Tensor, y: Tensor) -> dict[str, Tensor]:
        if self.data.num_classes is not None:
            return classification_metrics(out, y, self.data.num_classes)
        std = torch.tensor(
            [d.target_std for d in self.data.datas], dtype=torch.float64, device=self.device
        )
        return regression_metrics(out, y, self._per_model(std.unsqueeze(1)).squeeze(1))

    def scores(self, split: str) -> Tensor:
        """The task's score metric (higher is better) of every model on ``split``."""
        metric = self.task.score_metric
        values = self.metrics(split)[metric.removeprefix("neg_")]
        return -values if metric.startswith("neg_") else values


def run_population(
    exprs: Sequence[Expr],
    task: TaskConfig,
    steps: int,
    seeds: Sequence[int],
    splits: Sequence[str],
    data_seed: int | None,
    start: Sequence[ModelState] | None = None,
    keep_state: bool = False,
    device: torch.device | None = None,
) -> tuple[list[_Outcome], float]:
    """Train ``len(exprs) × len(seeds)`` models in this process.

    Args:
        exprs: Candidate losses.
        task: The task.
        steps: Optimiser steps to reach in all.
        seeds: Paired seeds.
        splits: Splits to report; the score uses the first.
        data_seed: Data seed (see :func:`train`).
        start: Saved states to continue, candidate-major (see :func:`train`).
        keep_state: Return each ok model's state in its outcome.
        device: Device to train on (``None``: the CPU; resolved by :func:`train`). Outcomes
            hold CPU values whatever the device.

    Returns:
        Outcomes in candidate-major order and the wall time in seconds.
    """
    began = time.perf_counter()
    run = _Run(exprs, task, seeds, data_seed, start, device)
    run.fit(steps, keep_state=keep_state)
    # Metrics come to the CPU in one copy per metric, not one sync per model and value
    # (``.cpu()`` is a no-op on the CPU).
    per_split = {s: {k: v.cpu() for k, v in run.metrics(s).items()} for s in splits}
    best_step = run.best_step.cpu() if task.training.select == "best" else None
    metric = task.score_metric
    outcomes = [_Outcome() for _ in range(run.n)]
    broken = set()
    for k in run.loss.broken:
        start, prog = run.loss.programs[k]
        broken |= {run.loss.order[m // run.n_seeds] for m in range(start, start + prog.size)}
    for m in range(run.n):
        pos, s = divmod(m, run.n_seeds)
        cand = run.loss.order[pos]
        out = outcomes[cand * run.n_seeds + s]
        d_at = run.diverged_at[m]
        stop_at = run.stopped_at[m]
        if d_at is not None:
            out.status = "diverged"
            out.diverged_at = d_at
            out.steps = d_at
            out.reason = (
                "evaluating the loss raised an error" if cand in broken else run.diverge_reason[m]
            )
            continue
        out.steps = stop_at if stop_at is not None else steps
        if best_step is not None and steps > 0:
            out.selected_step = int(best_step[m])
        out.metrics = {s_: {k: float(v[m]) for k, v in per_split[s_].items()} for s_ in splits}
        value = score_of(out.metrics[splits[0]], metric)
        if not math.isfinite(value):
            out.status, out.reason, out.diverged_at = "diverged", "non-finite score", steps
            out.metrics = {}
            continue
        out.score = value
        if run.state is not None:
            out.state = run.state[cand * run.n_seeds + s]
    return outcomes, time.perf_counter() - began


def _validate_candidate(expr: object, kind: TaskKind) -> str:
    """Empty string if ``expr`` can be trained for ``kind``, else the reason it cannot."""
    if not isinstance(expr, Expr):
        return f"not a loss expression: {type(expr).__name__}"
    try:
        compile_loss(expr, kind)
    except Exception as exc:  # LossSpecError and anything unexpected alike
        return f"invalid loss: {exc}"
    return ""


def split_candidates(exprs: Sequence[Expr], n_seeds: int, workers: int) -> list[list[int]]:
    """Split candidate indices into ``workers`` contiguous runs of similar cost.

    Candidates are sorted by tree structure so each structure group stays (mostly) in one
    worker; a run's cost is its models plus ~2 models' worth per structure group it evaluates.
    The Ray executor splits its batches the same way.

    Args:
        exprs: Candidate loss expressions.
        n_seeds: Models per candidate (paired seeds).
        workers: Number of runs wanted, at most.

    Returns:
        Candidate indices of each run (empty runs left out).
    """
    keys = [structure(e) for e in exprs]
    order = sorted(range(len(exprs)), key=lambda i: keys[i])
    costs = []
    for pos, i in enumerate(order):
        new_group = pos == 0 or keys[order[pos - 1]] != keys[i]
        costs.append(n_seeds + (2 if new_group else 0))
    total = sum(costs)
    out: list[list[int]] = [[] for _ in range(workers)]
    acc = 0.0
    for pos, i in enumerate(order):
        w = min(workers - 1, int(acc / total * workers)) if total else 0
        out[w].append(i)
        acc += costs[pos]
    return [c for c in out if c]


def train(
    candidates: Sequence[Expr],
    task: TaskConfig,
    steps: int,
    seeds: Sequence[int],
    *,
    splits: Sequence[str] = ("val",),
    data_seed: int | None = None,
    workers: int | None = None,
    start: Sequence[ModelState] | None = None,
    keep_state: bool = False,
    device: str | torch.device | None = None,
) -> list[TrainResult]:
    """Train one model per (candidate loss, seed) in one batched pass.

    Args:
        candidates: Loss expressions of the task's kind. Different expressions train together;
            include ``known_loss("ce")`` to train a CE reference in the same pass.
        task: The task (dataset, corruption, split, model, optimiser, score metric).
        steps: Optimiser steps (the fidelity; ``task.training.steps`` for search,
            ``task.training.full_steps`` for verification).
        seeds: Paired seeds. A result's seed sets its model initialisation, its minibatch order
            and (unless ``data_seed`` is given) its data split and noise realisation; all
            candidates with the same seed share them.
        splits: Splits to compute metrics on; ``score`` uses the first. Keep ``test`` for
            reports only; ``train`` metrics use the (possibly corrupted) training labels.
        data_seed: One data seed for every model (split and noise fixed, only init and
            minibatch order vary with ``seed``).
        workers: Worker processes to split the population over (``None``: ``$LOSS_RL_WORKERS``
            or one per core; ``0``/``1``: train in this process with its torch thread setting).
            Ignored off the CPU.
        start: Continue from saved states instead of the initialisation: one
            :class:`ModelState` per (candidate, seed), candidate-major, all at the same step
            (``<= steps``), from ``keep_state`` results of an earlier call with the same task,
            seeds and data seed. Continuing to ``steps`` gives the models a straight run to
            ``steps`` would (float rounding aside; a ``module`` model's dropout masks excepted:
            its random stream restarts).
        keep_state: Attach each ok result's :class:`ModelState` (``TrainResult.state``) so a
            later call can continue it.
        device: Where to train (see :func:`~loss_rl.training.resolve_device`): ``None`` or
            ``"cpu"`` (the default: worker processes as ``workers`` says), ``"cuda"``,
            ``"cuda:N"`` or ``"auto"`` (a GPU if there is one). On a GPU the whole population
            trains in this process, every tensor of the run on the device, and ``workers`` is
            ignored. Results are the same as on the CPU up to float rounding, with two
            exceptions: a ``module`` model's dropout masks (the GPU draws them from its own
            stream), and convolutions, which follow torch's TF32 setting
            (``torch.backends.cudnn.conv.fp32_precision``: TF32 unless set to ``"ieee"``).
            Metrics and states come back on the CPU; ``start`` states may be on any device.

    Returns:
        One :class:`TrainResult` per (candidate, seed), candidate-major:
        ``results[c * len(seeds) + s]``.

    Raises:
        ConfigError: for a bad task, steps, seeds, splits or device (a CUDA device on a machine
            without one included). A bad *candidate* never raises: its results are ``diverged``
            with a ``reason``.
    """
    _check_args(task, steps, seeds, splits)
    dev = resolve_device(device)
    if data_seed is not None:
        _check_args(task, steps, [data_seed], splits)
    seeds, splits = list(seeds), list(splits)
    # Load (and validate) the data here so a bad task raises in the caller's process.
    for s in [data_seed] if data_seed is not None else seeds:
        load_task(task, s)
    n_seeds = len(seeds)
    if start is not None:
        start = list(start)
        if len(start) != len(candidates) * n_seeds:
            raise ConfigError(
                f"give one state per (candidate, seed): {len(candidates) * n_seeds}, got "
                f"{len(start)}",
                field="start",
            )
        if any(st.step > steps for st in start):
            raise ConfigError(f"a state is past the {steps} steps asked for", field="start")
    reasons = [_validate_candidate(e, task.kind) for e in candidates]
    valid = [i for i, r in enumerate(reasons) if not r]

    def states_of(cands: Sequence[int]) -> list[ModelState] | None:
        if start is None:
            return None
        return [start[c * n_seeds + s] for c in cands for s in range(n_seeds)]

    outcomes: dict[int, list[_Outcome]] = {}
    seconds: dict[int, float] = {}
    if valid:
        if dev.type != "cpu":
            # One GPU holds the whole population: train it in this process. Worker processes
            # would each need their own CUDA context and contend for the one device.
            n_workers = 0
        else:
            n_workers = default_workers() if workers is None else max(0, workers)
        n_models = len(valid) * n_seeds
        # A worker needs a few models to be worth its messages (and at most one per candidate).
        n_workers = min(n_workers, len(valid), max(1, n_models // _MIN_MODELS_PER_WORKER))
        exprs = [candidates[i] for i in valid]
        if n_workers > 1:
            chunks = split_candidates(exprs, n_seeds, n_workers)
            payloads = [
                (
                    [exprs[j] for j in chunk],
                    task,
                    steps,
                    seeds,
                    splits,
                    data_seed,
                    states_of([valid[j] for j in chunk]),
                    keep_state,
                )
                for chunk in chunks
            ]
            results = run_chunks(run_population, payloads)
            for chunk, (outs, secs) in zip(chunks, results, strict=True):
                for k, j in enumerate(chunk):
                    outcomes[valid[j]] = outs[k * n_seeds : (k + 1) * n_seeds]
                    seconds[valid[j]] = secs / (len(chunk) * n_seeds)
        else:
            outs, secs = run_population(
                exprs, task, steps, seeds, splits, data_seed, states_of(valid), keep_state, dev
            )
            for k, i in enumerate(valid):
                outcomes[i] = outs[k * n_seeds : (k + 1) * n_seeds]
                seconds[i] = secs / n_models
    results_out: list[TrainResult] = []
    for c in range(len(candidates)):
        for s_pos, seed in enumerate(seeds):
            if reasons[c]:
                results_out.append(
                    TrainResult(
                        candidate=c,
                        seed=seed,
                        status="diverged",
                        metrics={},
                        score=None,
                        diverged_at=0,
                        seconds=0.0,
                        steps=0,
                        reason=reasons[c],
                    )
                )
                continue
            o = outcomes[c][s_pos]
            results_out.append(
                TrainResult(
                    candidate=c,
                    seed=seed,
                    status=o.status,
                    metrics=o.metrics,
                    score=o.score,
                    diverged_at=o.diverged_at,
                    seconds=seconds[c],
                    steps=o.steps,
                    reason=o.reason,
                    selected_step=o.selected_step,
                    state=o.state,
                )
            )
    return results_out


def _ready() -> int:
    # Runs in a worker: the worker imports this module (torch and the trainer) to find it.
    return os.getpid()


def start_workers(workers: int | None = None) -> int:
    """Start the worker pool now (it otherwise starts on the first :func:`train` that needs it).

    Starting a worker imports torch (seconds); call this at the start of a run so the first
    evaluations are not slowed down.

    Args:
        workers: Number of processes (default :func:`~loss_rl.training.default_workers`).

    Returns:
        The size of the pool (0 when training stays in-process).
    """
    n = default_workers() if workers is None else max(0, workers)
    if n <= 1:
        return 0
    pool = get_pool(n)
    for f in [pool.submit(_ready) for _ in range(n)]:
        f.result()
    return n
