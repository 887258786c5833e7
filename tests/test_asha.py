"""Multi-fidelity evaluation (successive halving / ASHA): promotion continues from the saved
checkpoint, the ledger keeps every rung, and a killed batch resumes without retraining a rung."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from loss_rl.errors import ConfigError
from loss_rl.evaluation import Evaluator, FidelityConfig, InProcessExecutor, promoted
from loss_rl.expr import Expr, known_loss
from loss_rl.presets import parse_env_preset
from loss_rl.results import Status
from loss_rl.store import Ledger
from loss_rl.tasks import TaskConfig
from loss_rl.training import ModelState, TrainResult, train
from tests.test_benchmarks_smoke import _run_benchmark

TASK_DICT: dict[str, Any] = {
    "dataset": "wine",
    "corruption": {"kind": "symmetric", "rate": 0.4},
    "model": {"widths": [16]},
    "training": {"batch_size": 32, "lr": 0.02, "steps": 40},
}
TASK = TaskConfig.from_dict(TASK_DICT)
FIDELITY = FidelityConfig((10, 20, 40), keep=0.5)
SEEDS = (0, 1)
NAMES = ["ce", "focal", "gce", "mae", "label_smoothing", "taylor_glo"]


@pytest.fixture(autouse=True)
def _in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSS_RL_WORKERS", "0")  # tiny populations: no worker processes


class Counting(InProcessExecutor):
    """The in-process executor, noting each call's (candidates, first step, last step)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

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
        self.calls.append((len(candidates), start[0].step if start else 0, steps))
        return super().run_from(candidates, task, steps, seeds, data_seed, start, keep_state)


class Killed(Counting):
    """Dies (like a killed process) when asked to continue a rung."""

    def run_from(self, *args: Any, **kwargs: Any) -> list[TrainResult]:
        if args[5] is not None:
            raise SystemExit("killed")
        return super().run_from(*args, **kwargs)


def _evaluator(path: Path, executor: InProcessExecutor) -> tuple[Evaluator, Ledger]:
    ledger = Ledger(path)
    ev = Evaluator(
        TASK, seeds=SEEDS, data_seed=0, ledger=ledger, executor=executor, fidelity=FIDELITY
    )
    return ev, ledger


def _straight(expr: Expr, steps: int) -> float:
    rs = train([expr], TASK, steps, list(SEEDS), data_seed=0, workers=0)
    return sum(float(r.score) for r in rs) / len(rs)  # type: ignore[arg-type]


def test_fidelity_config_is_validated() -> None:
    assert FidelityConfig.from_dict({"rungs": [10, 40], "keep": 0.25}) == FidelityConfig(
        (10, 40), 0.25
    )
    for bad in ({"rungs": [40, 10]}, {"rungs": []}, {"rungs": [10, 40], "keep": 1.5}, {"x": 1}):
        with pytest.raises(ConfigError):
            FidelityConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="last rung"):
        Evaluator(TASK, fidelity=FidelityConfig((10, 30)))
    preset = {"task": TASK_DICT, "evaluation": {"fidelity": {"rungs": [10, 40], "keep": 0.5}}}
    parsed = parse_env_preset(preset, "t")
    assert parsed.evaluation.fidelity == FidelityConfig((10, 40), 0.5)
    assert parsed.to_dict()["evaluation"]["fidelity"] == {"rungs": [10, 40], "keep": 0.5}
    with pytest.raises(ConfigError, match="last rung"):
        parse_env_preset({**preset, "evaluation": {"fidelity": {"rungs": [10, 20]}}}, "t")
    off = parse_env_preset({"task": TASK_DICT}, "t")
    assert off.evaluation.fidelity is None and "fidelity" not in off.to_dict()["evaluation"]


def test_promotion_rule_ranks_against_everyone_at_the_rung() -> None:
    assert promoted([0.9, 0.5, 0.1, None], [0.9, 0.5, 0.1, None], 0.5) == [1, 1, 0, 0]
    # Earlier candidates at the rung raise the bar: only 0.95 is in the top half of six.
    assert promoted([0.95, 0.5], [0.99, 0.97, 0.2, 0.1, 0.95, 0.5], 0.5) == [1, 0]
    assert promoted([0.5, 0.5], [0.5, 0.5, 0.1], 0.34) == [1, 1]  # a tie at the bar goes on


def test_promotion_continues_from_the_checkpoint_and_the_ledger_keeps_each_rung(
    tmp_path: Path,
) -> None:
    ex = Counting()
    ev, ledger = _evaluator(tmp_path / "ledger.sqlite", ex)
    exprs = [known_loss(n) for n in NAMES]
    results = ev.evaluate(exprs)
    assert all(r.ok for r in results)
    # Rung 0 trains everyone from scratch; each later call continues from the rung below.
    assert ex.calls[0] == (6, 0, 10)
    assert [c[1:] for c in ex.calls[1:]] == [(10, 20), (20, 40)]
    rows = ledger.rungs()
    per_rung = [sum(r.rung == k for r in rows) for k in range(3)]
    assert per_rung[0] == 6 and per_rung[1] == 3 and 2 <= per_rung[2] <= 3
    stopped_at = [per_rung[0] - per_rung[1], per_rung[1] - per_rung[2], per_rung[2]]
    assert sorted(r.fidelity for r in results) == [
        steps for steps, n in zip(FIDELITY.rungs, stopped_at, strict=True) for _ in range(n)
    ]
    # The score at the highest rung is the score of a straight training that long: promotion
    # resumed the model (and its optimiser), it did not restart it.
    for e, r in zip(exprs, results, strict=True):
        assert r.score == pytest.approx(_straight(e, r.fidelity), abs=1e-9), str(e)
    # Budget in optimiser steps: 6 × 10 + 3 × 10 + n2 × 20 candidate-steps.
    assert ev.stats.optimiser_steps == 60 + 30 + 20 * per_rung[2]
    assert ev.training_equivalents == pytest.approx(ev.stats.optimiser_steps / 40)
    # The batch is decided: no state is kept for it; a second proposal is a cache hit.
    assert all(ledger.rung_state(r.key, r.rung) is None for r in rows)
    again = ev.evaluate(exprs[:2])
    assert [a.source for a in again] == ["cache_key"] * 2 and len(ex.calls) == 3


def test_the_reference_trains_through_every_rung(tmp_path: Path) -> None:
    ev, _ = _evaluator(tmp_path / "ledger.sqlite", Counting())
    ev.evaluate([known_loss(n) for n in NAMES[1:]] + [known_loss("ce")])
    assert ev.reference_score == pytest.approx(_straight(known_loss("ce"), 40), abs=1e-9)


def test_a_batch_killed_between_rungs_resumes_without_retraining(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    exprs = [known_loss(n) for n in NAMES]
    ev, ledger = _evaluator(path, Killed())
    with pytest.raises(SystemExit):
        ev.evaluate(exprs)
    ledger.close()
    ex = Counting()
    ev, ledger = _evaluator(path, ex)
    assert ev.steps_before == 60  # rung 0 of the killed session counts against the budget
    results = ev.evaluate(exprs)
    assert all(c[1] > 0 for c in ex.calls)  # nothing trained from scratch: rung 0 was kept
    for e, r in zip(exprs, results, strict=True):
        assert r.score == pytest.approx(_straight(e, r.fidelity), abs=1e-9), str(e)


_CHILD = """
import sys, time
from loss_rl.evaluation import Evaluator, FidelityConfig, InProcessExecutor
from loss_rl.expr import known_loss
from loss_rl.store import Ledger
from loss_rl.tasks import TaskConfig


class Slow(InProcessExecutor):
    def run_from(self, candidates, task, steps, seeds, data_seed, start, keep_state):
        if start is not None:
            time.sleep(600)  # the parent kills -9 here, after rung 0 is in the ledger
        return super().run_from(candidates, task, steps, seeds, data_seed, start, keep_state)


if __name__ == "__main__":
    task = TaskConfig.from_dict({task!r})
    ledger = Ledger(sys.argv[1])
    ev = Evaluator(task, seeds=(0, 1), data_seed=0, ledger=ledger, executor=Slow(),
                   fidelity=FidelityConfig((10, 20, 40), 0.5))
    ev.evaluate([known_loss(n) for n in {names!r}])
"""


@pytest.mark.slow
def test_kill_9_between_rungs_then_resume_keeps_the_finished_rung(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD.format(task=TASK_DICT, names=NAMES)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LOSS_RL_WORKERS": "0"}
    proc = subprocess.Popen([sys.executable, str(script), str(path)], env=env)
    try:
        deadline = time.monotonic() + 180
        rows: list[tuple[Any, ...]] = []
        while time.monotonic() < deadline and proc.poll() is None:
            if path.is_file():
                try:
                    with sqlite3.connect(path) as db:
                        rows = db.execute("SELECT id, key, rung, created FROM rungs").fetchall()
                except sqlite3.OperationalError:
                    rows = []  # the table is not there yet
            if len(rows) == len(NAMES):
                break
            time.sleep(0.2)
        assert len(rows) == len(NAMES), "rung 0 never reached the ledger"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ex = Counting()
    ev, ledger = _evaluator(path, ex)
    results = ev.evaluate([known_loss(n) for n in NAMES])
    assert all(r.status is Status.OK for r in results)
    assert all(c[1] > 0 for c in ex.calls)  # rung 0 was not trained again
    with sqlite3.connect(path) as db:
        after = db.execute("SELECT id, key, rung, created FROM rungs WHERE rung = 0").fetchall()
    assert sorted(after) == sorted(rows)  # the very rows written before the kill
    assert ledger.counts()["trained"] == len(NAMES)


@pytest.mark.slow
def test_benchmark_smoke(tmp_path: Path) -> None:
    out = _run_benchmark(
        "asha.py",
        *("--env", "tiny", "--budget", "6", "--seeds", "1", "--verify-seeds", "2"),
        tmp_path=tmp_path,
    )
    assert out["rungs"][-1] == out["search_steps"] and len(out["asha_test"]) == 1  # type: ignore[arg-type,index]
