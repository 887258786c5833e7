"""LossDesignEnv: API checkers, rewards, penalties, starts, render, two-phase steps."""

from __future__ import annotations

import subprocess
import sys
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from loss_rl.envs import LossDesignEnv
from loss_rl.envs._env import N_STATS
from loss_rl.envs.testing import CheapEvaluator
from loss_rl.errors import ConfigError
from loss_rl.evaluation import EvalResult, Status
from loss_rl.expr import Expr, known_loss, parse
from loss_rl.presets import ENV_ID, register_envs
from tests.envs.helpers import TableEvaluator

SPACES = ["symbolic", "parametric"]
KINDS = ["classification", "regression"]


def _first(env: LossDesignEnv, name: str) -> int:
    """Index of the action called ``name``."""
    for a in range(int(env.action_space.n)):
        if env.action_name(a) == name:
            return a
    raise KeyError(name)


def _stats(env: LossDesignEnv, obs: np.ndarray) -> np.ndarray:
    start = env.space.obs_dim
    return obs[start : start + N_STATS]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("space", SPACES)
def test_gymnasium_and_sb3_checkers_pass(space: str, kind: str) -> None:
    # No cache: a repeated step must cost "a training" again for the determinism check.
    ev = CheapEvaluator(kind, cache=False, full_check=False)
    env = LossDesignEnv({"space": space, "kind": kind}, ev, render_mode="ansi")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render modes.*")
        gym_check_env(env)
    sb3_check_env(env)
    assert env.observation_space.dtype == np.float32


def test_registered_and_made_by_id() -> None:
    register_envs()  # `import loss_rl` registered the ids already; twice is harmless
    env = gym.make(ENV_ID, render_mode="ansi", evaluator=CheapEvaluator())
    assert isinstance(env.unwrapped, LossDesignEnv)
    gym_check_env(env.unwrapped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(env)
    made = gym.make(ENV_ID, config={"space": "parametric"}, evaluator=TableEvaluator())
    made.reset(seed=0)
    assert made.unwrapped.config.space == "parametric"


def test_an_env_without_evaluator_says_what_to_pass() -> None:
    # Never a made-up score from a test double: the first evaluation is a clear error.
    env = gym.make(ENV_ID)
    with pytest.raises(ConfigError, match="no evaluator: pass evaluator=") as err:
        env.reset(seed=0)
    assert err.value.field == "evaluator"


def test_import_loss_rl_registers_the_ids_without_the_rl_stack() -> None:
    code = (
        "import sys, gymnasium, loss_rl\n"
        "assert 'stable_baselines3' not in sys.modules and 'loss_rl.envs' not in sys.modules\n"
        "from loss_rl.envs.testing import CheapEvaluator\n"
        "env = gymnasium.make('loss_rl/LossDesign-v0', evaluator=CheapEvaluator())\n"
        "env.reset(seed=0)\n"
        "print(gymnasium.spec('loss_rl/digits_noisy-v0').entry_point)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "loss_rl.presets:make_env"


def test_render_ansi_and_none() -> None:
    env = LossDesignEnv(evaluator=TableEvaluator(), render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert isinstance(text, str) and "-log_p_y" in text and "0.5000" in text
    env.step(_first(env, "0:wrap:exp"))
    assert "exp(-log_p_y)" in env.render() and "0:wrap:exp" in env.render()
    assert LossDesignEnv(evaluator=TableEvaluator()).render() is None
    assert LossDesignEnv(evaluator=TableEvaluator(), render_mode="rgb_array").render() is None


def test_observation_layout() -> None:
    ev = TableEvaluator({known_loss("ce").key: 0.5}, reference=0.5)
    env = LossDesignEnv({"max_size": 6, "task_features": [0.25, -0.5]}, ev)
    obs, info = env.reset(seed=0)
    sp = env.space
    assert obs.shape == (sp.obs_dim + N_STATS + 2,) == env.observation_space.shape
    rows = obs[: sp.obs_dim].reshape(6, -1)
    # -log_p_y is neg(log_p_y): two tokens, then padding.
    assert sp.vocab[int(rows[0, :-2].argmax())] == "neg"
    assert sp.vocab[int(rows[1, :-2].argmax())] == "log_p_y"
    assert all(sp.vocab[int(r[:-2].argmax())] == "<pad>" for r in rows[2:])
    cur, known, best, ref, dcur, dbest, frac, *_ = _stats(env, obs)
    assert (cur, known, best, ref, dcur, dbest, frac) == (0.5, 1, 0.5, 0.5, 0, 0, 0)
    np.testing.assert_allclose(obs[-2:], [0.25, -0.5])
    obs, *_ = env.reset(options={"task_features": [1.0, 1.0]})
    np.testing.assert_allclose(obs[-2:], [1.0, 1.0])
    assert "episode" not in info  # SB3 reads info["episode"] as Monitor statistics


def _two_edits(reward: str, **extra: Any) -> tuple[list[float], LossDesignEnv]:
    """CE (0.5) -> X (0.7) -> Y (0.6) -> Z (0.65), rewards without revisit/novelty terms."""
    ev = TableEvaluator(reference=0.5)
    cfg = {"reward": reward, "revisit_penalty": 0.0, **extra}
    env = LossDesignEnv(cfg, ev)
    ev.set(known_loss("ce"), 0.5)
    env.reset(seed=0)
    x = parse("exp(-log_p_y)")
    y = parse("exp(-log_p_y) * p_y")
    z = parse("exp(-log_p_y) * p_y * p_y")
    for e, v in ((x, 0.7), (y, 0.6), (z, 0.65)):
        ev.set(e, v)
    rewards = []
    for name in ("0:wrap:exp", "0:mul(x,p_y)", "0:mul(x,p_y)"):
        _, r, *_ = env.step(_first(env, name))
        rewards.append(r)
    assert str(env.expression) == str(z)
    return rewards, env


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("best_gain", [0.2, 0.0, 0.0]),
        ("score", [0.7, 0.6, 0.65]),
        ("delta_prev", [0.2, -0.1, 0.05]),
        ("delta_ce", [0.2, 0.1, 0.15]),
    ],
)
def test_reward_modes(mode: str, expected: list[float]) -> None:
    rewards, _ = _two_edits(mode)
    np.testing.assert_allclose(rewards, expected, atol=1e-9)


def test_best_gain_clip_and_episode_scope() -> None:
    rewards, _ = _two_edits("best_gain", gain_clip=0.1)
    np.testing.assert_allclose(rewards, [0.1, 0.0, 0.0], atol=1e-9)
    # Episode scope: the best is the episode's, starting at the start's score.
    rewards, env = _two_edits("best_gain", best_scope="episode")
    np.testing.assert_allclose(rewards, [0.2, 0.0, 0.0], atol=1e-9)
    assert env.run.best_score == 0.7


def test_run_best_persists_across_episodes_but_not_a_seeded_reset() -> None:
    _, env = _two_edits("best_gain")
    env.reset()
    assert env.run.best_score == 0.7  # the run remembers
    _, r, *_ = env.step(_first(env, "0:wrap:exp"))
    assert r == 0.0  # 0.7 again: no gain over the run's best
    env.reset(seed=1)  # a seeded reset starts a new run
    assert env.run.best_score == 0.5 and env.run.n_trainings == 0


def test_novelty_bonus_and_revisit_penalty() -> None:
    ev = TableEvaluator(reference=0.5, default=0.3)
    env = LossDesignEnv({"reward": "delta_ce", "revisit_penalty": 0.01, "novelty_bonus": 0.02}, ev)
    env.reset(seed=0)
    a = _first(env, "0:wrap:exp")
    _, r1, *_, info1 = env.step(a)
    env.reset()
    _, r2, *_, info2 = env.step(a)
    assert info1["result"].trained and not info2["result"].trained
    assert r1 == pytest.approx(-0.2 + 0.02) and r2 == pytest.approx(-0.2 - 0.01)


@pytest.mark.parametrize("on_reject", ["stay", "move"])
@pytest.mark.parametrize("status", [Status.REJECTED, Status.DIVERGED])
def test_rejected_and_diverged_candidates_get_a_penalty(on_reject: str, status: Status) -> None:
    ev = TableEvaluator(reference=0.5, default=status)
    ev.set(known_loss("ce"), 0.5)
    cfg = {"on_reject": on_reject, "reject_penalty": 0.3, "diverge_penalty": 0.4}
    env = LossDesignEnv(cfg, ev)
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step(_first(env, "0:wrap:log"))
    assert r == (-0.3 if status is Status.REJECTED else -0.4)
    assert info["result"].status is status and not term and not trunc
    assert env.observation_space.contains(obs)
    stats = _stats(env, obs)
    if on_reject == "stay":
        assert str(env.expression) == "-log_p_y" and env.score == 0.5
    else:
        assert str(env.expression) == "log(-log_p_y)" and env.score is None
        assert stats[1] == 0.0  # current score unknown
    assert stats[8] == 1.0  # "rejected or diverged" flag


def test_invalid_action_is_a_penalised_no_op() -> None:
    ev = TableEvaluator()
    env = LossDesignEnv({"invalid_penalty": 0.25}, ev)
    env.reset(seed=0)
    calls = len(ev.calls)
    mask = env.action_masks()
    bad = int(np.flatnonzero(~mask)[-1])
    assert env.propose(bad) is None
    obs, r, term, trunc, info = env.step(bad)
    assert r == -0.25 and info["invalid"] and not term and not trunc
    assert str(env.expression) == "-log_p_y" and len(ev.calls) == calls
    assert _stats(env, obs)[7] == 1.0 and info["n_invalid"] == 1
    with pytest.raises(ValueError, match="outside"):
        env.step(int(env.action_space.n))


def test_stop_min_steps_and_truncation() -> None:
    env = LossDesignEnv({"max_steps": 3, "min_steps": 1}, TableEvaluator())
    env.reset(seed=0)
    assert not env.action_masks()[0]
    _, r, term, *_ = env.step(0)  # stop before min_steps: invalid
    assert r < 0 and not term
    assert env.action_masks()[0]
    _, r, term, trunc, _ = env.step(0)
    assert (r, term, trunc) == (0.0, True, False)
    env.reset()
    a = _first(env, "0:wrap:exp")
    outs = [env.step(a if i == 0 else _first(env, "0:wrap:abs"))[2:4] for i in range(3)]
    assert outs == [(False, False), (False, False), (False, True)]


def test_step_is_propose_evaluate_commit() -> None:
    ev = TableEvaluator()
    env = LossDesignEnv(evaluator=ev)
    env.reset(seed=0)
    ev.calls.clear()
    a = _first(env, "1:set:p_y")
    cand = env.propose(a)
    assert isinstance(cand, Expr) and str(cand) == "-p_y"
    result = EvalResult(cand.key, str(cand), 0.9, Status.OK)
    _, r, *_, info = env.commit(result)
    assert info["result"] is result and info["expression"] == "-p_y" and r == pytest.approx(0.4)
    assert ev.calls == []  # commit used the given result
    with pytest.raises(RuntimeError):
        env.commit()
    env.propose(_first(env, "0:wrap:exp"))
    with pytest.raises(RuntimeError, match="EvalResult"):
        env.commit()
    # step() evaluates with the context of the step.
    env.step(_first(env, "0:wrap:exp"))
    assert ev.calls == [1]
    # The edit that proposed the candidate rides along, for the ledger's `action` column.
    assert ev.contexts[-1] == [{"episode": 0, "step": 2, "env_index": 0, "action": "0:wrap:exp"}]


def test_cheap_evaluator_records_contexts_and_rejects() -> None:
    ev = CheapEvaluator()
    env = LossDesignEnv(evaluator=ev)
    env.reset(seed=0)
    _, r, *_, info = env.step(_first(env, "1:set:p_y"))  # -p_y: fine
    assert info["result"].ok
    _, r, *_, info = env.step(_first(env, "0:keep:0"))  # p_y: minimising it is wrong
    assert info["result"].status is Status.REJECTED and r == -env.config.reject_penalty
    assert ev.contexts[-1][0]["env_index"] == 0 and ev.n_calls == len(ev.calls)


def test_start_modes() -> None:
    ev = TableEvaluator()
    cycle = LossDesignEnv({"start": ["ce", "gce", "(1 - p_y) * 2"], "start_mode": "cycle"}, ev)
    seen = [str(cycle.reset(seed=0)[1]["expression"])]
    seen += [cycle.reset()[1]["expression"] for _ in range(3)]
    assert seen == ["-log_p_y", str(known_loss("gce")), "(1 - p_y) * 2", "-log_p_y"]

    rand = LossDesignEnv({"start": ["library"], "start_mode": "random"}, ev)
    starts = {rand.reset(seed=s)[1]["expression"] for s in range(12)}
    assert len(starts) >= 4
    assert all(s in {str(e) for e in rand.start_candidates()} for s in starts)

    fixed = LossDesignEnv({"start": ["focal", "ce"]}, ev)
    assert {fixed.reset(seed=s)[1]["expression"] for s in range(3)} == {str(known_loss("focal"))}


def test_start_from_best_and_injected_best_and_options() -> None:
    ev = TableEvaluator(reference=0.5)
    env = LossDesignEnv({"start_best_prob": 1.0}, ev)
    env.reset(seed=0)
    assert env.inject_best("(1 - p_y^0.5) / 0.5", 0.9)
    assert not env.inject_best("-log_p_y", 0.1)
    _, info = env.reset()
    assert info["expression"] == "(1 - p_y^0.5) / 0.5"
    assert info["best_score"] == 0.9
    _, info = env.reset(options={"start": "mae"})
    assert info["expression"] == str(known_loss("mae"))
    with pytest.raises(Exception, match=r"options\.start"):
        env.reset(options={"start": "p"})


def test_parametric_actions_and_masks() -> None:
    ev = TableEvaluator()
    env = LossDesignEnv({"space": "parametric"}, ev)
    env.reset(seed=0)
    assert env.expression == known_loss("ce")
    mask = env.action_masks()
    names = {env.action_name(a) for a in np.flatnonzero(mask)}
    assert "ce:set0" not in names  # CE is the only active term
    assert "gce:q+" not in names  # GCE is off: its q does not change the loss
    assert {"mae:solo", "gce:set1", "ce:w+", "ce:w-"} <= names
    env.step(_first(env, "mae:solo"))
    assert env.expression == known_loss("mae")
    env.step(_first(env, "ce:set1"))
    env.step(_first(env, "mae:w-"))  # 1.0 -> 0.5
    assert str(env.expression) == f"-log_p_y + 0.5 * {known_loss('mae')}"
    env.step(_first(env, "mae:toggle"))
    assert env.expression == known_loss("ce")
    env.step(_first(env, "mae:toggle"))  # back at the remembered 0.5
    assert str(env.expression) == f"-log_p_y + 0.5 * {known_loss('mae')}"
    env.step(_first(env, "focal:set1"))
    env.step(_first(env, "focal:gamma+"))
    assert known_loss("focal", gamma=3.0) in env.expression.nodes()


def test_parametric_random_and_library_starts() -> None:
    env = LossDesignEnv(
        {"space": "parametric", "start": ["random", "library"], "start_mode": "random"},
        TableEvaluator(),
    )
    env.reset(seed=0)
    exprs = {env.reset()[1]["expression"] for _ in range(40)}
    assert len(exprs) >= 8  # 4 single terms + random composites
    assert str(known_loss("mae")) in {str(e) for e in env.start_candidates()}
    assert "-mean_c(log_p)" not in {str(e) for e in env.start_candidates()}  # not valid alone
