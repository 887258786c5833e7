"""Benchmark scripts run end to end with tiny settings (their numbers are not checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import loss_rl

ROOT = Path(__file__).resolve().parents[1]


def _run_benchmark(script: str, *args: str, tmp_path: Path) -> dict[str, object]:
    """Run ``benchmarks/<script>`` in a subprocess; its last stdout line parsed as JSON."""
    # The package may not be installed in a development checkout: find it by its path then.
    env = {**os.environ, "PYTHONPATH": str(Path(loss_rl.__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-4000:]
    return json.loads(lines[-1])


@pytest.mark.slow
def test_search_vs_trainer_smoke(tmp_path: Path) -> None:
    out = _run_benchmark(
        "search_vs_trainer.py",
        *("--env", "tiny", "--agent", "random", "--budget", "8"),
        *("--chunks", "2", "--repeats", "1", "--large", "8"),
        tmp_path=tmp_path,
    )
    for key in (
        "search_models_per_s",
        "trainer_models_per_s_same_batch",
        "trainer_models_per_s_large_batch",
        "search_vs_trainer",
        "search_vs_trainer_large",
        "median_batch_candidates",
        "train_share",
    ):
        assert isinstance(out[key], float | int) and out[key] > 0, (key, out[key])
    assert out["env"] == "tiny" and out["agent"] == "random" and out["budget"] == 8
    assert out["trainings"] >= 1 and out["seeds"] == 1
    assert list(tmp_path.iterdir()) == []  # the search ran in a temporary folder


@pytest.mark.slow
def test_discovery_smoke(tmp_path: Path) -> None:
    out = _run_benchmark(
        "discovery.py",
        *("--envs", "tiny_grammar", "--seeds", "1", "--budgets", "8", "16"),
        *("--verify-seeds", "2", "--out", str(tmp_path / "d")),
        tmp_path=tmp_path,
    )
    assert out["budgets"] == [8, 16] and out["seeds"] == 1
    rep = out["tasks"]["tiny_grammar"]  # type: ignore[index]
    for method in ("random", "evolution", "risk_seeking_ppo"):
        r = rep[method]
        assert set(r["best_at"]) == {"8", "16"} and r["best_at"]["16"] >= r["best_at"]["8"]
        assert r["winner"] and r["winner_size"] >= 1 and 0 <= r["test"] <= 1
    assert rep["best_reference"] in ("ce", "gce")
    assert "tiny_grammar" in out["rl_ahead"]  # type: ignore[operator]
    assert (tmp_path / "d" / "discovery.json").is_file()
    assert (tmp_path / "d" / "discovery.png").is_file()


@pytest.mark.slow
def test_search_envs_smoke(tmp_path: Path) -> None:
    out = _run_benchmark(
        "search_envs.py",
        *("--env", "tiny", "--agent", "maskable_ppo", "--budget", "16", "--seeds", "1"),
        tmp_path=tmp_path,
    )
    # tiny's section of maskable_ppo.yaml: 4 envs x 4 steps; the wide runs 8 x 2.
    assert out["baseline"] == {"n_envs": 4, "n_steps": 4}
    assert out["wide"] == {"n_envs": 8, "n_steps": 2}
    for key in ("wall_baseline", "wall_wide", "wall_ratio", "best_val_baseline", "best_val_wide"):
        assert isinstance(out[key], float | int) and out[key] > 0, (key, out[key])
    runs = out["runs"]
    assert isinstance(runs, dict)
    assert [r["trainings"] >= 16 for r in runs["baseline"] + runs["wide"]] == [True, True]
    assert list(tmp_path.iterdir()) == []  # the searches ran in temporary folders


@pytest.mark.slow
def test_trainer_throughput_smoke(tmp_path: Path) -> None:
    out = _run_benchmark(
        "trainer_throughput.py",
        *("--losses", "4", "--steps", "10", "--plain-evals", "1", "--repeats", "1"),
        *("--workers", "0"),
        tmp_path=tmp_path,
    )
    assert out["n_losses"] == 4 and out["workers"] == 0 and out["device"] == "cpu"
    for key in (
        "batched_evals_per_s",
        "ce_evals_per_s",
        "bmm_peak_gflops",
        "fraction_of_peak",
        "fraction_ce",
        "fraction_model_step",
        "fraction_matmuls",
    ):
        assert isinstance(out[key], float) and out[key] > 0, (key, out[key])
    # Each rung of the ladder is a fraction of the same bmm peak: well under 10x of it.
    for key in ("fraction_of_peak", "fraction_ce", "fraction_model_step", "fraction_matmuls"):
        assert out[key] < 10, (key, out[key])
