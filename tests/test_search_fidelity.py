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
