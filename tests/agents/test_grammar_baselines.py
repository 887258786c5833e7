"""The baselines in the generative grammar space: same starts, valid expressions, budget spent."""

from __future__ import annotations

from pathlib import Path

import pytest

from loss_rl import Search
from loss_rl.agents.baselines import EvolutionOptions, baseline_options
from loss_rl.errors import ConfigError
from loss_rl.expr import known_loss, parse


@pytest.mark.parametrize("algo", ["random", "evolution", "risk_seeking_ppo", "maskable_ppo"])
def test_every_method_starts_from_the_same_losses_and_builds_whole_expressions(
    tmp_path: Path, algo: str
) -> None:
    run = Search.create("tiny_grammar", algo, budget=32, out=tmp_path, name=algo).run(
        verify_top=False
    )
    assert run.summary is not None
    assert run.summary["evaluations"]["trained"] >= 32
    assert (run.path / "agent.zip").is_file() == (algo.endswith("ppo"))
    df = run.ledger
    trained = df[df["source"] == "trained"].reset_index(drop=True)
    # Same starting information for every method: the reference (CE), the descriptor's
    # landmarks (GCE, label smoothing) and the preset's start losses (CE, MAE) come first.
    first = {parse(e).key for e in trained["expression"].head(4)}
    want = {known_loss(n).key for n in ("ce", "gce", "label_smoothing", "mae")}
    assert first == want
    # Everything else is a whole expression of the grammar: within max_size 8.
    sizes = [parse(e).size() for e in trained["expression"].iloc[4:]]
    assert sizes and max(sizes) <= 8


def test_optuna_refuses_the_grammar_space(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="grammar"):
        Search.create("tiny_grammar", "optuna", budget=8, out=tmp_path, name="o").run(
            verify_top=False
        )


def test_evolution_crossover_option_is_a_percentage() -> None:
    opts = baseline_options("evolution", {"crossover": 0})
    assert isinstance(opts, EvolutionOptions) and opts.crossover == 0
    with pytest.raises(ConfigError, match=r"agent\.crossover"):
        baseline_options("evolution", {"crossover": 101})
