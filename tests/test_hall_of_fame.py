"""The hall of fame: the Pareto front of validation score against size, and where it is shown
(summary.json, inspect --json, the report, export --pick)."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import loss_rl.store._hall_of_fame as hof_module
from loss_rl import Search
from loss_rl.cli import app
from loss_rl.export import load_loss, read_spec
from loss_rl.expr import compile_loss, parse, simplified_size, simplified_size_lower_bound
from loss_rl.expr._simplify import _simplified
from loss_rl.expr.library import KNOWN_LOSSES, known_loss
from loss_rl.store import (
    HALL_OF_FAME_COLUMNS,
    Run,
    hall_of_fame,
    hall_of_fame_member,
    hall_of_fame_records,
)

runner = CliRunner()

# (expression, status, source, score): a synthetic ledger.
_ROWS = [
    ("(1 - p_y)^2 * -log_p_y", "ok", "trained", 0.80),  # size 8: the best score
    ("sum_c(abs(p - t))", "ok", "trained", 0.78),  # size 5
    ("p_y * sqrt(p_y) - p_y", "ok", "trained", 0.60),  # size 6, worse than a size 5: dominated
    ("-log_p_y", "ok", "trained", 0.70),  # size 2
    ("-log_p_y + 0 * p_y", "ok", "trained", 0.75),  # the same key, its best score: size 2
    ("-p_y", "ok", "trained", 0.50),  # size 2, worse: dominated
    ("p_y", "ok", "trained", 0.40),  # size 1: the simplest
    ("p_y", "ok", "trained", 0.45),  # the same key again: its best score counts
    ("-p_y", "ok", "cache_key", 0.99),  # a cache hit repeats a score: not an evaluation
    ("exp(p_y)", "rejected", "check", None),
    ("p_y^2", "diverged", "trained", None),
    ("2 * p_y", "ok", "trained", float("nan")),
]


def _ledger() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": range(1, len(_ROWS) + 1),
            "key": [parse(e).key for e, *_ in _ROWS],
            "expression": [e for e, *_ in _ROWS],
            "status": [r[1] for r in _ROWS],
            "source": [r[2] for r in _ROWS],
            "score": [r[3] for r in _ROWS],
            "fidelity": [1] * len(_ROWS),
        }
    )


def test_front_is_pareto_optimal() -> None:
    ledger = _ledger()
    front = hall_of_fame(ledger, kind="classification")
    assert list(front.columns) == list(HALL_OF_FAME_COLUMNS)
    assert list(front["rank"]) == list(range(1, len(front) + 1))
    assert list(front["expression"]) == [
        "(1 - p_y)^2 * -log_p_y",
        "sum_c(abs(p - t))",
        "-log_p_y + 0 * p_y",
        "p_y",
    ]
    assert list(front["size"]) == [8, 5, 2, 1]
    assert list(front["score"]) == [0.80, 0.78, 0.75, 0.45]
    # Along the front (smallest first) sizes and scores both strictly increase.
    by_size = front.sort_values("size")
    assert by_size["size"].is_monotonic_increasing and by_size["size"].is_unique
    assert by_size["score"].is_monotonic_increasing and by_size["score"].is_unique
    # Every other scored loss is dominated: a front member is no larger and scores no worse.
    scored = ledger[(ledger["status"] == "ok") & (ledger["source"] == "trained")].dropna()
    for expr, score in zip(scored["expression"], scored["score"], strict=True):
        if expr in set(front["expression"]):
            continue
        size = simplified_size(parse(expr))
        assert ((front["size"] <= size) & (front["score"] >= score)).any(), expr


def test_front_shows_simplified_forms_keys_and_known_losses() -> None:
    front = hall_of_fame(_ledger(), kind="classification")
    third = front.iloc[2]
    assert third["simplified"] == "-log_p_y"
    assert third["key"] == parse("-log_p_y + 0 * p_y").key
    assert third["known_as"] == "ce"
    assert front.iloc[0]["known_as"] == "focal (gamma=2)"
    assert front.iloc[1]["known_as"] == "mae"
    assert front.iloc[3]["known_as"] is None  # p_y: no library loss
    records = hall_of_fame_records(front)
    assert json.loads(json.dumps(records)) == records  # JSON-ready
    assert [r["rank"] for r in records] == [1, 2, 3, 4]


def test_front_on_recorded_sizes() -> None:
    front = hall_of_fame(_ledger(), simplified=False, known=False)
    # As recorded, "-log_p_y + 0 * p_y" has 6 nodes: dominated by the 5 nodes of MAE, which
    # leaves size 2 to -p_y.
    assert list(front["size"]) == [8, 5, 2, 1]
    assert list(front["expression"])[2:] == ["-p_y", "p_y"]
    assert list(front["score"]) == [0.80, 0.78, 0.50, 0.45]
    assert front["known_as"].isna().all()


def test_size_bound_skips_sympy_without_changing_the_front(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Sums and products of library losses, scored at random: the front must be the one the
    # plain walk (sympy on every loss) finds, with fewer sympy passes.
    terms = [
        str(known_loss(n)) for n, k in KNOWN_LOSSES.items() if k.kind.value == "classification"
    ]
    texts = terms + [f"{a} {op} {b}" for a, b in itertools.combinations(terms, 2) for op in "+*"]
    rng = np.random.default_rng(0)
    exprs = [parse(t) for t in texts]
    ledger = pd.DataFrame(
        {
            "id": range(1, len(exprs) + 1),
            "key": [e.key for e in exprs],
            "expression": texts,
            "status": "ok",
            "source": "trained",
            "score": rng.random(len(exprs)),
        }
    )
    calls: list[str] = []

    def counted(expr: object) -> int:
        calls.append(str(expr))
        return simplified_size(expr)  # type: ignore[arg-type]

    monkeypatch.setattr(hof_module, "simplified_size", counted)
    _simplified.cache_clear()
    bounded = hall_of_fame(ledger, known=False)
    with_bound = len(calls)
    calls.clear()
    monkeypatch.setattr(hof_module, "simplified_size_lower_bound", lambda expr: 1)
    plain = hall_of_fame(ledger, known=False)
    pd.testing.assert_frame_equal(bounded, plain)
    assert len(plain) >= 3
    assert with_bound < len(calls)  # the bound ruled some losses out without sympy
    assert all(simplified_size_lower_bound(e) <= simplified_size(e) for e in exprs)


def test_empty_ledger_gives_an_empty_front() -> None:
    empty = _ledger().iloc[0:0]
    front = hall_of_fame(empty)
    assert front.empty and list(front.columns) == list(HALL_OF_FAME_COLUMNS)
    with pytest.raises(IndexError, match="empty"):
        hall_of_fame_member(front, 1)


def test_member_is_one_based_and_names_the_range() -> None:
    front = hall_of_fame(_ledger(), known=False)
    assert hall_of_fame_member(front, 1)["expression"] == "(1 - p_y)^2 * -log_p_y"
    assert hall_of_fame_member(front, 4)["expression"] == "p_y"
    for k in (0, 5):
        with pytest.raises(IndexError, match=r"1\.\.4"):
            hall_of_fame_member(front, k)


# ---------------------------------------------------------------------------------------------
# A tiny run: summary.json, inspect --json and export --pick.


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("runs")
    return Search.create("tiny", "random", budget=12, out=out, name="r").run(verify_top=False)


def test_summary_records_the_front_and_the_best_simplified(run: Run) -> None:
    summary = run.summary or {}
    front = summary["hall_of_fame"]
    assert front and front == hall_of_fame_records(hall_of_fame(run.ledger))
    sizes = [m["size"] for m in front]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    best = summary["best"]
    assert best["size"] == simplified_size(parse(best["expression"]))
    assert parse(best["simplified"]).size() == best["size"]


def test_inspect_json_has_the_hall_of_fame(run: Run) -> None:
    res = runner.invoke(app, ["inspect", str(run.path), "--json", "--no-rollout"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["hall_of_fame"] == (run.summary or {})["hall_of_fame"]
    assert "simplified" in data["best"] and "size" in data["best"]


def _module_loss(path: Path) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("picked_loss", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DiscoveredLoss()


def test_export_pick_exports_that_member(run: Run, tmp_path: Path) -> None:
    front = (run.summary or {})["hall_of_fame"]
    k = len(front)  # the simplest member: usually not the best loss
    member = front[k - 1]
    spec_file, module_file = tmp_path / "picked.json", tmp_path / "picked.py"
    for fmt, out in (("json", spec_file), ("py", module_file)):
        args = ["export", str(run.path), "--pick", str(k), "--format", fmt, "--out", str(out)]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    spec = read_spec(spec_file)
    assert str(spec.expression) == member["expression"]
    assert spec.metadata["hall_of_fame_rank"] == k
    assert spec.metadata["simplified"] == member["simplified"]
    logits = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))
    expected = compile_loss(parse(member["expression"]))(logits, target).mean()
    torch.testing.assert_close(load_loss(spec_file)(logits, target), expected)
    torch.testing.assert_close(_module_loss(module_file)(logits, target), expected)


@pytest.mark.parametrize("k", [0, 99])
def test_export_pick_out_of_range_names_the_option_and_range(
    run: Run, k: int, tmp_path: Path
) -> None:
    n = len((run.summary or {})["hall_of_fame"])
    out = tmp_path / "x.json"
    res = runner.invoke(app, ["export", str(run.path), "--pick", str(k), "--out", str(out)])
    assert res.exit_code == 2
    assert "--pick" in res.output and f"1..{n}" in res.output
    assert not out.exists()


def test_export_pick_needs_a_run_folder(tmp_path: Path) -> None:
    res = runner.invoke(app, ["export", "-log_p_y", "--pick", "1", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "--pick" in res.output and "run folder" in res.output
