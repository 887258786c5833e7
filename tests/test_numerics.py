"""Numerics of results: finite blow-ups count as divergence, intervals stay in the metric's range,
and ``loss-rl evaluate`` says which losses fail a check and which duplicates it merged."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from loss_rl.errors import ConfigError
from loss_rl.expr import KNOWN_LOSSES, Expr, TaskKind, known_loss, parse
from loss_rl.presets import load_env_preset
from loss_rl.stats import summarize_seeds, t_interval
from loss_rl.tasks import TaskConfig
from loss_rl.training import LOSS_BOUND, OUTPUT_BOUND, score_range, train
from loss_rl.training._trainer import _Run
from loss_rl.verify import verification_losses, verify

EXPLODING = "-100 * p_y^-3"  # unbounded below: drives p_y -> 0, finite all along
BUNDLED = [
    "digits_noisy",
    "digits_clean",
    "tiny",
    "diabetes",
    pytest.param("mnist1d", marks=pytest.mark.slow),
]


def _library(kind: TaskKind) -> list[Expr]:
    return [known_loss(name) for name, spec in KNOWN_LOSSES.items() if spec.kind is kind]


# ------------------------------------------------------------------------ the divergence rule


def test_check_applies_each_rule_and_names_it() -> None:
    task = load_env_preset("tiny").task
    run = _Run([known_loss("ce")] * 6, task, [0], 0)
    shape = (6, 4, 3)
    z, dz = torch.zeros(shape), torch.zeros(shape)
    # Step 0 sets each model's loss bound: max(1e6, 10 x |first loss|); model 4 starts at 5e6.
    run._check(torch.tensor([1.0, 1.0, 1.0, 1.0, 5e6, 1.0]), dz, z, 0)
    assert all(d is None for d in run.diverged_at)
    loss = torch.tensor([2.0, math.nan, 1.0, -2e6, 4e7, 1.0])
    dz[2, 0, 0] = math.inf
    z[5, 1, 2] = -2 * OUTPUT_BOUND
    run._check(loss, dz, z, 7)
    assert run.diverged_at == [None, 7, 7, 7, None, 7]
    assert run.diverge_reason[1] == run.diverge_reason[2] == "non-finite loss or gradient at step 7"
    assert run.diverge_reason[3] == "loss exploded at step 7: mean loss -2e+06 beyond ±1e+06"
    assert run.diverge_reason[5] == "outputs exploded at step 7: |output| 2e+06 > 1e+06"
    assert run.alive.tolist() == [True, False, False, False, True, False]
    # A frozen model is not flagged again; the bound of a large-scale loss is its own (5e7).
    run._check(torch.tensor([1.0, 1.0, 1.0, 1.0, 6e7, 1.0]), torch.zeros(shape), z, 8)
    assert run.diverged_at == [None, 7, 7, 7, 8, 7]
    assert run.diverge_reason[4].startswith(
        "loss exploded at step 8: mean loss 6e+07 beyond ±5e+07"
    )


def _breaks_a_rule(loss: float, bound: float, z: torch.Tensor, dz: torch.Tensor) -> bool:
    """The divergence rule of one model, written out plainly (the reference)."""
    return not (
        abs(loss) <= bound
        and float(z.abs().max()) <= OUTPUT_BOUND
        and math.isfinite(float(dz.sum()))
    )


@pytest.mark.parametrize(
    "case",
    [
        "none",
        "loss_at_bound",
        "loss_past_bound",
        "z_at_bound",
        "z_past_bound",
        "z_nan",
        "opposite_infs",
        "row_sum_overflows",
        "total_overflows",
        "neg_inf_loss",
    ],
)
def test_check_fast_path_flags_exactly_the_rule_breakers(case: str) -> None:
    """The whole-population shortcut of ``_check`` decides as the per-model rule, at the edges."""
    task = load_env_preset("tiny").task
    run = _Run([known_loss("ce")] * 4, task, [0], 0)
    shape = (4, 5, 3)
    z, dz = torch.full(shape, 0.5), torch.full(shape, 0.25)
    run._check(torch.ones(4), dz, z, 0)  # bounds: 1e6 each
    bound = float(run.loss_bound[0])  # type: ignore[index]
    loss = torch.ones(4)
    big = torch.finfo(torch.float32).max
    if case == "loss_at_bound":
        loss[1] = bound
    elif case == "loss_past_bound":
        loss[1] = float(np.nextafter(np.float32(bound), np.float32(np.inf)))
    elif case == "z_at_bound":
        z[2, 0, 0] = -OUTPUT_BOUND
    elif case == "z_past_bound":
        z[2, 0, 0] = float(np.nextafter(np.float32(OUTPUT_BOUND), np.float32(np.inf)))
    elif case == "z_nan":
        z[3, 4, 2] = math.nan
    elif case == "opposite_infs":  # +inf in one model, -inf in another: each is non-finite
        dz[0, 0, 0], dz[1, 0, 0] = math.inf, -math.inf
    elif case == "row_sum_overflows":  # finite entries, one model's sum is inf
        dz[1, 0, 0] = dz[1, 0, 1] = big
    elif case == "total_overflows":  # every model's sum finite, their total is not
        dz[1, 0, 0], dz[2, 0, 0] = big, big
    elif case == "neg_inf_loss":
        loss[0] = -math.inf
    expected = [_breaks_a_rule(float(loss[m]), bound, z[m], dz[m]) for m in range(4)]
    run._check(loss, dz, z, 3)
    assert [d == 3 for d in run.diverged_at] == expected
    assert any(expected) == (case not in ("none", "loss_at_bound", "z_at_bound", "total_overflows"))


@pytest.mark.parametrize("env", BUNDLED)
def test_library_losses_stay_far_inside_the_bounds_on_bundled_tasks(env: str) -> None:
    task = load_env_preset(env).task
    exprs = _library(task.kind)
    run = _Run(exprs, task, [0], 0)
    seen = {"loss": 0.0, "out": 0.0}
    check = run._check

    def recording(loss: torch.Tensor, dz: torch.Tensor, z: torch.Tensor, step: int) -> None:
        seen["loss"] = max(seen["loss"], float(loss.abs().max()))
        seen["out"] = max(seen["out"], float(z.abs().max()))
        check(loss, dz, z, step)

    run._check = recording  # type: ignore[method-assign]
    run.fit(task.training.steps)  # the search's fidelity
    flagged = [
        str(exprs[run.loss.order[m]]) for m, d in enumerate(run.diverged_at) if d is not None
    ]
    assert flagged == []
    # Orders of magnitude of room: the bounds catch blow-ups, not healthy training.
    assert seen["loss"] < LOSS_BOUND / 1e4 and seen["out"] < OUTPUT_BOUND / 100, seen


@pytest.mark.parametrize("env", ["tiny", "digits_noisy"])
def test_a_loss_that_explodes_while_finite_diverges_on_every_seed(env: str) -> None:
    task = load_env_preset(env).task
    exprs = [known_loss("ce"), parse(EXPLODING), parse("10000000 * -log_p_y")]
    results = train(exprs, task, task.training.steps, [0, 1], data_seed=0, workers=0)
    by_loss = {c: [r for r in results if r.candidate == c] for c in range(3)}
    for r in by_loss[1]:
        assert r.status == "diverged" and r.score is None and r.metrics == {}
        assert r.reason.startswith(f"loss exploded at step {r.diverged_at}:"), r.reason
    # CE, and CE times 1e7 (which Adam trains the same way), are not explosions.
    for r in by_loss[0] + by_loss[2]:
        assert r.ok and r.reason == ""
    ce, big = (sorted(r.score for r in by_loss[c]) for c in (0, 2))  # type: ignore[type-var]
    assert big == pytest.approx(ce, abs=0.05)


def test_outputs_that_explode_diverge_whatever_the_loss_scale() -> None:
    task = load_env_preset("digits_noisy").task
    exprs = [parse("-sum_c(t * z)"), parse("0.000001 * -sum_c(t * z)")]  # both pass the checks
    for r in train(exprs, task, task.training.steps, [0], data_seed=0, workers=0):
        assert r.status == "diverged", r
        assert r.reason.startswith(f"outputs exploded at step {r.diverged_at}:"), r.reason


# ------------------------------------------------------------------------ intervals


def test_score_ranges_of_every_task_metric() -> None:
    from loss_rl.tasks._config import METRICS

    assert score_range("accuracy") == score_range("balanced_accuracy") == (0.0, 1.0)
    assert score_range("macro_f1") == (0.0, 1.0)
    assert score_range("r2") == (-math.inf, 1.0)
    assert score_range("neg_mse") == score_range("neg_mae") == score_range("neg_nll")
    assert score_range("neg_mse") == (-math.inf, -0.0)
    for metrics in METRICS.values():
        for metric in metrics:
            low, high = score_range(metric)
            assert low < high


def test_intervals_are_clipped_to_the_range_and_open_sides_stay_open() -> None:
    scores = np.array([0.1, 0.1, 0.1, 0.1, 0.95, math.nan])
    _, raw_low, raw_high = t_interval(scores[:5])
    assert raw_low < 0  # what the table used to show for an accuracy
    mean, low, high, _, n, diverged = summarize_seeds(scores, (0.0, 1.0))
    assert (low, high, n, diverged) == (0.0, raw_high, 5, 1)
    assert mean == pytest.approx(0.27)
    r2 = np.array([0.99, 0.2, 0.995])
    _, low, high, *_ = summarize_seeds(r2, score_range("r2"))
    assert high == 1.0 and low == t_interval(r2)[1] < 0.2
    assert summarize_seeds(r2)[2] > 1.0  # no bounds: unchanged


@dataclass
class _Res:
    candidate: int
    seed: int
    status: str
    score: float | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


class _Scripted:
    """An executor whose scores are given per expression (one per seed)."""

    def __init__(self, scores: dict[str, list[float]], metric: str) -> None:
        self.scores, self.metric = scores, metric

    def run(
        self,
        candidates: Sequence[Expr],
        task: Any,
        steps: int,
        seeds: Sequence[int],
        data_seed: int | None,
        splits: Sequence[str] = ("val",),
    ) -> list[_Res]:
        out = []
        for c, expr in enumerate(candidates):
            for s, seed in enumerate(seeds):
                v = self.scores.get(str(expr), [0.5] * len(seeds))[s]
                raw = -v if self.metric.startswith("neg_") else v
                metrics = {"test": {self.metric.removeprefix("neg_"): raw}}
                metrics["val"] = dict(metrics["test"])
                out.append(_Res(c, seed, "ok", v, metrics))
        return out


def test_verify_clips_accuracy_intervals_and_reports_val_as_the_score() -> None:
    task = load_env_preset("tiny").task
    spread = _Scripted({"1 - p_y": [0.1, 0.1, 0.9]}, "accuracy")
    table = verify({"x": parse("1 - p_y")}, task, seeds=3, references=["ce"], executor=spread)
    row = table.set_index("loss").loc["x"]
    assert row["ci_low"] == 0.0 and row["ci_high"] <= 1.0
    assert (table["ci_low"] >= 0).all() and (table["ci_high"] <= 1).all()

    # A task whose score negates a metric: val_mean is that score (it was NaN), intervals <= 0.
    reg = TaskConfig.from_dict({"dataset": "diabetes", "metric": "neg_mse"})
    errors = _Scripted({"residual^2": [-0.01, -0.01, -2.0]}, "neg_mse")
    table = verify({"x": parse("residual^2")}, reg, seeds=3, references=["mse"], executor=errors)
    row = table.set_index("loss").loc["x"]
    assert row["val_mean"] == pytest.approx((-0.01 - 0.01 - 2.0) / 3)
    assert row["ci_high"] == 0.0 and row["ci_low"] < -2.0
    assert table.attrs["metric"] == "neg_mse"


def test_verify_records_failed_checks_and_keeps_a_reference_row_its_own() -> None:
    task = load_env_preset("tiny").task
    ex = _Scripted({}, "accuracy")
    table = verify(
        {"bad": parse(EXPLODING), "gce": known_loss("gce")},
        task,
        seeds=2,
        references=["ce", "gce"],
        executor=ex,
    )
    assert list(table.attrs["failed_checks"]) == ["bad"]
    assert "wrong_direction" in table.attrs["failed_checks"]["bad"]
    assert sorted(table["loss"]) == ["bad", "ce", "gce"]  # gce: the reference's row
    with pytest.raises(ConfigError, match="has the name of the reference 'gce'"):
        verify({"gce": known_loss("gce", q=0.5)}, task, seeds=2, references=["gce"], executor=ex)


# ------------------------------------------------------------------------ evaluate's warnings


def test_verification_losses_merge_rename_and_warn_once_per_loss() -> None:
    given = [
        ("gce", known_loss("gce")),
        ("mine", parse(EXPLODING)),
        ("(1 - p_y^0.7) / 0.7", parse("(1 - p_y^0.7) / 0.7")),
        ("mine", parse("1 - p_y")),
        ("-100*p_y^-3", parse("-100*p_y^-3")),
    ]
    named, warnings = verification_losses(given, TaskKind.CLASSIFICATION, ["ce", "gce"])
    assert named == {"mine": parse(EXPLODING), "mine#2": parse("1 - p_y")}
    assert warnings == [
        "'gce' ((1 - p_y^0.7) / 0.7) is the same loss as the reference 'gce' (same canonical "
        "key): verified once, in row 'gce'",
        "'mine' (-100 * p_y^-3) fails the validity check wrong_direction: minimising the loss "
        "does not improve the true-class probability on the probes (0.209 -> 0.004) — a search "
        "would reject it; verified anyway",
        "'(1 - p_y^0.7) / 0.7' is the same loss as the reference 'gce' (same canonical key): "
        "verified once, in row 'gce'",
        "'mine' is already the name of a different loss: 1 - p_y is verified as 'mine#2'",
        "'-100*p_y^-3' (-100 * p_y^-3) is the same loss as the loss 'mine' (same canonical key): "
        "verified once, in row 'mine'",
    ]
    with pytest.raises(ConfigError, match="does not fit a classification task"):
        verification_losses([("r", parse("residual^2"))], TaskKind.CLASSIFICATION)


def test_evaluate_warns_and_reports_the_exploding_loss_as_diverged(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loss_rl.cli import app

    csv = tmp_path / "table.csv"
    args = ["evaluate", EXPLODING, "-log_p_y", "gce", "--env", "tiny", "--seeds", "2"]
    res = CliRunner().invoke(app, [*args, "--csv", str(csv)])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("Warning: ")]
    assert len(lines) == 3, res.output
    assert lines[0].startswith(f"Warning: '{EXPLODING}' fails the validity check wrong_direction")
    assert "'-log_p_y' is the same loss as the reference 'ce'" in lines[1]
    assert "'gce' ((1 - p_y^0.7) / 0.7) is the same loss as the reference 'gce'" in lines[2]
    table = pd.read_csv(csv).set_index("loss")
    assert sorted(table.index) == sorted([EXPLODING, "ce", "gce"])
    assert table.loc[EXPLODING, "n"] == 0 and table.loc[EXPLODING, "diverged"] == 2
    assert (table.loc[["ce", "gce"], "diverged"] == 0).all()
    assert ((table["ci_low"].dropna() >= 0) & (table["ci_high"].dropna() <= 1)).all()
