"""A search killed (SIGKILL) at ten points and resumed each time: nothing finished is redone.

Each kill lands at a drawn moment: after a drawn number of finished trainings plus a drawn delay,
so some kills hit a batch in training, some a ledger write, some an agent checkpoint.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from loss_rl.store import load_run
from tests.test_search import _cli, _trained_per_key, _wait_for_trained

KILLS = 10
BUDGET = 80


@pytest.mark.slow
def test_ten_kills_then_resume_keep_every_finished_evaluation_once(tmp_path: Path) -> None:
    rng = random.Random(7)  # fixed: a red CI means a changed program, not a new draw
    run_dir = tmp_path / "r"
    seen: set[str] = set()
    target = 0
    for k in range(KILLS):
        if k == 0:
            args = ["search", "--env", "tiny", "--agent", "maskable_ppo", "--budget", str(BUDGET)]
            proc = _cli(*args, "--out", str(tmp_path), "--name", "r", cwd=tmp_path)
        else:
            proc = _cli("resume", str(run_dir), cwd=tmp_path)
        # Kill points spread over the budget; each session trains at least one new loss first
        # (the previous one may have run past its kill point during the drawn delay).
        done = sum(_trained_per_key(run_dir).values()) if k else 0
        step = rng.randint(1, (BUDGET - 10) // KILLS)
        target = min(BUDGET - 1, max(target + step, done + 1))
        _wait_for_trained(run_dir, target, proc, timeout=180)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        per_key = _trained_per_key(run_dir)
        assert max(per_key.values()) == 1, f"kill {k}: a finished evaluation was trained again"
        assert seen <= set(per_key), f"kill {k}: a finished evaluation was lost"
        seen = set(per_key)
    res = _cli("resume", str(run_dir), cwd=tmp_path)
    out, _ = res.communicate(timeout=600)
    run = load_run(run_dir)
    assert run.summary is not None and run.summary["status"] == "finished"
    stopped = run.summary.get("stopped")
    assert res.returncode == (3 if stopped else 0), out  # 3: short of the budget, says why
    per_key = _trained_per_key(run_dir)
    assert max(per_key.values()) == 1
    assert seen <= set(per_key)
    assert stopped or sum(per_key.values()) >= BUDGET
    commands = (run_dir / "command.txt").read_text().splitlines()
    assert commands[0].startswith("loss-rl search") and len(commands) >= 2
    assert all(c.startswith("loss-rl resume") for c in commands[1:])
