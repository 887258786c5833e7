"""Inspecting runs: summary, policy rollouts, plots, HTML/JSON reports, and incomplete runs."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from loss_rl import Search
from loss_rl.cli import app
from loss_rl.inspect import PLOT_FILES, inspect_run, load_policy, report_html, rollout
from loss_rl.store import Run, load_run

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """One tiny search per kind of agent: a masked policy, a Q-network, and a baseline."""
    out = tmp_path_factory.mktemp("runs")
    return {
        algo: Search.create("tiny", algo, budget=16, out=out, name=algo).run(verify_top=False)
        for algo in ("maskable_ppo", "dqn", "random")
    }


def _copy(run: Run, dest: Path) -> Path:
    shutil.copytree(run.path, dest)
    shutil.rmtree(dest / "plots", ignore_errors=True)
    (dest / "report.html").unlink(missing_ok=True)
    return dest


def _assert_png(path: Path) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data.startswith(PNG), path
    assert len(data) > 8_000, f"{path} is only {len(data)} bytes"
    assert imread(path)[..., :3].std() > 0.02, f"{path} looks blank"


def test_inspect_writes_plots_and_a_self_contained_report(runs: dict[str, Run]) -> None:
    run = runs["maskable_ppo"]
    res = runner.invoke(app, ["inspect", str(run.path), str(runs["random"].path), "--html"])
    assert res.exit_code == 0, res.output
    for file in PLOT_FILES.values():
        _assert_png(run.path / "plots" / file)
    best = str(run.best["expression"])  # type: ignore[index]
    assert "greedy rollout" in res.output and "top-3" in res.output
    page = (run.path / "report.html").read_text()
    assert html.escape(best) in page
    assert page.count("data:image/png;base64,") == len(PLOT_FILES)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "not self-contained"


def test_report_opens_in_headless_chromium(runs: dict[str, Run], tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    run = runs["maskable_ppo"]
    report = report_html(run, tmp_path / "report.html", rollout_policy=False)
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         report.resolve().as_uri()],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert html.escape(str(run.best["expression"])) in dom  # type: ignore[index]


def test_json_summary_is_machine_readable(runs: dict[str, Run]) -> None:
    run = runs["maskable_ppo"]
    res = runner.invoke(app, ["inspect", str(run.path), "--json", "--no-rollout", "--top", "2"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["best"]["expression"] == run.best["expression"]  # type: ignore[index]
    assert len(data["top"]) <= 2 and data["agent"] == "maskable_ppo"
    assert data["evaluations"]["trained"] >= 16 and data["rollout"] is None
    assert set(data["plots"]) == set(PLOT_FILES)


@pytest.mark.parametrize(("algo", "quantity"), [("maskable_ppo", "probability"),
                                                 ("dqn", "q_value")])  # fmt: skip
def test_rollouts_are_deterministic_for_a_seed(
    runs: dict[str, Run], algo: str, quantity: str
) -> None:
    run = runs[algo]
    assert load_policy(run) is not None
    for greedy in (True, False):
        a = rollout(run, seed=3, deterministic=greedy, train=False)
        b = rollout(run, seed=3, deterministic=greedy, train=False)
        assert a.to_dict() == b.to_dict()
    steps = a.steps
    assert a.quantity == quantity and steps and len(steps[0].top) == 3
    assert steps[0].expression == a.start and steps[0].value is not None
    if quantity == "probability":
        assert all(0.0 <= p <= 1.0 for s in steps for _, p in s.top)


def test_runs_table_keeps_each_run_on_one_line_in_a_log(
    runs: dict[str, Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    # CliRunner's stdout is not a terminal (like a CI log or `| tee`): a row must not be folded.
    monkeypatch.delenv("COLUMNS", raising=False)
    res = runner.invoke(app, ["runs", str(runs["random"].path.parent)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    for algo, run in runs.items():
        best = str(run.best["expression"])  # type: ignore[index]
        assert any(algo in line and best in line for line in lines), res.stdout


def test_baseline_run_has_no_policy_but_everything_else(runs: dict[str, Run]) -> None:
    run = runs["random"]
    assert load_policy(run) is None
    res = runner.invoke(app, ["inspect", str(run.path)])
    assert res.exit_code == 0, res.output
    assert "no policy" in res.output and "baseline" in res.output
    for file in PLOT_FILES.values():
        _assert_png(run.path / "plots" / file)


def test_interrupted_run_without_agent_still_inspects(runs: dict[str, Run], tmp_path: Path) -> None:
    path = _copy(runs["maskable_ppo"], tmp_path / "cut")
    (path / "summary.json").unlink()
    (path / "agent.zip").unlink()
    ins = inspect_run(path)
    text = " ".join(ins.missing)
    assert "no summary.json" in text and "no agent.zip" in text
    assert ins.rollout is None and ins.summary["wall_seconds_estimated"]
    assert ins.summary["best"] is not None
    assert (path / "plots" / PLOT_FILES["best_so_far"]).is_file()


def test_run_from_a_newer_version_shows_what_it_can(runs: dict[str, Run], tmp_path: Path) -> None:
    path = _copy(runs["maskable_ppo"], tmp_path / "future")
    config = yaml.safe_load((path / "config.yaml").read_text())
    config["version"] = 99
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    ins = inspect_run(load_run(path))
    assert ins.rollout is None and any("newer loss_rl" in n for n in ins.missing)
    assert ins.summary["top"]


def test_not_a_run_is_a_clear_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["inspect", str(tmp_path)])
    assert res.exit_code == 2
    assert "not a run folder" in res.output


def test_ledger_records_the_edit_behind_each_proposal(tmp_path: Path) -> None:
    import loss_rl
    from loss_rl.inspect import outcomes_over_training

    run = loss_rl.Search.create("tiny", "ppo", budget=16, out=tmp_path, name="a")
    done = run.run(verify_top=False)
    df = done.ledger
    stepped = df[df["step"] > 0]
    assert stepped["action"].notna().all()
    # Symbolic edits are named "<position>:<edit>[:<operand>]", e.g. "1:set:p_y".
    assert stepped["action"].str.match(r"^\d+:[a-z_]+").all()
    assert outcomes_over_training(done)["top_edits"].str.len().gt(0).all()


def test_a_version_1_ledger_is_migrated_without_losing_rows(tmp_path: Path) -> None:
    import sqlite3

    from loss_rl.store import Ledger

    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute(
        "CREATE TABLE evaluations (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, "
        "expression TEXT, fingerprint TEXT, status TEXT NOT NULL, score REAL, metrics TEXT, "
        "fidelity INTEGER, seeds TEXT, source TEXT, reason TEXT, seconds REAL, episode INTEGER, "
        "step INTEGER, env_index INTEGER, batch INTEGER, created REAL)"
    )
    db.execute("INSERT INTO evaluations (key, status, source) VALUES ('k', 'ok', 'trained')")
    db.commit()
    db.close()
    led = Ledger(tmp_path / "ledger.sqlite")
    df = led.frame()
    assert len(df) == 1 and "action" in df and df["action"].isna().all()
    led.close()


NUMBERS = [
    (None, 4, "—"),
    (float("nan"), 4, "—"),
    (float("inf"), 2, "—"),
    (0.91234, 4, "0.9123"),
    (13.06, 1, "13.1"),
    (16, 4, "16"),
    ("ok", 4, "ok"),
]


@pytest.mark.parametrize(("value", "digits", "text"), NUMBERS)
def test_one_number_format_for_tables_and_report(value: object, digits: int, text: str) -> None:
    from loss_rl.inspect import format_number

    assert format_number(value, digits) == text
