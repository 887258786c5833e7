"""Worker processes do not outlive a killed search."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
from loss_rl.training import start_workers
if __name__ == "__main__":
    start_workers()
    print("ready", flush=True)
    import time
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


@pytest.mark.skipif(not Path("/proc").is_dir() or sys.platform != "linux", reason="needs /proc")
def test_workers_exit_when_the_search_process_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOSS_RL_WORKERS": "2"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        children = [int(p) for p in out.stdout.split()]
        assert len(children) >= 2  # the two workers (and the resource tracker)
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to shut the pool down
        proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.5)
    assert not any(_alive(p) for p in children)
