"""``meta_train``: meta-learn an ML3-style neural loss for a task, verify it and export it.

``meta_train`` is what ``loss-rl meta-train --env NAME`` calls: it meta-learns a
:class:`~loss_rl.neural_loss.NeuralLoss`, verifies it against CE with a plain PyTorch loop on
fresh paired seeds (:func:`loss_rl.meta.compare_modules`), and exports it as a JSON spec (weights
as data) and a standalone ``.py`` module.

Bechtle et al. 2021 (ML3) learn the neural loss; Finn et al. 2017 (MAML) is the outer loop over a
task distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch.nn.functional as F
from torch import Tensor

from loss_rl._refine._digest import plain, table_digest, table_facts
from loss_rl._refine._settings import (
    DEFAULT_UNROLL,
    ObjectiveChoice,
    ProgressFn,
    check_verify_seeds,
    meta_configs,
    settings_digest,
)
from loss_rl._refine._sources import resolve_env
from loss_rl.errors import ConfigError
from loss_rl.expr import TaskKind
from loss_rl.meta import MetaHistory, MetaProgress, TaskEpisodes, compare_modules, meta_optimize
from loss_rl.neural_loss import NeuralLoss, export_neural_loss
from loss_rl.output_paths import check_writable


@dataclass
class MetaTrainResult:
    """Outcome of :func:`meta_train`.

    Attributes:
        loss: The meta-learned :class:`~loss_rl.neural_loss.NeuralLoss`.
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


def default_meta_folder(env: str, seed: int) -> Path:
    """Where :func:`meta_train` writes without ``out``: ``results/meta_<env>_s<seed>``."""
    # A suite task is named "<suite>:<task>"; a colon has no place in a folder name.
    return Path("results") / f"meta_{env.replace(':', '-')}_s{seed}"


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
            :func:`loss_rl.refine`).
        unroll: Differentiate through the last ``unroll`` inner steps only (``None``: all).
        tasks_per_step: Episodes per outer step.
        meta_lr: Outer Adam learning rate.
        clip_norm: Meta-gradient norm clip.
        hidden: Hidden widths of the per-class network.
        activation: Its activation.
        base: ``"ce"`` (start from cross-entropy and learn a correction) or ``"none"``.
        objective: Query loss (see :func:`loss_rl.refine`).
        data_seeds: Data seeds episodes are drawn from (default: the env's).
        verify_seeds: Fresh paired seeds for the test comparison with CE: 0 skips it, else at
            least 2 (checked before any training).
        verify_steps: Verification steps (default: the task's ``full_steps``).
        seed: Seed of the network initialisation and episode draws.
        out: Output folder (default ``results/meta_<env>_s<seed>``, see
            :func:`default_meta_folder`); gets ``loss.json`` and ``loss.py``. Checked to be
            writable before any training.
        write: Write the exports.
        progress: Called with a :class:`~loss_rl.meta.MetaProgress` after every outer step.

    Returns:
        A :class:`MetaTrainResult`.

    Raises:
        ConfigError: for a regression task, bad settings or an output folder that cannot be
            written.
    """
    check_verify_seeds(verify_seeds)
    envr = resolve_env(env)
    task = envr.task
    if task.kind is not TaskKind.CLASSIFICATION:
        raise ConfigError(
            "the neural loss is a classification loss; choose a classification env", field="env"
        )
    folder = Path(out) if out is not None else default_meta_folder(envr.name, seed)
    if write:
        # Before the meta-training: an unwritable folder must not cost its minutes.
        check_writable(folder, "out", folder=True)
    loss = NeuralLoss(hidden, activation, base, seed=seed)
    inner, outer = meta_configs(
        task,
        inner_steps=inner_steps,
        unroll=unroll,
        meta_steps=meta_steps,
        tasks_per_step=tasks_per_step,
        meta_lr=meta_lr,
        clip_norm=clip_norm,
        seed=seed,
        objective=objective,
    )
    seeds = list(data_seeds) if data_seeds is not None else [envr.data_seed]
    history = meta_optimize(loss, TaskEpisodes(task, seeds), inner, outer, progress)
    table = None
    if verify_seeds:
        if progress is not None:
            progress(MetaProgress("verify", meta_steps, meta_steps))
        table = compare_modules(
            {"neural": loss.per_sample, "ce": _ce},
            task,
            seeds=verify_seeds,
            steps=verify_steps,
            data_seed=envr.data_seed,
        )
    summary: dict[str, Any] = {
        "env": envr.name,
        "architecture": loss.architecture,
        **settings_digest(inner, outer, seeds),
        "meta": history.summary(),
        "verification": table_digest(table, ["neural", "ce"]),
        **table_facts(table),
    }
    paths: dict[str, Path] = {}
    if write:
        meta = plain({k: summary[k] for k in ("env", "meta", "verification")})
        paths["json"] = export_neural_loss(loss, folder / "loss.json", "json", meta)
        paths["py"] = export_neural_loss(loss, folder / "loss.py", "py", meta)
        summary["paths"] = {k: str(v) for k, v in paths.items()}
    return MetaTrainResult(
        loss=loss,
        env=envr.name,
        history=history,
        verification=table,
        paths=paths,
        summary=plain(summary),
    )
