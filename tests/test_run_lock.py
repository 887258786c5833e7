"""One writer per run folder, and run folders created atomically inside ``--out``.

The second writer is simulated by a bare Python process that holds ``run.lock`` the way
:class:`loss_rl.store.RunLock` does (``flock`` + its pid in the file): it starts in a fraction
of a second, where a process importing loss_rl takes several.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import loss_rl
from loss_rl import Search, list_runs
from loss_rl.cli import app
from loss_rl.errors import ConfigError, LossRLError, RunError
from loss_rl.inspect import inspect_run
from loss_rl.pretrain import Pretraining
from loss_rl.store import LOCK, RunLock, create_run_dir, load_run

runner = CliRunner()

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(300)
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run of the random baseline (no verification: only the lock matters)."""
    out = tmp_path_factory.mktemp("finished")
    return Search.create("tiny", "random", budget=2, out=out, name="run").run(verify_top=False).path


@pytest.fixture
def holder(finished: Path, tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A copy of the finished run whose lock another live process holds."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run / LOCK)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield run, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(f.relative_to(run)): (f.read_bytes(), f.stat().st_mtime_ns)
        for f in sorted(run.rglob("*"))
        if f.is_file() and f.parent.name != "plots"
    }


def test_a_second_writer_is_refused_with_the_holders_pid(
    holder: tuple[Path, subprocess.Popen[str]],
) -> None:
    run, proc = holder
    before = _snapshot(run)
    pid = str(proc.pid)
    with pytest.raises(RunError, match=f"process {pid} is writing it") as info:
        loss_rl.resume(run)
    assert "\n" not in str(info.value) and "wait for it to finish or stop it" in str(info.value)
    # A writer that got past opening (the lock is taken in run itself) is refused the same way.
    loaded = load_run(run)
    with pytest.raises(RunError, match=pid):
        Search(loaded.path, loaded.run_config).run(verify_top=False)
    res = runner.invoke(app, ["resume", str(run)])
    assert res.exit_code == 2, res.output
    assert pid in res.output and len(res.output.strip().splitlines()) == 1
    # Refused before anything is written: not even the resume's command line is logged.
    assert _snapshot(run) == before


def test_readers_never_lock(holder: tuple[Path, subprocess.Popen[str]]) -> None:
    run, _ = holder
    before = _snapshot(run)
    assert load_run(run).summary["status"] == "finished"  # type: ignore[index]
    assert [r.path for r in list_runs(run.parent)] == [run]
    assert inspect_run(run, rollout_policy=False).summary["top"]
    res = runner.invoke(app, ["runs", str(run.parent)])
    assert res.exit_code == 0 and "finished" in res.output, res.output
    assert _snapshot(run) == before


def test_a_lock_left_by_a_killed_process_does_not_block(
    holder: tuple[Path, subprocess.Popen[str]],
) -> None:
    run, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The dead writer's pid is still in the file; only the kernel's lock counts.
    assert (run / LOCK).read_text().strip() == str(proc.pid)
    done = Search.open(run).run(verify_top=False)
    assert done.summary["status"] == "finished"  # type: ignore[index]
    assert (run / LOCK).read_text() == ""  # released: no pid left to mislead


def test_a_search_holds_the_lock_while_it_runs(tmp_path: Path) -> None:
    s = Search.create("tiny", "random", budget=2, out=tmp_path, name="r")
    seen: list[tuple[str, str]] = []

    def progress(_: Any) -> None:
        try:
            RunLock(s.path, wait=0).acquire()
            seen.append(("acquired", ""))
        except RunError as err:
            seen.append((str(err), (s.path / LOCK).read_text().strip()))

    s.run(progress, verify_top=False)
    assert seen, "the search reported no progress"
    for message, pid in seen:
        assert pid == str(os.getpid()) and f"process {pid} is writing it" in message
    with RunLock(s.path, wait=0):  # free again after the run
        assert (s.path / LOCK).read_text().strip() == str(os.getpid())


def test_pretraining_holds_the_lock(tmp_path: Path) -> None:
    p = Pretraining.create("tiny", "maskable_ppo", out=tmp_path, name="p")
    with RunLock(p.path):
        with pytest.raises(RunError, match=f"process {os.getpid()} is writing it"):
            p.run()
        with pytest.raises(RunError, match="is writing it"):
            Pretraining.open(p.path)
    assert not (p.path / "tasks").exists()  # refused before any task ledger was made


BAD_NAMES = ["../x", "a/b", "a\\b", "..", ".", "", "  ", "x\x00y"]


def _creators(tmp_path: Path) -> dict[str, Callable[[str], Any]]:
    out = tmp_path / "out"
    return {
        "search": lambda name: Search.create("tiny", "random", budget=1, out=out, name=name),
        "pretrain": lambda name: Pretraining.create("tiny", "maskable_ppo", out=out, name=name),
    }


@pytest.mark.parametrize("name", [*BAD_NAMES, "ABSOLUTE"])
@pytest.mark.parametrize("kind", ["search", "pretrain"])
def test_name_must_be_a_single_folder_name(tmp_path: Path, kind: str, name: str) -> None:
    if name == "ABSOLUTE":  # inside tmp_path, so that a failure writes nowhere else
        name = str(tmp_path / "abs")
    with pytest.raises(ConfigError, match="not a folder name") as info:
        _creators(tmp_path)[kind](name)
    assert info.value.field == "name"
    assert list(tmp_path.iterdir()) == []  # nothing written, inside --out or outside it


def test_cli_refuses_a_name_outside_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        ["search", "--env", "tiny", "--agent", "random", "--budget", "1", "--out", str(out),
         "--name", "../x"],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "name" in res.output and "not a folder name" in res.output
    assert list(tmp_path.iterdir()) == []


def test_an_existing_name_is_refused_unless_empty(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="already exists"):
        Search.create("tiny", "random", budget=1, out=tmp_path, name="used")
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    s = Search.create("tiny", "random", budget=1, out=tmp_path, name="empty")
    assert (s.path / "config.yaml").is_file()


def _race(n: int, create: Callable[[], Path]) -> tuple[list[Path], list[BaseException]]:
    """Call ``create`` from ``n`` threads released at once."""
    start = threading.Barrier(n)
    made: list[Path] = []
    failed: list[BaseException] = []

    def worker() -> None:
        start.wait()
        try:
            made.append(create())
        except LossRLError as err:
            failed.append(err)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return made, failed


def test_run_folders_are_claimed_atomically(tmp_path: Path) -> None:
    made, failed = _race(8, lambda: create_run_dir(tmp_path, default="same"))
    assert not failed and len(set(made)) == 8
    assert sorted(p.name for p in made) == sorted(["same", *(f"same-{i}" for i in range(1, 8))])
    made, failed = _race(8, lambda: create_run_dir(tmp_path, "given"))
    assert len(made) == 1 and len(failed) == 7
    assert all("already exists" in str(e) for e in failed)


def test_two_searches_with_one_name_get_one_folder(tmp_path: Path) -> None:
    made, failed = _race(
        3, lambda: Search.create("tiny", "random", budget=1, out=tmp_path, name="n").path
    )
    assert made == [tmp_path / "n"] and len(failed) == 2
