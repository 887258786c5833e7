"""Agent files are data: opening someone else's run folder runs none of its code.

SB3 cloudpickles some fields of ``agent.zip`` (policy class, spaces, schedules, ...) and all of
DQN's replay buffer; unpickling them runs whatever the file's author chose. Each test below
plants a pickle that creates a marker file when unpickled and checks that loss_rl's ways in
(inspect, resume, ``--init-agent``, the CLI) never create it.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import pickle
import shlex
import shutil
import zipfile
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3.common.vec_env import DummyVecEnv
from typer.testing import CliRunner

import loss_rl
from loss_rl import Search
from loss_rl.agents import (
    AGENT_FILE,
    REPLAY_FILE,
    AgentConfig,
    load_agent,
    open_agent,
    save_agent,
)
from loss_rl.cli import app
from loss_rl.envs import EnvConfig, LossDesignEnv
from loss_rl.errors import ConfigError, RunError
from loss_rl.inspect import load_policy
from loss_rl.presets import run_env_config
from loss_rl.store import Run, load_run

SERIALIZED = ":serialized:"


class _Boom:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _payload(marker: Path) -> dict[str, str]:
    """A ``data`` JSON entry in SB3's format whose unpickling creates ``marker``."""
    return {SERIALIZED: base64.b64encode(cloudpickle.dumps(_Boom(marker))).decode()}


def _rewrite_zip(path: Path, member: str, content: bytes) -> None:
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members[member] = content
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)


def _poison(path: Path, marker: Path, keys: list[str] | None = None) -> list[str]:
    """Replace ``keys`` of ``path``'s data JSON (default: every pickled one) with the payload."""
    with zipfile.ZipFile(path) as z:
        data = json.loads(z.read("data"))
    if keys is None:
        keys = [k for k, v in data.items() if isinstance(v, dict) and SERIALIZED in v]
    for key in keys:
        data[key] = _payload(marker)
    _rewrite_zip(path, "data", json.dumps(data).encode())
    return keys


def _copy_run(run: Run, dest: Path) -> Run:
    shutil.copytree(run.path, dest)
    return load_run(dest)


def _vec(run: Run, n_envs: int) -> DummyVecEnv:
    cfg = run_env_config(run.run_config)
    return DummyVecEnv([lambda: LossDesignEnv(cfg)] * n_envs)


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("ppo")
    return loss_rl.search(env="tiny", agent="ppo", budget=16, out=out, name="ppo")


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("dqn")
    return Search.create("tiny", "dqn", budget=16, out=out, name="dqn").run(verify_top=False)


def test_the_planted_pickle_really_runs_code_when_sb3_unpickles_it(
    ppo_run: Run, tmp_path: Path
) -> None:
    # The exploit is real: SB3's own reader, without custom objects, creates the marker.
    from stable_baselines3.common.save_util import load_from_zip_file

    marker = tmp_path / "pwned"
    zip_path = tmp_path / AGENT_FILE
    shutil.copyfile(ppo_run.path / AGENT_FILE, zip_path)
    _poison(zip_path, marker, ["policy_class"])
    load_from_zip_file(zip_path, device="cpu")
    assert marker.exists()


def test_load_policy_takes_every_pickled_field_from_a_fresh_agent(
    ppo_run: Run, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    run = _copy_run(ppo_run, tmp_path / "run")
    keys = _poison(run.path / AGENT_FILE, marker)
    assert {"policy_class", "observation_space", "action_space", "lr_schedule"} <= set(keys)
    model = load_policy(run)
    assert not marker.exists()
    assert model is not None and model.policy_class.__name__ == "ActorCriticPolicy"
    # The weights and counters are the file's: the same as the untouched run's policy.
    clean = load_policy(ppo_run)
    assert clean is not None and model.num_timesteps == clean.num_timesteps > 0
    for (name, a), (_, b) in zip(
        model.policy.state_dict().items(), clean.policy.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    obs = np.zeros((1, *model.observation_space.shape), dtype=np.float32)
    action, _ = model.predict(obs, deterministic=True)
    assert 0 <= int(action[0]) < model.action_space.n


def test_an_unknown_pickled_field_is_refused_naming_file_and_field(
    ppo_run: Run, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    run = _copy_run(ppo_run, tmp_path / "run")
    _poison(run.path / AGENT_FILE, marker, ["surprise"])
    with pytest.raises(RunError, match="'surprise'") as err:
        load_policy(run)
    assert str(run.path / AGENT_FILE) in str(err.value)
    assert not marker.exists()


def test_pickled_weights_are_refused(ppo_run: Run, tmp_path: Path) -> None:
    # The .pth members are read by torch.load(weights_only=True): a pickle of code is refused.
    marker = tmp_path / "pwned"
    run = _copy_run(ppo_run, tmp_path / "run")
    buf = io.BytesIO()
    torch.save({"mlp_extractor.policy_net.0.weight": _Boom(marker)}, buf)
    _rewrite_zip(run.path / AGENT_FILE, "policy.pth", buf.getvalue())
    with pytest.raises(RunError, match="cannot be loaded"):
        load_policy(run)
    assert not marker.exists()


def test_sb3_reads_the_weights_with_weights_only() -> None:
    # load_agent relies on this; an SB3 upgrade that drops it must fail here.
    import inspect

    from stable_baselines3.common import save_util

    source = inspect.getsource(save_util.load_from_zip_file)
    assert "th.load(param_file, map_location=device, weights_only=True)" in source


def test_cli_inspect_json_of_a_poisoned_run_runs_no_code(ppo_run: Run, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    run = _copy_run(ppo_run, tmp_path / "run")
    _poison(run.path / AGENT_FILE, marker)
    res = CliRunner().invoke(app, ["inspect", str(run.path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["rollout"] is not None  # the policy was loaded (as data) and rolled out
    assert not marker.exists()
    # An unknown pickled field: the policy is skipped with a note, the rest is shown.
    _poison(run.path / AGENT_FILE, marker, ["surprise"])
    res = CliRunner().invoke(app, ["inspect", str(run.path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["rollout"] is None
    assert any("surprise" in note for note in data["missing"])
    assert not marker.exists()


def test_resume_from_a_poisoned_checkpoint_runs_no_code(ppo_run: Run, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    run = _copy_run(ppo_run, tmp_path / "run")
    _poison(run.path / AGENT_FILE, marker)
    config = yaml.safe_load((run.path / "config.yaml").read_text())
    config["budget"] = 24  # more to do, so the resume opens the checkpoint and trains on
    (run.path / "config.yaml").write_text(yaml.safe_dump(config))
    before = run.summary["evaluations"]["trained"] if run.summary else 0
    done = Search.open(run.path).run(verify_top=False)
    assert not marker.exists()
    assert done.summary is not None
    trained = done.summary["evaluations"]["trained"]
    # It trained on from the checkpoint: to the budget, or until a proposal cap stopped it
    # (a small policy on iris can keep proposing cached losses; the summary says so).
    assert trained > before
    assert trained >= 24 or done.summary["stopped"], done.summary
    # The checkpoint it wrote is clean again: its pickled fields are the fresh agent's objects.
    from stable_baselines3.common.save_util import load_from_zip_file

    load_from_zip_file(run.path / AGENT_FILE, device="cpu")
    assert not marker.exists()


def test_init_agent_file_with_a_poisoned_policy_runs_no_code(ppo_run: Run, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    policy = tmp_path / "foreign.zip"  # a bare file: no run folder or card to check first
    shutil.copyfile(ppo_run.path / AGENT_FILE, policy)
    _poison(policy, marker)
    run = Search.create(
        "tiny", "ppo", budget=16, out=tmp_path, name="tuned", init_agent=policy
    ).run(verify_top=False)
    assert run.summary is not None and run.summary["status"] == "finished"
    assert not marker.exists()
    _poison(policy, marker, ["surprise"])
    s = Search.create("tiny", "ppo", budget=16, out=tmp_path, name="refused", init_agent=policy)
    with pytest.raises(RunError, match="'surprise'"):
        s.run(verify_top=False)
    assert not marker.exists()


def test_cli_search_init_agent_with_a_poisoned_run_runs_no_code(
    ppo_run: Run, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    source = _copy_run(ppo_run, tmp_path / "source")
    _poison(source.path / AGENT_FILE, marker)
    args = ["search", "--env", "tiny", "--agent", "ppo", "--budget", "16"]
    args += ["--out", str(tmp_path), "--name", "r", "--init-agent", str(source.path)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / AGENT_FILE).is_file()
    assert not marker.exists()


def test_a_network_of_another_layout_does_not_fit(ppo_run: Run, tmp_path: Path) -> None:
    # Spaces always come from the current env, so the weights' shapes tell the mismatch.
    config = AgentConfig.from_dict(ppo_run.run_config.agent)
    other = DummyVecEnv([lambda: LossDesignEnv(EnvConfig.from_dict({"kind": "regression"}))] * 4)
    folder = tmp_path / "new"
    folder.mkdir()
    with pytest.raises(ConfigError, match="does not fit this env") as err:
        open_agent(config, other, folder, seed=0, init=ppo_run.path / AGENT_FILE)
    assert err.value.field == "init_agent"


def test_a_run_folder_of_another_layout_is_refused_before_its_policy_is_opened(
    ppo_run: Run, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    source = _copy_run(ppo_run, tmp_path / "source")
    _poison(source.path / AGENT_FILE, marker)
    with pytest.raises(ConfigError, match="another observation/action layout") as err:
        Search.create("diabetes", "ppo", budget=64, out=tmp_path, init_agent=source.path)
    assert err.value.field == "init_agent" and not marker.exists()


def test_a_pickled_replay_buffer_is_never_opened(
    dqn_run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    run = _copy_run(dqn_run, tmp_path / "run")
    (run.path / REPLAY_FILE).unlink()
    (run.path / "replay_buffer.pkl").write_bytes(pickle.dumps(_Boom(marker)))
    config = AgentConfig.from_dict(run.run_config.agent)
    with caplog.at_level(logging.WARNING, logger="loss_rl.agents"):
        model, fresh = open_agent(config, _vec(run, config.n_envs), run.path, seed=0)
    assert not marker.exists()
    assert not fresh and model.replay_buffer.pos == 0 and not model.replay_buffer.full
    assert "replay_buffer.pkl" in caplog.text and "re-collected" in caplog.text
    # A whole resume too: it trains on, re-collecting its buffer, and writes the arrays.
    config_yaml = yaml.safe_load((run.path / "config.yaml").read_text())
    config_yaml["budget"] = 24
    (run.path / "config.yaml").write_text(yaml.safe_dump(config_yaml))
    Search.open(run.path).run(verify_top=False)
    assert not marker.exists() and (run.path / REPLAY_FILE).is_file()


def test_the_replay_buffer_round_trips_through_plain_arrays(dqn_run: Run, tmp_path: Path) -> None:
    run = _copy_run(dqn_run, tmp_path / "run")
    config = AgentConfig.from_dict(run.run_config.agent)
    model, _ = open_agent(config, _vec(run, config.n_envs), run.path, seed=0)
    buf = model.replay_buffer
    with np.load(run.path / REPLAY_FILE, allow_pickle=False) as saved:
        n = buf.buffer_size if buf.full else buf.pos
        assert n > 0 and (int(saved["pos"]), bool(saved["full"])) == (buf.pos, buf.full)
        for name in ("observations", "actions", "rewards", "dones", "timeouts"):
            assert np.array_equal(saved[name], getattr(buf, name)[:n]), name
    assert np.any(buf.observations[:n] != 0) and np.any(buf.rewards[:n] != 0)
    # Saved again and loaded into another agent: the same arrays, the same position.
    again = tmp_path / "again"
    again.mkdir()
    save_agent(model, again)
    other, _ = open_agent(config, _vec(run, config.n_envs), again, seed=0)
    assert (other.replay_buffer.pos, other.replay_buffer.full) == (buf.pos, buf.full)
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        assert np.array_equal(getattr(other.replay_buffer, name), getattr(buf, name)), name


def test_a_replay_buffer_that_does_not_fit_is_recollected(
    dqn_run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    run = _copy_run(dqn_run, tmp_path / "run")
    config = AgentConfig.from_dict(run.run_config.agent)
    with np.load(run.path / REPLAY_FILE, allow_pickle=False) as f:
        arrays = dict(f)
    bad = [
        {**arrays, "observations": arrays["observations"][..., :-1]},  # another layout
        {**arrays, "rewards": arrays["rewards"].astype(np.float64)},  # another dtype
        {**arrays, "pos": np.int64(10**9)},
        {**arrays, "actions": np.array([_Boom(marker)], dtype=object)},  # a pickle inside
    ]
    for content in bad:
        with open(run.path / REPLAY_FILE, "wb") as f:
            np.savez(f, **content)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="loss_rl.agents"):
            model, _ = open_agent(config, _vec(run, config.n_envs), run.path, seed=0)
        assert model.replay_buffer.pos == 0 and not model.replay_buffer.full
        assert not np.any(model.replay_buffer.observations)
        assert "re-collected" in caplog.text
    assert not marker.exists()


def test_load_agent_needs_an_sb3_algorithm(ppo_run: Run) -> None:
    with pytest.raises(ConfigError, match="unknown algorithm"):
        load_agent(AgentConfig("random"), ppo_run.path / AGENT_FILE, _vec(ppo_run, 1))
