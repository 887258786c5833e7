"""High-level entry points: refine a symbolic loss's constants, meta-train a neural loss.

``refine`` is what ``loss-rl refine SOURCE --env NAME`` calls: it reads the loss (an expression,
a JSON spec or a run folder), learns its constants by differentiating through the task's own
inner training (support = train minibatches, query = val), verifies the refined loss against the
unrefined one, CE and the usual references on the *test* split with fresh paired seeds (the same
:func:`loss_rl.verify.verify` the search uses), and writes it next to the source.

``meta_train`` is what ``loss-rl meta-train --env NAME`` calls: it meta-learns an ML3-style
:class:`~loss_rl.meta.NeuralLoss`, verifies it against CE with a plain PyTorch loop on fresh paired
seeds, and exports it as a JSON spec (weights as data) and a standalone ``.py`` module.

Raymond et al. 2023 (EvoMAL) refine symbolic constants this way; Bechtle et al. 2021 (ML3) learn
the neural loss; Finn et al. 2017 (MAML) is the outer loop over a task distribution.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch.nn.functional as F
from torch import Tensor

from loss_rl.errors import ConfigError, LossSpecError
from loss_rl.expr import Expr, TaskKind, check, parse, task_kind
from loss_rl.meta._episodes import TaskEpisodes
from loss_rl.meta._evaluate import compare_modules
from loss_rl.meta._neural import NeuralLoss, export_neural_loss
from loss_rl.meta._outer import MetaHistory, MetaProgress, OuterConfig, meta_optimize
from loss_rl.meta._symbolic import SymbolicLoss, dead_constants
from loss_rl.meta._unroll import InnerConfig
from loss_rl.tasks import TaskConfig
from loss_rl.verify import paired_difference

logger = logging.getLogger(__name__)

ProgressFn = Callable[[MetaProgress], None]
DEFAULT_UNROLL = 20
ObjectiveChoice = Literal["auto", "ce", "soft_error"]


def _objective(choice: str, task: TaskConfig) -> Literal["ce", "soft_error"]:
    """``auto``: the smooth error ``1 - p_y`` for accuracy-type scores, CE for ``neg_nll``.

    Measured on noisy digits: with CE as the query loss, refining GCE drives q *down* (towards
    CE: confident models have a lower validation CE even when they are less accurate); with
    ``1 - p_y`` q rises towards the robust region, as the accuracy wants.
    """
    if choice == "auto":
        return "ce" if task.score_metric == "neg_nll" else "soft_error"
    if choice not in ("ce", "soft_error"):
        raise ConfigError(f"use 'auto', 'ce' or 'soft_error', got {choice!r}", field="objective")
    return choice  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Sources and environments


@dataclass(frozen=True)
class LossSource:
    """Where a loss to refine came from.

    Attributes:
        expr: The loss expression.
        origin: ``"expression"``, ``"json"`` or ``"run"``.
        path: The JSON file or run folder (``None`` for a bare expression).
        kind: Task kind recorded with the loss, if any.
        env: The run's env preset (run folders only).
        data_seed: The run's data seed (run folders only).
    """

    expr: Expr
    origin: Literal["expression", "json", "run"]
    path: Path | None = None
    kind: TaskKind | None = None
    env: Any = None
    data_seed: int | None = None

    def refined_path(self, out: str | Path | None = None) -> Path:
        """Where the refined loss goes: ``<stem>.refined.json`` next to a JSON source,
        ``<run>/refined/loss.json`` in a run folder, ``./loss.refined.json`` for an expression
        (or into ``out`` when given)."""
        if self.origin == "run":
            assert self.path is not None
            name = "loss.json"
            folder = self.path / "refined"
        elif self.origin == "json":
            assert self.path is not None
            name = f"{self.path.stem}.refined.json"
            folder = self.path.parent
        else:
            name, folder = "loss.refined.json", Path.cwd()
        return (Path(out) if out is not None else folder) / name


def resolve_source(source: str | Path | Expr) -> LossSource:
    """Read the loss to refine from an expression, a JSON spec file or a run folder.

    Raises:
        LossSpecError: for a missing file, an invalid spec, a neural-loss spec (its weights are
            meta-trained with :func:`meta_train`, not refined) or an expression that does not
            parse.
        RunError: for a run folder without a best loss yet.
    """
    from loss_rl.errors import RunError
    from loss_rl.store import is_run, load_run

    if isinstance(source, Expr):
        return LossSource(source, "expression")
    path = Path(source)
    if path.is_dir():
        if not is_run(path):
            raise LossSpecError(f"{path} is a folder but not a run folder (no config.yaml and "
                                "ledger.sqlite)", field="source")  # fmt: skip
        run = load_run(path)
        from loss_rl.presets import parse_env_preset

        env = parse_env_preset(run.config["env"], run.config["env_name"])
        best_json = path / "best" / "loss.json"
        if best_json.is_file():
            from loss_rl.export import read_spec

            spec = read_spec(best_json)
            expr, kind = spec.expression, spec.kind
        else:
            best = run.best
            if best is None:
                raise RunError(f"{path} has no evaluated loss yet; run or resume the search first")
            expr, kind = parse(best["expression"]), env.task.kind
        return LossSource(expr, "run", path, kind, env, env.evaluation.data_seed)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise LossSpecError(f"no loss spec file at {path}", field="source")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("schema") == "loss_rl.neural_loss":
            raise LossSpecError(f"{path} is a neural loss; its weights are learned with "
                                "meta-train, refine works on symbolic losses", field="source")
        from loss_rl.export import read_spec

        spec = read_spec(path)
        return LossSource(spec.expression, "json", path, spec.kind)
    return LossSource(parse(str(source)), "expression")


@dataclass(frozen=True)
class _Env:
    name: str
    task: TaskConfig
    data_seed: int


def _resolve_env(env: Any, src: LossSource | None = None) -> _Env:
    from loss_rl.presets import EnvPreset, load_env_preset

    if env is None:
        if src is not None and src.env is not None:
            return _Env(src.env.name, src.env.task, int(src.data_seed or 0))
        raise ConfigError("give an env preset (e.g. digits_noisy) for a loss that does not come "
                          "from a run folder", field="env")  # fmt: skip
    if isinstance(env, TaskConfig):
        return _Env("task", env, 0)
    if isinstance(env, EnvPreset):
        return _Env(env.name, env.task, int(env.evaluation.data_seed))
    preset = load_env_preset(env)
    return _Env(preset.name, preset.task, int(preset.evaluation.data_seed))


def _plain(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``None`` (specs are strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return str(value)


def _table_digest(df: pd.DataFrame | None, keys: Sequence[str]) -> dict[str, Any]:
    if df is None:
        return {}
    out = {}
    for _, row in df.iterrows():
        if row["loss"] in keys:
            out[row["loss"]] = {
                k: row[k] for k in ("mean", "ci_low", "ci_high", "std", "n", "diverged",
                                    "diff_vs_ce", "p_vs_ce") if k in row
            }  # fmt: skip
    return _plain(out)


class _Recorder:
    """An executor wrapper that keeps the raw per-seed results of a verification.

    :func:`loss_rl.verify.verify` reports each loss against CE; the refined-vs-unrefined paired
    difference needs the per-seed scores, which this recorder keeps (same trainer, same run).
    """

    def __init__(self, executor: Any = None) -> None:
        from loss_rl.evaluation import InProcessExecutor

        self.executor = executor or InProcessExecutor()
        self.candidates: list[Expr] = []
        self.seeds: list[int] = []
        self.results: list[Any] = []

    def run(self, candidates: Sequence[Expr], task: TaskConfig, steps: int, seeds: Sequence[int],
            data_seed: int | None, splits: Sequence[str] = ("val",)) -> list[Any]:  # fmt: skip
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


# ---------------------------------------------------------------------------------------------
# refine


@dataclass
class RefineResult:
    """Outcome of :func:`refine`.

    Attributes:
        original: The loss as given.
        refined: The loss with learned constants (rounded to 4 significant digits).
        kind: Task kind.
        env: Env preset name.
        constants: Per constant: index, context, value before and after, learnable.
        no_gradient_constants: Constants that no meta-gradient can move, with the reason.
        history: The outer optimisation record.
        verification: The verification table (``None`` when skipped); rows ``refined``,
            ``unrefined``, ``ce`` and the references.
        paths: Files written (``json``, and ``py`` in a run folder).
        summary: Plain-data digest of all the above (what the CLI prints and the spec stores):
            ``original``, ``refined``, ``changed``, ``constants``, ``no_gradient_constants``,
            ``meta`` (outer-loop digest), ``verification`` (``refined``/``unrefined``/CE rows:
            test mean, 95 % CI, difference vs CE and its p), ``refined_vs_unrefined`` (paired
            test difference over the verification seeds, p-value, per-seed scores), ``paths``.
    """

    original: Expr
    refined: Expr
    kind: TaskKind
    env: str
    constants: list[dict[str, Any]]
    no_gradient_constants: list[dict[str, Any]]
    history: MetaHistory
    verification: pd.DataFrame | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def refine(
    source: str | Path | Expr,
    env: Any = None,
    *,
    meta_steps: int = 30,
    inner_steps: int | None = None,
    unroll: int | None = DEFAULT_UNROLL,
    tasks_per_step: int = 2,
    meta_lr: float = 0.05,
    clip_norm: float | None = 1.0,
    objective: ObjectiveChoice = "auto",
    data_seeds: Sequence[int] | None = None,
    learn_integer_exponents: bool = False,
    verify_seeds: int = 10,
    verify_steps: int | None = None,
    references: Sequence[str] | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    write: bool = True,
    progress: ProgressFn | None = None,
) -> RefineResult:
    """Refine the constants of a symbolic loss by meta-gradient descent, verify and write it.

    Args:
        source: A loss expression (text or :class:`~loss_rl.expr.Expr`), a JSON spec file or a
            run folder (its verified best loss).
        env: Env preset name/path, an ``EnvPreset`` or a ``TaskConfig``; defaults to the run's
            env for a run folder.
        meta_steps: Outer Adam steps.
        inner_steps: Inner training steps per episode (default: the task's ``full_steps``, the
            length the refined loss is verified and used at). Shorter horizons are cheaper but
            biased towards losses that fit fast: measured on MNIST-1D, a 500-step horizon turned
            label smoothing into anti-smoothing that lost 17 points of test accuracy at 2000
            steps, while the 2000-step horizon kept it close to CE.
        unroll: Differentiate through the last ``unroll`` inner steps only (``None``: all).
        tasks_per_step: Episodes (fresh model seeds and minibatch orders) per outer step.
        meta_lr: Outer Adam learning rate (a relative step: constants are scaled by their size).
        clip_norm: Meta-gradient norm clip.
        objective: Query loss: ``"ce"``, ``"soft_error"`` (``1 - p_y``) or ``"auto"`` (soft
            error for accuracy-type scores, CE for ``neg_nll``; regression always uses MSE).
        data_seeds: Data seeds episodes are drawn from (default: the env's data seed, the one
            verification uses, so its test split stays unseen).
        learn_integer_exponents: Refine integer exponents too.
        verify_seeds: Fresh paired seeds for verification (0 skips it).
        verify_steps: Verification training steps (default: the task's ``full_steps``).
        references: Known losses verified alongside (default by task kind; CE always included).
        seed: Seed of the episode draws.
        out: Folder to write into instead of next to the source.
        write: Write the refined loss (``False``: only return it).
        progress: Called with a :class:`~loss_rl.meta.MetaProgress` after every outer step and
            around verification.

    Returns:
        A :class:`RefineResult`.

    Raises:
        LossSpecError: for an unreadable source or a loss without learnable constants.
        ConfigError: for bad settings or a loss that does not fit the task.
    """
    src = resolve_source(source)
    envr = _resolve_env(env, src)
    task, kind = envr.task, envr.task.kind
    loss_kind = src.kind or task_kind(src.expr)
    if loss_kind is not None and loss_kind is not kind:
        raise ConfigError(f"the loss is a {loss_kind.value} loss but env {envr.name!r} is a "
                          f"{kind.value} task", field="env")  # fmt: skip
    probe = SymbolicLoss(src.expr, kind, learn_integer_exponents=learn_integer_exponents)
    if not probe.learnable:
        frozen = [c for c in probe.constants if not c.learnable]
        hint = (" (its integer exponents are kept; pass learn_integer_exponents=True to refine "
                "them)") if frozen else ""  # fmt: skip
        raise LossSpecError(f"nothing to refine: {src.expr} has no learnable constants{hint}",
                            field="expression")  # fmt: skip
    dead = dead_constants(probe)
    for d in dead:
        logger.warning("%s; it is kept fixed", d.describe())
    # Dead constants stay exactly as written (their meta-gradient is zero anyway).
    loss = SymbolicLoss(src.expr, kind, learn_integer_exponents=learn_integer_exponents,
                        freeze=[d.constant.index for d in dead])  # fmt: skip
    horizon = inner_steps if inner_steps is not None else task.training.full_steps
    inner = InnerConfig.from_training(task.training, horizon, unroll)
    outer = OuterConfig(meta_steps=meta_steps, tasks_per_step=tasks_per_step, lr=meta_lr,
                        clip_norm=clip_norm, seed=seed,
                        objective=_objective(objective, task))  # fmt: skip
    seeds = list(data_seeds) if data_seeds is not None else [envr.data_seed]
    if any(s != envr.data_seed for s in seeds):
        logger.warning("episodes use data seeds %s but verification uses data seed %d: another "
                       "seed's split trains on rows of this seed's test split", seeds,
                       envr.data_seed)  # fmt: skip
    sampler = TaskEpisodes(task, seeds)
    history = meta_optimize(loss, sampler, inner, outer, progress) if loss.learnable else (
        MetaHistory())  # fmt: skip

    no_grad = [
        {"index": d.constant.index, "value": d.constant.value, "context": d.constant.context,
         "reason": d.reason, "message": d.describe()}
        for d in dead
    ]  # fmt: skip
    if history.meta_loss and any(math.isfinite(v) for v in history.meta_loss):
        for c, g in zip(loss.learnable, history.grad_abs, strict=True):
            if g <= 0.0:
                msg = f"{c.describe()} received no meta-gradient during refinement"
                logger.warning(msg)
                no_grad.append({"index": c.index, "value": c.value, "context": c.context,
                                "reason": "no_meta_gradient", "message": msg})  # fmt: skip
    refined = loss.expr()
    values = loss.values().detach().tolist()
    learned = dict(zip((c.index for c in loss.learnable), values, strict=True))
    constants = [
        {"index": c.index, "context": c.context, "before": c.value,
         "after": learned.get(c.index, c.value), "learnable": c.index in learned}
        for c in probe.constants
    ]  # fmt: skip
    verdict = check(refined, kind)
    if not verdict.ok:
        logger.warning("the refined loss %s fails a validity check: %s", refined, verdict)

    table = None
    paired: dict[str, Any] = {}
    if verify_seeds:
        if progress is not None:
            progress(MetaProgress("verify", meta_steps, meta_steps))
        from loss_rl.verify import verify

        recorder = _Recorder()
        table = verify({"refined": refined, "unrefined": src.expr}, task, seeds=verify_seeds,
                       steps=verify_steps, references=references, data_seed=envr.data_seed,
                       executor=recorder)  # fmt: skip
        ref_scores = recorder.scores(refined)
        unref_scores = recorder.scores(src.expr, 1 if refined == src.expr else 0)
        diff, p_value = paired_difference(ref_scores, unref_scores)
        paired = {"diff": diff, "p": p_value, "refined": ref_scores.tolist(),
                  "unrefined": unref_scores.tolist()}  # fmt: skip
    keys = ["refined", "unrefined", "ce" if kind is TaskKind.CLASSIFICATION else "mse"]
    summary: dict[str, Any] = {
        "source": str(src.path) if src.path is not None else str(src.expr),
        "origin": src.origin,
        "env": envr.name,
        "original": str(src.expr),
        "refined": str(refined),
        "changed": refined.key != src.expr.key,
        "check": str(verdict),
        "constants": constants,
        "no_gradient_constants": no_grad,
        "inner": {"steps": inner.steps, "unroll": inner.unroll, "optimizer": inner.optimizer,
                  "lr": inner.lr, "batch_size": inner.batch_size},
        "outer": {"meta_steps": meta_steps, "tasks_per_step": tasks_per_step, "lr": meta_lr,
                  "clip_norm": clip_norm, "seed": seed, "data_seeds": seeds,
                  "objective": outer.objective},
        "meta": history.summary(),
        "verification": _table_digest(table, keys),
        "refined_vs_unrefined": paired,
    }  # fmt: skip
    if table is not None:
        summary["verification_steps"] = table.attrs.get("steps")
        summary["verification_seeds"] = table.attrs.get("seeds")
        summary["metric"] = table.attrs.get("metric")
    paths: dict[str, Path] = {}
    if write:
        from loss_rl.export import export

        target = src.refined_path(out)
        metadata = _plain({"title": "A loss refined by meta-gradient descent",
                           **{k: summary[k] for k in ("env", "original", "meta", "verification",
                                                      "refined_vs_unrefined")},
                           "refined_from": str(src.expr), "constants": constants,
                           "no_gradient_constants": no_grad})  # fmt: skip
        paths["json"] = export(refined, target, "json", kind=kind, metadata=metadata)
        if src.origin == "run":
            paths["py"] = export(refined, target.with_suffix(".py"), "py", kind=kind,
                                 metadata=metadata)  # fmt: skip
        summary["paths"] = {k: str(v) for k, v in paths.items()}
    return RefineResult(src.expr, refined, kind, envr.name, constants, no_grad, history, table,
                        paths, _plain(summary))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# meta_train (neural loss)


@dataclass
class MetaTrainResult:
    """Outcome of :func:`meta_train`.

    Attributes:
        loss: The meta-learned :class:`~loss_rl.meta.NeuralLoss`.
        env: Env preset name.
        history: The outer optimisation record.
        verification: Plain-loop paired comparison on test (``neural`` vs ``ce``), or ``None``.
        paths: Files written (``json``, ``py``).
        summary: Plain-data digest.
    """

    loss: NeuralLoss
    env: str
    history: MetaHistory
    verification: pd.DataFrame | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def _ce(input: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(input, target, reduction="none")


def meta_train(
    env: Any = "digits_noisy",
    *,
    meta_steps: int = 100,
    inner_steps: int | None = None,
    unroll: int | None = DEFAULT_UNROLL,
    tasks_per_step: int = 2,
    meta_lr: float = 3e-3,
    clip_norm: float | None = 1.0,
    hidden: Sequence[int] = (16, 16),
    activation: str = "tanh",
    base: Literal["ce", "none"] = "ce",
    objective: ObjectiveChoice = "auto",
    data_seeds: Sequence[int] | None = None,
    verify_seeds: int = 10,
    verify_steps: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    write: bool = True,
    progress: ProgressFn | None = None,
) -> MetaTrainResult:
    """Meta-learn an ML3-style neural loss for a task, verify it against CE and export it.

    Args:
        env: Env preset name/path, ``EnvPreset`` or ``TaskConfig`` (classification).
        meta_steps: Outer Adam steps.
        inner_steps: Inner steps per episode (default: the task's ``full_steps``; see
            :func:`refine`).
        unroll: Differentiate through the last ``unroll`` inner steps only (``None``: all).
        tasks_per_step: Episodes per outer step.
        meta_lr: Outer Adam learning rate.
        clip_norm: Meta-gradient norm clip.
        hidden: Hidden widths of the per-class network.
        activation: Its activation.
        base: ``"ce"`` (start from cross-entropy and learn a correction) or ``"none"``.
        objective: Query loss (see :func:`refine`).
        data_seeds: Data seeds episodes are drawn from (default: the env's).
        verify_seeds: Fresh paired seeds for the test comparison with CE (0 skips it).
        verify_steps: Verification steps (default: the task's ``full_steps``).
        seed: Seed of the network initialisation and episode draws.
        out: Output folder (default ``results/meta_<env>_s<seed>``); gets ``loss.json`` and
            ``loss.py``.
        write: Write the exports.
        progress: Called with a :class:`~loss_rl.meta.MetaProgress` after every outer step.

    Returns:
        A :class:`MetaTrainResult`.

    Raises:
        ConfigError: for a regression task or bad settings.
    """
    envr = _resolve_env(env)
    task = envr.task
    if task.kind is not TaskKind.CLASSIFICATION:
        raise ConfigError("the neural loss is a classification loss; choose a classification "
                          "env", field="env")  # fmt: skip
    loss = NeuralLoss(hidden, activation, base, seed=seed)
    horizon = inner_steps if inner_steps is not None else task.training.full_steps
    inner = InnerConfig.from_training(task.training, horizon, unroll)
    outer = OuterConfig(meta_steps=meta_steps, tasks_per_step=tasks_per_step, lr=meta_lr,
                        clip_norm=clip_norm, seed=seed,
                        objective=_objective(objective, task))  # fmt: skip
    seeds = list(data_seeds) if data_seeds is not None else [envr.data_seed]
    history = meta_optimize(loss, TaskEpisodes(task, seeds), inner, outer, progress)
    table = None
    if verify_seeds:
        if progress is not None:
            progress(MetaProgress("verify", meta_steps, meta_steps))
        table = compare_modules({"neural": loss.per_sample, "ce": _ce}, task,
                                seeds=verify_seeds, steps=verify_steps,
                                data_seed=envr.data_seed)  # fmt: skip
    summary: dict[str, Any] = {
        "env": envr.name,
        "architecture": loss.architecture,
        "inner": {"steps": inner.steps, "unroll": inner.unroll, "optimizer": inner.optimizer,
                  "lr": inner.lr, "batch_size": inner.batch_size},
        "outer": {"meta_steps": meta_steps, "tasks_per_step": tasks_per_step, "lr": meta_lr,
                  "clip_norm": clip_norm, "seed": seed, "data_seeds": seeds,
                  "objective": outer.objective},
        "meta": history.summary(),
        "verification": _table_digest(table, ["neural", "ce"]),
    }  # fmt: skip
    if table is not None:
        summary["verification_steps"] = table.attrs.get("steps")
        summary["verification_seeds"] = table.attrs.get("seeds")
        summary["metric"] = table.attrs.get("metric")
    paths: dict[str, Path] = {}
    if write:
        folder = Path(out) if out is not None else Path("results") / f"meta_{envr.name}_s{seed}"
        meta = _plain({k: summary[k] for k in ("env", "meta", "verification")})
        paths["json"] = export_neural_loss(loss, folder / "loss.json", "json", meta)
        paths["py"] = export_neural_loss(loss, folder / "loss.py", "py", meta)
        summary["paths"] = {k: str(v) for k, v in paths.items()}
    return MetaTrainResult(loss, envr.name, history, table, paths, _plain(summary))
