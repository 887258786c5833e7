"""Pretraining across the tiny suite, and searching an unseen task from the result."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import loss_rl.agents.cards as cards_mod
from loss_rl._search import Search
from loss_rl.agents.cards import read_card
from loss_rl.errors import ConfigError
from loss_rl.pretrain import Pretraining, pretrain, resume_pretraining

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    return pretrain("tiny", "maskable_ppo", budget=100, exclude=["wine_clean"], out=out, name="p")


def test_pretraining_writes_policy_card_curve_and_one_ledger_per_task(pretrained: Path) -> None:
    assert (pretrained / "agent.zip").is_file()
    card = json.loads((pretrained / "card.json").read_text())
    assert card["suite"] == "tiny" and card["excluded"] == ["wine_clean"]
    assert card["tasks"] == ["iris_sym20", "iris_clean", "wine_sym30"]
    assert card["trained"] >= 100 and card["algo"] == "maskable_ppo"
    assert card["layout"]["space"] == "parametric"
    assert card["layout"]["terms"] == ["ce", "mae", "gce", "focal", "smooth"]
    assert card["git_revision"]
    assert set(card["per_task"]) == set(card["tasks"])
    assert "wine_clean" not in card["per_task"]
    md = (pretrained / "card.md").read_text()
    assert "tiny" in md and "| iris_sym20 |" in md
    assert (pretrained / "curve.png").stat().st_size > 0
    rows = (pretrained / "curve.csv").read_text().splitlines()
    assert rows[0] == "trained,task,reference,best" and len(rows) > 10
    trained = 0
    for task in card["tasks"]:
        with sqlite3.connect(pretrained / "tasks" / task / "ledger.sqlite") as db:
            keys = db.execute("SELECT key FROM evaluations WHERE source='trained'").fetchall()
        assert len(keys) == len(set(keys)) > 0  # nothing trained twice
        trained += len(keys)
    assert trained == card["trained"]


def test_unseen_task_search_rolls_the_policy_out_with_landmarks(
    pretrained: Path, tmp_path: Path
) -> None:
    s = Search.create("tiny:wine_clean", "maskable_ppo", budget=10, out=tmp_path, name="r",
                      init_agent=pretrained, train=False)  # fmt: skip
    run = s.run(verify_top=False)
    feats = run.config["task_features"]
    assert len(feats) == 8 and (feats[6] != 0.0 or feats[7] != 0.0)
    with sqlite3.connect(run.path / "ledger.sqlite") as db:
        n = db.execute("SELECT COUNT(*) FROM evaluations WHERE source='trained'").fetchone()[0]
    assert 10 <= n <= 10 + 8  # the budget counts landmarks; one last batch may overshoot
    # The observation layout the policy needs is recorded for inspect/resume.
    assert Search.open(run.path).env_config().task_features == tuple(feats)


def test_finetuning_from_the_pretrained_policy(pretrained: Path, tmp_path: Path) -> None:
    run = Search.create("tiny:wine_clean", "maskable_ppo", budget=70, out=tmp_path, name="f",
                        init_agent=pretrained).run(verify_top=False)  # fmt: skip
    assert run.summary["status"] == "finished"


def test_a_policy_from_another_layout_is_a_clear_error(pretrained: Path, tmp_path: Path) -> None:
    # The `tiny` env preset uses the symbolic space: the parametric policy cannot drive it.
    with pytest.raises(ConfigError, match="another observation/action layout") as err:
        Search.create("tiny", "maskable_ppo", budget=10, out=tmp_path, init_agent=pretrained,
                      train=False)  # fmt: skip
    assert err.value.field == "init_agent"
    with pytest.raises(ConfigError, match="maskable_ppo policy"):
        Search.create("tiny:wine_clean", "ppo", budget=64, out=tmp_path, init_agent=pretrained)


def test_agent_pretrained_uses_the_shipped_policy(
    pretrained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "classification.zip").write_bytes((pretrained / "agent.zip").read_bytes())
    (shipped / "classification.json").write_text((pretrained / "card.json").read_text())
    monkeypatch.setattr(cards_mod, "SHIPPED_DIR", shipped)
    s = Search.create("tiny:iris_clean", "pretrained", budget=8, out=tmp_path, name="p",
                      train=False)  # fmt: skip
    assert s.agent_config.algo == "maskable_ppo"
    assert s.init_agent == (shipped / "classification.zip").resolve()
    monkeypatch.setattr(cards_mod, "SHIPPED_DIR", tmp_path / "none")
    with pytest.raises(ConfigError, match="no pretrained policy is shipped"):
        Search.create("tiny:iris_clean", "pretrained", budget=8, out=tmp_path, train=False)


def test_interrupted_pretraining_resumes_without_training_twice(tmp_path: Path) -> None:
    p = Pretraining.create("tiny", "maskable_ppo", budget=100, out=tmp_path, name="p")

    def stop(progress: object) -> None:
        if progress.trained >= 40:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        p.run(stop)
    assert (tmp_path / "p" / "agent.zip").is_file()
    resume_pretraining(tmp_path / "p")
    card = read_card(tmp_path / "p")
    assert card is not None and card["trained"] >= 100
    for task in card["tasks"]:
        with sqlite3.connect(tmp_path / "p" / "tasks" / task / "ledger.sqlite") as db:
            keys = db.execute("SELECT key FROM evaluations WHERE source='trained'").fetchall()
        assert len(keys) == len(set(keys))
    assert len((tmp_path / "p" / "command.txt").read_text().splitlines()) == 2


def test_bad_pretraining_requests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not learn a policy"):
        Pretraining.create("tiny", "random", out=tmp_path)
    with pytest.raises(ConfigError, match="too few"):
        Pretraining.create("tiny", "maskable_ppo", budget=10, out=tmp_path)
    with pytest.raises(ConfigError, match="at least two"):
        Pretraining.create("tiny", "maskable_ppo", out=tmp_path,
                           exclude=["iris_sym20", "iris_clean", "wine_sym30"])  # fmt: skip


@pytest.mark.skipif(
    not (cards_mod.SHIPPED_DIR / "classification.zip").is_file(),
    reason="no shipped policy in this checkout",
)
def test_shipped_policy_fits_the_default_env(tmp_path: Path) -> None:
    card = read_card(cards_mod.SHIPPED_DIR / "classification.zip")
    assert card is not None and card["suite"] == "classification"
    s = Search.create("digits_noisy", "pretrained", budget=8, out=tmp_path, train=False)
    assert s.agent_config.algo == card["algo"]


def test_cli_pretrain_then_search_with_the_policy(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loss_rl.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["pretrain", "--suite", "tiny", "--budget", "100", "--exclude",
                              "iris_clean", "--out", str(tmp_path), "--name", "p"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "iris_clean" not in json.loads((tmp_path / "p" / "card.json").read_text())["tasks"]
    assert "--init-agent" in res.output
    res = runner.invoke(app, ["search", "--env", "tiny:iris_clean", "--init-agent",
                              str(tmp_path / "p"), "--no-train", "--budget", "6", "--out",
                              str(tmp_path), "--name", "s"])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["pretrain"])
    assert res.exit_code == 2 and "--suite" in res.output
    res = runner.invoke(app, ["pretrain", "--suite", "nope", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "classification" in res.output


def test_inspect_finds_the_policy_a_no_train_run_rolled_out(
    pretrained: Path, tmp_path: Path
) -> None:
    from loss_rl.inspect import load_policy, policy_file

    run = Search.create("tiny:iris_clean", "maskable_ppo", budget=6, out=tmp_path, name="r",
                        init_agent=pretrained, train=False).run(verify_top=False)  # fmt: skip
    assert not (run.path / "agent.zip").is_file()
    assert policy_file(run) == (pretrained / "agent.zip").resolve()
    assert load_policy(run) is not None
