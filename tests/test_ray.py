"""Executors: configuration, the Ray executor against the in-process one, faults and start-up.

The Ray tests share one local Ray instance of 2 CPUs (no dashboard) and are skipped where Ray is
not installed (CI installs it with the ``dev`` extra). The configuration and start-up checks run
everywhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import loss_rl
from loss_rl import Search
from loss_rl.errors import ConfigError
from loss_rl.evaluation import Evaluator, InProcessExecutor, Status
from loss_rl.executors import EXECUTORS, ExecutorConfig, check_reachable, make_executor
from loss_rl.expr import known_loss, parse
from loss_rl.presets import find_preset, load_env_preset, parse_env_preset
from loss_rl.store import LEDGER, load_run

BUDGET, SEED = 12, 3
# What a ledger row must agree on between executors (score compared within a tolerance).
COLUMNS = "key, expression, status, source, fidelity, seeds, episode, step, env_index, batch"


def _ledger(run_dir: Path) -> tuple[list[tuple[Any, ...]], list[float | None]]:
    with sqlite3.connect(run_dir / LEDGER) as db:
        rows = db.execute(f"SELECT {COLUMNS}, score FROM evaluations ORDER BY id").fetchall()
    return [r[:-1] for r in rows], [r[-1] for r in rows]


def _assert_same_ledger(run_dir: Path, reference: Path) -> None:
    rows, scores = _ledger(run_dir)
    ref_rows, ref_scores = _ledger(reference)
    assert rows == ref_rows
    assert scores == pytest.approx(ref_scores, abs=1e-6)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def preset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset with two paired seeds (results are mapped per seed) and longer batches."""
    data = yaml.safe_load(find_preset("envs", "tiny").read_text())
    data["evaluation"]["seeds"] = [0, 1]
    data["task"]["training"].update(steps=150, full_steps=150)  # time to kill a worker mid-batch
    path = tmp_path_factory.mktemp("preset") / "tiny_ray.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def reference_run(preset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The in-process search every Ray search is compared with."""
    out = tmp_path_factory.mktemp("inprocess")
    run = Search.create(preset, "random", budget=BUDGET, seed=SEED, out=out, name="ref").run(
        verify_top=False
    )
    assert run.summary is not None and run.summary["status"] == "finished"
    return run.path


@pytest.fixture(scope="module")
def ray_session() -> Iterator[str]:
    """A local Ray instance of 2 CPUs for the module; yields its session folder."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield str(ctx.address_info["session_dir"])
    ray.shutdown()


# ---------------------------------------------------------------------------------------------
# Configuration (no Ray needed)


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"name": "spark"}, "executor.name", "choose one of inprocess, ray"),
        ({"name": "inprocess", "address": "auto"}, "executor.address", "ray executor only"),
        ({"name": "ray", "workers": 0}, "executor.workers", "positive integer"),
        ({"name": "ray", "workers": True}, "executor.workers", "positive integer"),
        ({"name": "ray", "address": ""}, "executor.address", "HOST:PORT"),
        ({"name": "ray", "connect_timeout_s": -1}, "executor.connect_timeout_s", "positive"),
        ({"name": "ray", "max_retries": -1}, "executor.max_retries", ">= 0"),
        ({"name": "ray", "nodes": 3}, "executor.nodes", "unknown key"),
        (["ray"], "executor", "mapping"),
    ],
)
def test_bad_executor_config_names_the_field(data: Any, field: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        ExecutorConfig.from_dict(data)
    assert info.value.field == field


def test_executor_config_round_trips_and_overrides() -> None:
    cfg = ExecutorConfig.from_dict({"name": "ray", "address": "auto", "workers": 2})
    assert ExecutorConfig.from_dict(cfg.to_dict()) == cfg
    assert ExecutorConfig.from_dict("ray") == ExecutorConfig(name="ray")
    assert ExecutorConfig.from_dict(None).to_dict() == {"name": "inprocess"}
    # The command line wins; another executor does not inherit the preset's Ray settings.
    assert cfg.override("inprocess") == ExecutorConfig()
    assert cfg.override(address="10.0.0.1:6379").address == "10.0.0.1:6379"
    assert cfg.override(address="10.0.0.1:6379").workers == 2
    with pytest.raises(ConfigError, match="--executor ray") as info:
        ExecutorConfig().override(address="auto")
    assert info.value.field == "ray_address"
    assert isinstance(make_executor(None), InProcessExecutor)


def test_env_preset_executor_section(tmp_path: Path) -> None:
    data = yaml.safe_load(find_preset("envs", "tiny").read_text())
    ok = parse_env_preset({**data, "executor": {"name": "ray", "address": "auto"}}, "t")
    assert ok.executor == ExecutorConfig(name="ray", address="auto")
    assert ok.to_dict()["executor"]["address"] == "auto"
    assert "executor" not in load_env_preset("tiny").to_dict()  # unchanged for old presets
    with pytest.raises(ConfigError) as info:
        parse_env_preset({**data, "executor": {"name": "dask"}}, "t")
    assert info.value.field == "env.executor.name"


def test_unknown_executor_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown executor 'spark'"):
        Search.create("tiny", "random", out=tmp_path, name="r", executor="spark")
    assert not (tmp_path / "r").exists()
    from loss_rl.cli import app

    result = CliRunner().invoke(app, ["search", "--env", "tiny", "--executor", "spark",
                                      "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2 and "spark" in result.output
    assert not any(tmp_path.iterdir())


def test_cli_choices_match_the_executors() -> None:
    from loss_rl.cli import ExecutorName

    assert tuple(e.value for e in ExecutorName) == EXECUTORS


def test_missing_ray_gives_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'loss-rl\[ray\]'"):
        Search.create("tiny", "random", out=tmp_path, name="r", executor="ray")
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match=r"pip install 'loss-rl\[ray\]'"):
        make_executor(ExecutorConfig(name="ray"))


def test_unreachable_address_fails_fast() -> None:
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="cannot reach a Ray cluster") as info:
        check_reachable(f"127.0.0.1:{_closed_port()}", 10.0)
    assert info.value.field == "executor.address"
    assert time.perf_counter() - start < 5
    with pytest.raises(ConfigError, match="not a Ray address"):
        check_reachable("host:port", 1.0)


def test_a_port_that_is_no_ray_head_times_out() -> None:
    pytest.importorskip("ray")
    # Accepts TCP, never answers: ray.init alone would retry it for minutes.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        start = time.perf_counter()
        with pytest.raises(ConfigError, match=r"(no Ray cluster answered|cannot connect)"):
            check_reachable(f"127.0.0.1:{server.getsockname()[1]}", 4.0)
    assert time.perf_counter() - start < 15


def test_cli_with_an_unreachable_cluster_exits_with_one_line(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    exe = shutil.which("loss-rl")
    cmd = [exe] if exe else [sys.executable, "-m", "loss_rl.cli"]
    env = {**os.environ, "PYTHONPATH": str(Path(loss_rl.__file__).parents[1])}
    start = time.perf_counter()
    done = subprocess.run(
        [*cmd, "search", "--env", "tiny", "--agent", "random", "--executor", "ray",
         "--ray-address", f"127.0.0.1:{_closed_port()}", "--out", str(tmp_path), "--name", "r"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert time.perf_counter() - start < 60  # mostly importing torch; the probe itself is quick
    assert done.returncode == 2, done.stderr
    assert "cannot reach a Ray cluster" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r" / LEDGER).exists()  # nothing was trained


# ---------------------------------------------------------------------------------------------
# The Ray executor on a local instance


def test_ray_executor_returns_what_inprocess_returns(ray_session: str) -> None:
    from loss_rl.executors import RayExecutor

    task = load_env_preset("tiny").task
    losses = [known_loss(n) for n in ("ce", "gce", "mae", "focal")]
    losses += [parse("1 - p_y"), parse("sum_c(abs(p - t)) - 0.1 * log_p_y")]
    ex = RayExecutor(workers=2)
    ex.start()
    assert ex.workers == 2 and len(ex.batches(losses, 2)) == 2
    got = ex.run(losses, task, 30, [0, 1], 0, splits=("val", "test"))
    want = InProcessExecutor().run(losses, task, 30, [0, 1], 0, splits=("val", "test"))
    assert [(r.candidate, r.seed, r.status) for r in got] == [
        (r.candidate, r.seed, r.status) for r in want
    ]
    for a, b in zip(got, want, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-6)
        assert a.metrics.keys() == b.metrics.keys()
    assert ex.run([], task, 30, [0], 0) == []
    ex.close()
    import ray

    assert ray.is_initialized()  # close() leaves a connection it did not make


def test_ray_executor_runs_asha_rungs_as_inprocess_does(ray_session: str, tmp_path: Path) -> None:
    # Multi-fidelity through Ray: states go to the workers with their batch and come back, and
    # the rungs, promotions and scores are the in-process executor's.
    from loss_rl.evaluation import FidelityConfig
    from loss_rl.executors import RayExecutor
    from loss_rl.store import Ledger

    task = load_env_preset("tiny").task
    steps = int(task.training.steps)
    fidelity = FidelityConfig((steps // 4, steps // 2, steps), keep=0.5)
    losses = [known_loss(n) for n in ("ce", "gce", "mae", "focal", "label_smoothing", "sce")]
    ex = RayExecutor(workers=2)
    ex.start()
    outcomes = []
    for name, executor in (("ray", ex), ("inprocess", InProcessExecutor())):
        ledger = Ledger(tmp_path / f"{name}.sqlite")
        try:
            ev = Evaluator(
                task, seeds=(0, 1), data_seed=0, ledger=ledger, executor=executor, fidelity=fidelity
            )
            results = ev.evaluate(losses)
            rungs = sorted((r.key, r.rung, r.steps) for r in ledger.rungs())
        finally:
            ledger.close()
        outcomes.append(
            ([(r.status, r.fidelity) for r in results], [r.score for r in results], rungs)
        )
    (got, got_scores, got_rungs), (want, want_scores, want_rungs) = outcomes
    assert got == want and got_rungs == want_rungs
    assert len({f for _, f in got}) > 1  # some stopped at a lower rung, some went on
    assert got_scores == pytest.approx(want_scores, abs=1e-6)
    states = ex.run_from(losses[:1], task, 5, [0, 1], 0, None, keep_state=True)
    assert all(r.state is not None and r.state.step == 5 for r in states)
    with pytest.raises(ConfigError, match="one state per"):
        ex.run_from(losses[:2], task, 10, [0, 1], 0, [r.state for r in states], False)  # type: ignore[misc]
    ex.close()


@pytest.mark.slow
def test_search_with_ray_gives_the_inprocess_ledger(
    ray_session: str, preset: Path, reference_run: Path, tmp_path: Path
) -> None:
    from loss_rl.cli import app

    result = CliRunner().invoke(app, [
        "search", "--env", str(preset), "--agent", "random", "--budget", str(BUDGET),
        "--seed", str(SEED), "--executor", "ray", "--out", str(tmp_path), "--name", "ray",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "ray")
    assert run.config["executor"]["name"] == "ray"
    assert run.summary is not None and run.summary["status"] == "finished"
    assert run.summary["evaluations"]["trained"] >= BUDGET
    _assert_same_ledger(run.path, reference_run)
    # Resume builds its executor from config.yaml.
    assert Search.open(run.path).executor_config == ExecutorConfig(name="ray")


def _batch_pids(session_dir: str) -> list[int]:
    """Ray workers of this session that are training a batch right now."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            title = Path(f"/proc/{entry}/cmdline").read_bytes()
            if not title.startswith(b"ray::_train_batch"):
                continue
            ppid = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]
            if session_dir.encode() in Path(f"/proc/{ppid}/cmdline").read_bytes():
                pids.append(int(entry))
        except (OSError, IndexError):
            continue
    return pids


@contextlib.contextmanager
def _kill_one_training_worker(session_dir: str) -> Iterator[list[int]]:
    """SIGKILL the first Ray worker seen training a batch while the block runs."""
    killed: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() and not killed:
            for pid in _batch_pids(session_dir):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.002)

    killer = threading.Thread(target=watch, daemon=True)
    killer.start()
    try:
        yield killed
    finally:
        stop.set()
        killer.join()
    assert killed, "no batch was seen running"


_needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")


@pytest.mark.slow
@_needs_proc
def test_a_killed_worker_reruns_only_its_batch(
    ray_session: str, preset: Path, reference_run: Path, tmp_path: Path
) -> None:
    s = Search.create(preset, "random", budget=BUDGET, seed=SEED, out=tmp_path, name="kill",
                      executor="ray")  # fmt: skip
    with _kill_one_training_worker(ray_session):
        run = s.run(verify_top=False)
    assert run.summary is not None and run.summary["status"] == "finished"
    df = run.ledger
    assert (df["status"] != "error").all()
    # Each candidate trained exactly once, with the scores of the in-process run.
    assert df[df["source"] == "trained"]["key"].is_unique
    _assert_same_ledger(run.path, reference_run)


@pytest.mark.slow
@_needs_proc
def test_a_batch_out_of_retries_is_an_error_not_a_score(ray_session: str, preset: Path) -> None:
    from loss_rl.executors import RayExecutor

    p = load_env_preset(preset)
    ev = Evaluator(p.task, seeds=p.evaluation.seeds, data_seed=0,
                   executor=RayExecutor(workers=1, max_retries=0))  # fmt: skip
    losses = [known_loss("gce"), known_loss("mae")]
    with _kill_one_training_worker(ray_session):
        failed = ev.evaluate(losses)
    assert [r.status for r in failed] == [Status.ERROR, Status.ERROR]
    assert all("failed on Ray" in r.reason for r in failed)
    # Errors are not cached: the same candidates train when proposed again.
    again = ev.evaluate(losses)
    assert [r.status for r in again] == [Status.OK, Status.OK]
    assert [r.source for r in again] == ["trained", "trained"]
