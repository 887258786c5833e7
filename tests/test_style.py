"""The code base stays ruff clean: lint rules and formatting (see ``[tool.ruff]`` in pyproject).

ruff is pinned in ``constraints.txt``, so this verdict changes only when the code does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run(
        [*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module", autouse=True)
def _needs_ruff() -> None:
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    if _ruff("--version").returncode != 0:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")


def test_ruff_check() -> None:
    proc = _ruff("check", ".")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_format() -> None:
    proc = _ruff("format", "--check", ".")
    assert proc.returncode == 0, (
        "run `ruff format .`:\n" + proc.stdout[-4000:] + proc.stderr[-2000:]
    )
