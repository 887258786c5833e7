"""End-to-end searches on the tiny preset: run folder, budget, verification, export, resume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import loss_rl
from loss_rl import Search, list_runs
from loss_rl.errors import ConfigError, RunError
from loss_rl.presets import load_env_preset
from loss_rl.store import LEDGER, Ledger, load_run

REPO = Path(__file__).resolve().parents[1]


def _trained_per_key(run_dir: Path) -> dict[str, int]:
    with sqlite3.connect(run_dir / LEDGER) as db:
        rows = db.execute(
            "SELECT key, COUNT(*) FROM evaluations WHERE source='trained' GROUP BY key"
        ).fetchall()
    return dict(rows)


def test_default_search_on_tiny_writes_a_complete_run_folder(tmp_path: Path) -> None:
    run = loss_rl.search(env="tiny", agent="maskable_ppo", budget=16, out=tmp_path, name="r")
    p = run.path
    for f in ("config.yaml", "command.txt", "ledger.sqlite", "agent.zip", "summary.json",
              "best/loss.json", "best/loss.py", "best/loss.pt"):  # fmt: skip
        assert (p / f).is_file(), f
    s = run.summary
    assert s is not None and s["status"] == "finished"
    ev = s["evaluations"]
    # The budget counts inner trainings; the last batch may overshoot by < one batch.
    assert 16 <= ev["trained"] < 16 + 4 + 1
    assert ev["proposed"] == ev["trained"] + ev["cached"] + ev["rejected"]
    assert 0.0 <= s["resolved_without_training"] <= 1.0
    ver = s["verification"]
    names = {row["loss"] for row in ver["table"]}
    assert {"ce", "gce"} <= names and any(n.startswith("found_") for n in names)
    assert all(row["n"] + row["diverged"] == 2 for row in ver["table"])
    # The honest protocol, recorded: checkpoint selection, noisy validation labels (tiny has
    # symmetric noise), tuned references and the verdict on the winner.
    assert s["protocol"]["select"] == "best" and s["protocol"]["val_labels"] == "noisy"
    assert ver["select"] == "best"
    assert ver["best_reference"]["name"] in {"ce", "gce"}
    assert ver["tuning_trainings"] == (1 + 4) * 2  # CE + GCE's grid, 2 seeds
    assert set(ver["tuning"]["gce"]["chosen"]) == {"q"}
    assert {"diff", "ci95", "p"} <= set(ver["vs_best_reference"]) and ver["vs_ce"] is not None
    assert isinstance(ver["novelty"]["known"], bool) and ver["verdict"].startswith("The winner")
    # The report and `loss-rl inspect` say the same.
    import html

    from typer.testing import CliRunner

    from loss_rl.cli import app
    from loss_rl.inspect import report_html

    page = report_html(run, tmp_path / "report.html", rollout_policy=False).read_text()
    assert html.escape(ver["verdict"]) in page
    shown = CliRunner().invoke(app, ["inspect", str(p), "--no-rollout"])
    assert shown.exit_code == 0, shown.output
    assert "Best tuned reference" in shown.output and "The winner" in shown.output
    # Every trained key was trained exactly once.
    assert max(_trained_per_key(p).values()) == 1
    # The exported best loss loads back and matches the summary.
    crit = loss_rl.load_loss(p / "best" / "loss.json")
    spec = json.loads((p / "best" / "loss.json").read_text())
    assert spec["expression"] == s["best"]["expression"]
    import torch

    out = crit(torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0]))
    assert out.shape == () and torch.isfinite(out)
    assert list_runs(tmp_path)[0].path == p
    assert not run.ledger.empty and run.best is not None


@pytest.mark.parametrize("algo", ["dqn", "ppo", "maskable_ppo", "random", "evolution", "optuna"])
def test_every_agent_runs_a_search(tmp_path: Path, algo: str) -> None:
    s = Search.create("tiny", algo, budget=16, out=tmp_path, name=algo)
    run = s.run(verify_top=False)
    assert run.summary is not None
    ev = run.summary["evaluations"]
    # The budget is spent, or (DQN replaying cached losses) the proposal cap of 10x budget ended
    # the run: it never stalls.
    assert ev["trained"] >= 16 or (algo == "dqn" and ev["proposed"] >= 160)
    assert run.summary["agent"] == algo
    assert (run.path / "agent.zip").is_file() == (algo in ("dqn", "ppo", "maskable_ppo"))
    if algo == "dqn":  # the replay buffer as plain arrays, never a pickle
        assert (run.path / "replay_buffer.npz").is_file()
        assert not (run.path / "replay_buffer.pkl").exists()
    if algo == "optuna":
        assert (run.path / "optuna.db").is_file()
    df = run.ledger
    assert (df["source"] == "trained").sum() == run.summary["evaluations"]["trained"]


def test_resume_of_a_finished_run_trains_nothing_new(tmp_path: Path) -> None:
    run = loss_rl.search(env="tiny", agent="ppo", budget=16, out=tmp_path, name="r")
    before = run.summary["evaluations"]["trained"]  # type: ignore[index]
    again = loss_rl.resume(run.path)
    assert again.summary["evaluations"]["trained"] == before  # type: ignore[index]
    assert len((run.path / "command.txt").read_text().splitlines()) == 2


def _cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "loss_rl.cli", *args]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for_trained(run_dir: Path, n: int, proc: subprocess.Popen[str], timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if (run_dir / LEDGER).is_file():
            try:  # read-only: the poll must never take the write lock from the search
                with contextlib.closing(
                    sqlite3.connect(f"file:{run_dir / LEDGER}?mode=ro", uri=True, timeout=5)
                ) as db:
                    row = db.execute(
                        "SELECT COUNT(*) FROM evaluations WHERE source='trained'"
                    ).fetchone()
                done = int(row[0])
            except sqlite3.Error:
                done = 0
            if done >= n:
                return
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"search ended early ({proc.returncode}):\n{out}")
        time.sleep(0.2)
    pytest.fail("search did not reach the wanted number of trainings in time")


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_never_retrains_a_finished_evaluation(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    proc = _cli("search", "--env", "tiny", "--agent", "maskable_ppo", "--budget", "60",
                "--out", str(tmp_path), "--name", "r", cwd=tmp_path)  # fmt: skip
    _wait_for_trained(run_dir, 12, proc, timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _trained_per_key(run_dir)
    assert killed_at and max(killed_at.values()) == 1
    res = _cli("resume", str(run_dir), cwd=tmp_path)
    out, _ = res.communicate(timeout=300)
    assert res.returncode == 0, out
    per_key = _trained_per_key(run_dir)
    assert max(per_key.values()) == 1  # nothing finished before the kill was trained again
    assert set(killed_at) <= set(per_key)
    assert sum(per_key.values()) >= 60
    assert load_run(run_dir).summary["status"] == "finished"  # type: ignore[index]


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_finishes(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    # Budget 400: tiny's small space ends a run on the proposal cap (10 x budget), and with 80
    # it could end (~11 s) before the interrupt landed on a busy CI machine.
    proc = _cli("search", "--env", "tiny", "--agent", "ppo", "--budget", "400",
                "--out", str(tmp_path), "--name", "r", cwd=tmp_path)  # fmt: skip
    _wait_for_trained(run_dir, 8, proc, timeout=120)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "resume" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert (run_dir / "agent.zip").is_file()
    res = _cli("resume", str(run_dir), cwd=tmp_path)
    out, _ = res.communicate(timeout=300)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    # Exit 3: finished short of the budget on a cap, and says why (tiny's space is small).
    assert res.returncode == (3 if summary.get("stopped") else 0), out


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="budget"):
        Search.create("tiny", "ppo", budget=0, out=tmp_path)
    with pytest.raises(ConfigError, match="too few for ppo, which needs 16") as info:
        Search.create("tiny", "ppo", budget=8, out=tmp_path)
    assert info.value.field == "budget"
    Search.create("tiny", "random", budget=1, out=tmp_path, name="one")  # baselines: any budget
    with pytest.raises(ConfigError, match="unknown env preset 'nope'"):
        Search.create("nope", "ppo", out=tmp_path)
    with pytest.raises(ConfigError, match="unknown agent preset"):
        Search.create("tiny", "nope", out=tmp_path)
    with pytest.raises(RunError, match="not a run folder"):
        loss_rl.resume(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: {dataset: {name: digits}}\nspace: {space: symbolc}\n")
    with pytest.raises(ConfigError) as info:
        load_env_preset(bad)
    assert info.value.field == "env.space.space"
    bad.write_text("task: {dataset: {name: digits}}\nbudgt: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'budgt'"):
        load_env_preset(bad)


def test_ledger_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    led = Ledger(tmp_path / LEDGER)
    led._db.execute("UPDATE meta SET value='99' WHERE name='schema_version'")
    led._db.commit()
    led.close()
    with pytest.raises(RunError, match="newer"):
        Ledger(tmp_path / LEDGER)


def test_policy_transfer_init_agent_and_no_train(tmp_path: Path) -> None:
    first = loss_rl.search(env="tiny", agent="ppo", budget=16, out=tmp_path, name="a")
    # Fine-tune from the trained policy.
    tuned = Search.create("tiny", "ppo", budget=16, out=tmp_path, name="b", init_agent=first.path)
    assert tuned.run(verify_top=False).summary["evaluations"]["trained"] >= 8  # type: ignore[index]
    # Only roll it out: --agent RUN --no-train.
    roll = Search.create("tiny", first.path, budget=8, out=tmp_path, name="c", train=False)
    assert roll.agent_config.algo == "ppo" and not roll.train
    res = roll.run(verify_top=False)
    assert res.summary["evaluations"]["trained"] >= 8  # type: ignore[index]
    assert not (res.path / "agent.zip").exists()  # nothing learned, nothing saved


def test_policy_transfer_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--no-train only rolls out"):
        Search.create("tiny", "ppo", budget=8, out=tmp_path, train=False)
    with pytest.raises(ConfigError, match="no trained policy"):
        Search.create("tiny", "ppo", budget=16, out=tmp_path, init_agent=tmp_path)
    first = loss_rl.search(env="tiny", agent="ppo", budget=16, out=tmp_path, name="a")
    with pytest.raises(ConfigError, match="not a learning agent"):
        Search.create("tiny", "random", budget=8, out=tmp_path, init_agent=first.path)
    # A run folder records its MDP: another layout is refused before the policy is opened.
    with pytest.raises(ConfigError, match="another observation/action layout") as err:
        Search.create("diabetes", "ppo", budget=64, out=tmp_path, init_agent=first.path)
    assert err.value.field == "init_agent"
    with pytest.raises(ConfigError, match="is a ppo policy"):
        Search.create("tiny", "dqn", budget=64, out=tmp_path, init_agent=first.path)


def test_evaluate_cli_verifies_losses_and_refuses_the_wrong_kind(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loss_rl.cli import app

    csv = tmp_path / "table.csv"
    res = CliRunner().invoke(app, ["evaluate", "gce", "sum_c(abs(p - t))", "--env", "tiny",
                                   "--seeds", "2", "--csv", str(csv)])  # fmt: skip
    assert res.exit_code == 0, res.output
    import pandas as pd

    table = pd.read_csv(csv)
    assert {"ce", "gce", "sum_c(abs(p - t))"} == set(table["loss"])
    assert (table["n"] + table["diverged"] == 2).all()
    assert table.loc[table["loss"] == "ce", "diff_vs_ce"].iloc[0] == 0.0
    # tiny's references are CE and GCE, GCE tuned over its grid (the title counts trainings);
    # the MAE given here is the library's MAE and says so.
    assert "references tuned (10 trainings)" in res.output
    mae = table[table["loss"] == "sum_c(abs(p - t))"].iloc[0]
    assert mae["known_as"] == "mae"
    assert isinstance(table.loc[table["loss"] == "gce", "params"].iloc[0], str)
    args = ["evaluate", "gce", "--env", "tiny", "--seeds", "2", "--no-tune-references"]
    untuned = CliRunner().invoke(app, args)
    assert untuned.exit_code == 0, untuned.output
    assert "references tuned" not in untuned.output
    bad = CliRunner().invoke(app, ["evaluate", "residual^2", "--env", "tiny"])
    assert bad.exit_code == 2 and "does not fit a classification task" in bad.output
