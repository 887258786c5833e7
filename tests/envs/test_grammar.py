"""The grammar space: masks that never dead-end, token round trips, tree operators, the env."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from sb3_contrib import MaskablePPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from loss_rl.envs import BatchedLossVecEnv, EnvConfig, GrammarSpace, GrammarState, LossDesignEnv
from loss_rl.envs._config import structural_problem
from loss_rl.envs.testing import CheapEvaluator
from loss_rl.errors import ConfigError
from loss_rl.evaluation import Status
from loss_rl.expr import LEAVES, Expr, Op, TaskKind, check, is_vector, known_loss, parse
from tests.envs.helpers import TableEvaluator

CONFIGS: dict[str, dict[str, Any]] = {
    "cls_small": {"max_size": 4, "constants": [0.5, 1, 2]},
    "cls": {"max_size": 12, "constants": [0.5, 1, 2]},
    "cls_large": {"max_size": 24, "constants": [1]},
    "cls_no_reduction": {"max_size": 10, "ops": ["neg", "log", "exp", "add", "sub", "mul"]},
    "cls_vectors_only": {"max_size": 6, "leaves": ["p", "t"], "constants": []},
    "cls_pred_target": {"max_size": 8, "leaves": ["log_p", "t", "p_y"]},
    "reg": {"kind": "regression", "max_size": 12, "constants": [0.5, 1, 2]},
    "reg_split": {"kind": "regression", "max_size": 3, "leaves": ["pred", "target"]},
}


def _space(name: str) -> GrammarSpace:
    return GrammarSpace(EnvConfig.from_dict({"space": "grammar", **CONFIGS[name]}))


def _no_constant_only_op(e: Expr) -> bool:
    if isinstance(e, Op):
        return bool(e.leaves()) and all(_no_constant_only_op(c) for c in e.args)
    return True


def _reductions_of_vectors(e: Expr) -> bool:
    if isinstance(e, Op):
        if e.op in ("sum_c", "mean_c") and not is_vector(e.args[0]):
            return False
        return all(_reductions_of_vectors(c) for c in e.args)
    return True


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_random_token_sequences_always_finish_valid(name: str) -> None:
    sp = _space(name)
    cfg = sp.config
    rng = np.random.default_rng(0)
    for _ in range(150):
        state = sp.initial_state()
        while not sp.is_complete(state):
            mask = sp.mask(state)
            assert mask.any(), f"dead end after {[sp.action_name(i) for i in state.tokens]}"
            assert sp.expr(state) is None
            obs = sp.encode(state)
            assert obs.shape == sp.obs_low.shape
            assert np.all(obs >= sp.obs_low) and np.all(obs <= sp.obs_high)
            state = sp.apply(state, int(rng.choice(np.flatnonzero(mask))))
        assert not sp.mask(state).any()
        expr = sp.expr(state)
        assert expr is not None
        assert expr.size() <= cfg.max_size == len(state.tokens) or expr.size() == len(state.tokens)
        assert expr.size() <= cfg.max_size
        assert structural_problem(expr, cfg) == ""
        assert not is_vector(expr)
        leaves = [LEAVES[n] for n in expr.leaves()]
        assert any(s.uses_prediction for s in leaves) and any(s.uses_target for s in leaves)
        assert _no_constant_only_op(expr) and _reductions_of_vectors(expr)
        assert parse(str(expr)) == expr
        assert sp.tokens(expr) == state.tokens
        assert sp.accepts(state)


def test_structural_checks_of_samples_pass() -> None:
    for name in ("cls", "reg"):
        sp = _space(name)
        rng = np.random.default_rng(1)
        for _ in range(10):
            res = check(sp.sample(rng), sp.kind)
            assert not {"kind", "no_prediction"} & set(res.codes)


def test_library_losses_round_trip() -> None:
    sp = _space("cls")
    for name in ("ce", "mae", "focal", "baikal", "poly1"):
        expr = known_loss(name)
        toks = sp.tokens(expr)
        assert toks is not None, name
        state = sp.initial_state()
        for i in toks:
            assert sp.mask(state)[i]
            state = sp.apply(state, i)
        assert sp.expr(state) == expr
    assert sp.tokens(known_loss("gce")) is None  # 0.7 is not in the constant set
    assert sp.tokens(known_loss("nce_rce")) is None  # 12 nodes, one constant (4) unknown
    big = parse("-log_p_y * (1 - p_y) * (1 - p_y) * (1 - p_y)")
    assert big.size() > 12 and sp.tokens(big) is None
    assert sp.tokens(parse("sum_c(p_y) * log_p_y")) is None  # reduction of a scalar
    assert sp.tokens(parse("log_p_y + 2 * 1")) is None  # constant-only subtree
    assert sp.tokens(parse("mean_c(p)")) is None  # no target
    assert sp.tokens(parse("p")) is None  # a vector root
    reg = _space("reg")
    assert reg.tokens(known_loss("mse")) is not None
    assert reg.tokens(known_loss("ce")) is None


def test_names_initial_state_and_encoding() -> None:
    sp = _space("cls")
    names = [sp.action_name(i) for i in range(sp.n_actions)]
    assert {"p_y", "log", "+", "0.5", "sum_c"} <= set(names)
    assert len(set(names)) == len(names)
    s0 = sp.initial_state()
    assert isinstance(s0, GrammarState) and s0.tokens == () and not sp.is_complete(s0)
    assert hash(s0) == hash(GrammarState())
    obs = sp.encode(s0)
    assert obs.dtype == np.float32 and obs.shape == (sp.obs_dim,)
    s1 = sp.apply(s0, names.index("sum_c"))
    assert not sp.mask(s1)[names.index("p")]  # sum_c(p) would lack the target
    s1 = sp.apply(sp.apply(s1, names.index("*")), names.index("p_y"))
    # A reduction's argument is a vector: after a scalar first factor, only vectors remain.
    m = sp.mask(s1)
    assert m[names.index("p")] and m[names.index("t")]
    assert not m[names.index("p_y")] and not m[names.index("0.5")]
    assert sp.text(s1) == "sum_c((p_y * ?))"
    enc = sp.encode(s1)
    v = sp.vocab
    assert enc[4 * v + names.index("*")] == 1.0  # parent
    assert enc[5 * v + names.index("p_y")] == 1.0  # left sibling
    assert enc[0 * v + names.index("p_y")] == 1.0  # last token
    # A scalar root slot cannot take a vector leaf.
    assert not sp.mask(s0)[names.index("p")]


def test_text_and_encoding_memo_matches_fresh_computation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from loss_rl.envs import _grammar

    monkeypatch.setattr(_grammar, "_MEMO_LIMIT", 8)  # the memo clears itself many times below
    sp, fresh = _space("cls"), _space("cls")
    rng = np.random.default_rng(0)
    for _ in range(40):
        s = sp.initial_state()
        while True:
            for state in (s, s):  # the second lookup hits the memo
                enc = sp.encode(state)
                assert np.array_equal(enc, fresh._encode(state))
                assert sp.text(state) == fresh._text(state)
                enc[:] = -1.0  # the caller owns its array: the memo is unaffected
            assert len(sp._encode_memo) <= 8 and len(sp._text_memo) <= 8
            if sp.is_complete(s):
                break
            s = sp.apply(s, int(rng.choice(np.flatnonzero(sp.mask(s)))))
        assert sp.text(s) == str(sp.expr(s))


def test_size_limit_is_never_a_dead_end() -> None:
    sp = _space("reg_split")  # needs pred and target: e.g. pred - target, exactly 3 tokens
    names = [sp.action_name(i) for i in range(sp.n_actions)]
    m = sp.mask(sp.initial_state())
    assert not m[names.index("log")] and m[names.index("-")]
    s = sp.apply(sp.initial_state(), names.index("-"))
    s = sp.apply(s, names.index("pred"))
    m = sp.mask(s)
    assert [names[i] for i in np.flatnonzero(m)] == ["target"]


def test_unbuildable_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no valid"):
        GrammarSpace(EnvConfig.from_dict({"space": "grammar", "leaves": ["p"]}))


@pytest.mark.parametrize("name", ["cls", "reg", "cls_large"])
def test_mutate_and_crossover_stay_valid_and_differ(name: str) -> None:
    sp = _space(name)
    rng = np.random.default_rng(3)
    pop = [sp.sample(rng) for _ in range(30)]
    changed = total = 0
    for a, b in itertools.pairwise(pop):
        for child in (sp.mutate(a, rng), sp.crossover(a, b, rng)):
            if child is None:
                continue
            total += 1
            assert sp.tokens(child) is not None
            assert structural_problem(child, sp.config) == ""
            changed += child != a
    assert total >= 30 and changed == total
    assert sp.mutate(parse("log_p_y * 0.7"), rng) is None  # outside the grammar


def test_config_validation_and_defaults() -> None:
    cfg = EnvConfig.from_dict({"space": "grammar", "max_size": 10})
    assert (cfg.reward, cfg.revisit_penalty, cfg.novelty_bonus) == ("score", 0.0, 0.0)
    assert cfg.max_steps == 10
    assert EnvConfig.from_dict({"space": "grammar", "reward": "best_gain"}).reward == "best_gain"
    assert EnvConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError) as err:
        EnvConfig.from_dict({"space": "grammar", "start_best_prob": 0.5})
    assert err.value.field == "env.start_best_prob"
    # Landmarks of any size are fine: they are only evaluated.
    big = EnvConfig.from_dict({"space": "grammar", "max_size": 6, "start": ["library"]})
    assert len(LossDesignEnv(big).start_candidates()) > 3
    with pytest.raises(ConfigError):
        EnvConfig.from_dict({"space": "grammar", "start": ["mse"]})


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_gymnasium_and_sb3_checkers_pass(kind: str) -> None:
    ev = CheapEvaluator(kind, cache=False, full_check=False)
    config = {"space": "grammar", "kind": kind, "max_size": 8}
    env = LossDesignEnv(config, ev, render_mode="ansi")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render modes.*")
        gym_check_env(env)
    sb3_check_env(env)


def test_episode_builds_one_loss_with_terminal_reward_only() -> None:
    ev = TableEvaluator(default=0.3, reference=0.5)
    cfg = {"space": "grammar", "max_size": 8, "constants": [1], "start": ["ce", "gce"]}
    env = LossDesignEnv(cfg, ev, render_mode="ansi")
    _, info = env.reset(seed=0)
    assert ev.calls == [2]  # the landmarks, in one call
    assert info["expression"] == "?" and env.score is None
    assert not env.action_masks()[0]  # no stop
    rng = np.random.default_rng(0)
    rewards, done, steps = [], False, 0
    while not done:
        mask = env.action_masks()
        _, r, terminated, truncated, info = env.step(int(rng.choice(np.flatnonzero(mask))))
        steps += 1
        rewards.append(r)
        assert not info["invalid"]
        done = terminated or truncated
        assert not truncated
    assert terminated and steps <= 8
    assert rewards[:-1] == [0.0] * (len(rewards) - 1)
    assert rewards[-1] == pytest.approx(0.3)  # reward mode "score"
    assert ev.calls == [2, 1]
    assert parse(info["expression"]) == env.expression
    assert "loss" in (env.render() or "")
    env.reset()
    assert ev.calls == [2, 1]  # landmarks known
    # A rejected completion terminates with the penalty.
    env2 = LossDesignEnv(cfg, TableEvaluator(default=Status.REJECTED), run=None)
    env2.reset(seed=0)
    names = [env2.action_name(a) for a in range(int(env2.action_space.n))]
    _, r, term, _, _ = env2.step(names.index("neg"))
    assert r == 0.0 and not term
    _, r, term, _, info = env2.step(names.index("log_p_y"))
    assert term and r == pytest.approx(-env2.config.reject_penalty)
    assert info["expression"] == "-log_p_y"


def test_masked_token_is_an_invalid_no_op() -> None:
    env = LossDesignEnv({"space": "grammar", "max_size": 6}, TableEvaluator())
    env.reset(seed=0)
    mask = env.action_masks()
    bad = int(np.flatnonzero(~mask)[1])
    _, r, term, _, info = env.step(bad)
    assert info["invalid"] and r == -env.config.invalid_penalty and not term
    assert env.state_text == "?"


def test_vec_env_batches_completions_and_maskable_ppo_learns() -> None:
    ev = CheapEvaluator(full_check=False, steps=5)
    cfg = {"space": "grammar", "max_size": 8, "constants": [0.5, 1, 2], "start": ["ce", "mae"]}
    vec = BatchedLossVecEnv([LossDesignEnv(cfg) for _ in range(4)], ev)
    vec.reset()
    assert ev.calls == [2]
    model = MaskablePPO(
        "MlpPolicy",
        vec,
        seed=0,
        gamma=1.0,
        n_steps=16,
        batch_size=32,
        n_epochs=1,
        policy_kwargs={"net_arch": [32]},
    )
    model.learn(total_timesteps=256)
    assert all(n <= 4 for n in ev.calls)
    assert model.num_timesteps >= 256
    obs = vec.reset()
    masks = vec.get_action_masks()
    action, _ = model.predict(obs, action_masks=masks)
    assert masks[np.arange(4), action].all()


def test_baseline_env_construction_and_landmarks() -> None:
    cfg = EnvConfig.from_dict(
        {"space": "grammar", "max_size": 12, "constants": [0.5, 1, 2], "start": ["ce", "gce"]}
    )
    env = LossDesignEnv(cfg, CheapEvaluator())
    sp = env.space
    assert isinstance(sp, GrammarSpace)
    assert [str(e) for e in env.start_candidates()] == [
        str(known_loss("ce")),
        str(known_loss("gce")),
    ]
    for entry in cfg.start_points:
        for s in sp.starts(entry):
            assert sp.expr(s) == s
    assert env.inject_best(known_loss("ce"), 0.9)
    assert cfg.kind is TaskKind.CLASSIFICATION
