"""A search whose preset sets ``evaluation.fidelity`` evaluates through the rungs end to end."""

from __future__ import annotations

from pathlib import Path

import yaml

from loss_rl import Search
from loss_rl.store import LEDGER, Ledger

REPO = Path(__file__).resolve().parent.parent


def test_search_uses_the_presets_fidelity_levels(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "envs" / "tiny.yaml").read_text())
    data["evaluation"]["fidelity"] = {"rungs": [10, 30], "keep": 0.5}
    env = tmp_path / "tiny_asha.yaml"
    env.write_text(yaml.safe_dump(data))
    run = Search.create(env, "random", budget=6, out=tmp_path, name="r").run(verify_top=False)
    assert run.summary is not None
    df = run.ledger
    ok = df[(df["source"] == "trained") & (df["status"] == "ok")]
    # Every score comes from a rung (ties at the cut-off all go on: tiny's validation split has
    # 38 samples), and the best went on to the search's 30 steps.
    assert set(ok["fidelity"]) <= {10, 30} and ok.loc[ok["score"].idxmax(), "fidelity"] == 30
    ledger = Ledger(run.path / LEDGER)
    try:
        rungs = ledger.rungs()  # one row per (candidate, rung)
    finally:
        ledger.close()
    assert {(r.rung, r.steps) for r in rungs} == {(0, 10), (1, 30)}
    assert {r.key for r in rungs if r.rung == 0} >= set(ok["key"])


def test_make_env_evaluates_through_the_presets_rungs(tmp_path: Path) -> None:
    # The gymnasium entry point (`gymnasium.make("loss_rl/<preset>-v0")` calls make_env) uses
    # the preset's fidelity as a search does, its rung states kept in memory (no ledger).
    from loss_rl.evaluation import FidelityConfig
    from loss_rl.presets import make_env

    data = yaml.safe_load((REPO / "envs" / "tiny.yaml").read_text())
    data["evaluation"]["fidelity"] = {"rungs": [10, 30], "keep": 0.5}
    path = tmp_path / "tiny_asha.yaml"
    path.write_text(yaml.safe_dump(data))
    env = make_env(path)
    evaluator = env.unwrapped.evaluator
    assert evaluator.fidelity == FidelityConfig((10, 30), 0.5)  # type: ignore[attr-defined]
    env.reset(seed=0)
    env.action_space.seed(0)
    fidelities = set()
    for _ in range(12):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        result = info["result"]
        if result is not None and result.ok and result.source == "trained":
            fidelities.add(result.fidelity)
        if terminated or truncated:
            env.reset()
    assert fidelities and fidelities <= {10, 30}
    assert evaluator.stats.optimiser_steps > 0  # type: ignore[attr-defined]
    env.close()
