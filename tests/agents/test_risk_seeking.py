"""Risk-seeking PPO: DSR's risk-seeking policy gradient and priority-queue training.

Toy envs only (a two-armed bandit, three-token "expression" MDPs): the agent side is generic
over masked envs with terminal rewards.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import zipfile
from pathlib import Path
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from loss_rl.agents import (
    AGENT_FILE,
    AgentConfig,
    RiskSeekingPPO,
    load_agent,
    make_agent,
    risk_seeking_advantages,
    save_agent,
)
from loss_rl.errors import ConfigError
from loss_rl.presets import load_agent_config


class Bandit(gym.Env):
    """One step per episode. Arm 0 pays 0.5; arm 1 pays 1 with probability 0.1 (mean 0.1);
    arm 2 is always masked (taking it fails the test)."""

    observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(3)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert action != 2, "the masked arm was pulled"
        reward = 0.5 if action == 0 else float(self.np_random.random() < 0.1)
        return np.ones(1, np.float32), reward, True, False, {}

    def action_masks(self) -> np.ndarray:
        return np.array([True, True, False])


class ThreeTokens(gym.Env):
    """Writes three tokens, rewarded at the end with the sequence read as a base-3 number / 26.

    The first token may not be 2 (masked), so 18 sequences exist. Every finished episode is
    logged with its observations, masks and actions, to check what the agent kept.
    """

    observation_space = spaces.Box(0.0, 3.0, (4,), np.float32)
    action_space = spaces.Discrete(3)

    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []

    def _obs(self) -> np.ndarray:
        tokens = [a + 1 for a in self._actions] + [0] * (3 - len(self._actions))
        return np.array([len(self._actions), *tokens], np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._actions: list[int] = []
        self._seen = {"obs": [self._obs()], "masks": [self.action_masks()]}
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self.action_masks()[action], "a masked token was chosen"
        self._actions.append(int(action))
        done = len(self._actions) == 3
        reward = (
            (9 * self._actions[0] + 3 * self._actions[1] + self._actions[2]) / 26 if done else 0
        )
        if done:
            self.log.append(
                {
                    "actions": tuple(self._actions),
                    "ret": reward,
                    "obs": np.array(self._seen["obs"]),
                    "masks": np.array(self._seen["masks"]),
                }
            )
        else:
            self._seen["obs"].append(self._obs())
            self._seen["masks"].append(self.action_masks())
        return self._obs(), float(reward), done, False, {}

    def action_masks(self) -> np.ndarray:
        return np.array([True, True, self._actions != []])


class FirstTokenMatters(gym.Env):
    """Three tokens; the return depends only on the first: uniform in [0, 1] after token 1, in
    [0, 0.5] after the others. The observation is the position (one-hot)."""

    observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)
    action_space = spaces.Discrete(3)

    def _obs(self) -> np.ndarray:
        return np.eye(3, dtype=np.float32)[min(self._t, 2)]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t, self._first = 0, -1
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._t == 0:
            self._first = int(action)
        self._t += 1
        done = self._t == 3
        top = 1.0 if self._first == 1 else 0.5
        reward = float(self.np_random.uniform(0.0, top)) if done else 0.0
        return self._obs(), reward, done, False, {}

    def action_masks(self) -> np.ndarray:
        return np.ones(3, bool)


def _p_rare_arm(model: RiskSeekingPPO) -> float:
    with th.no_grad():
        dist = model.policy.get_distribution(th.ones(1, 1), action_masks=np.array([[1, 1, 0]]))
        return float(dist.distribution.probs[0, 1])


@pytest.mark.parametrize(
    ("risk_epsilon", "risk_update", "prefers_rare"),
    [(0.05, "episodes", True), (0.05, "buffer", True), (None, "episodes", False)],
)
def test_risk_seeking_prefers_the_rare_high_reward_arm(
    risk_epsilon: float | None, risk_update: str, prefers_rare: bool
) -> None:
    # Same settings; only the advantage differs. The mean prefers arm 0 (0.5 > 0.1); the top
    # 5 % of episodes are arm 1's jackpots. One-step episodes never cross a rollout, so both
    # risk_update modes must learn this.
    vec = DummyVecEnv([Bandit] * 8)
    model = RiskSeekingPPO(
        "MlpPolicy",
        vec,
        n_steps=8,
        batch_size=64,
        n_epochs=4,
        learning_rate=5e-3,
        gamma=1.0,
        gae_lambda=1.0,
        ent_coef=0.0,
        risk_epsilon=risk_epsilon,
        risk_update=risk_update,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [16]},
    )
    model.learn(1024)  # 128 vec steps, 16 updates on 64 episodes each
    p = _p_rare_arm(model)
    assert (p > 0.5) == prefers_rare, p
    assert p > 0.8 if prefers_rare else p < 0.2


def _first_token_model(
    risk_update: str, cls: type[RiskSeekingPPO] = RiskSeekingPPO
) -> RiskSeekingPPO:
    # Three-token episodes, two steps per env and rollout, all envs in step: every episode's
    # first token is collected one rollout before its return is known.
    return cls(
        "MlpPolicy",
        DummyVecEnv([FirstTokenMatters] * 16),
        n_steps=2,
        batch_size=32,
        n_epochs=4,
        learning_rate=1e-2,
        gamma=1.0,
        gae_lambda=1.0,
        risk_epsilon=0.2,
        risk_update=risk_update,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [16]},
    )


def test_whole_episodes_credit_a_first_token_from_the_previous_rollout() -> None:
    model = _first_token_model("episodes")
    model.learn(640)  # 20 rollouts of ~10 ended episodes
    with th.no_grad():
        dist = model.policy.get_distribution(th.eye(3)[:1], action_masks=np.ones((1, 3)))
    p_good = float(dist.distribution.probs[0, 1])
    assert p_good > 0.8, p_good  # 1/3 at the start; ~0.98 at this seed
    # The last rollout's selection: whole episodes, longer than a rollout, from their first
    # observation on, each with its behaviour log-probabilities and R - q (q is one of them).
    batch = model.risk_batch
    assert batch
    for e in batch:
        assert len(e.actions) == len(e.action_masks) == len(e.log_probs) == 3 > model.n_steps
        np.testing.assert_array_equal(e.observations, np.eye(3, dtype=np.float32))
        assert np.all(e.log_probs < 0) and np.all(np.isfinite(e.log_probs))
        assert e.advantage == pytest.approx(e.ret - min(x.ret for x in batch))
    assert min(e.advantage for e in batch) == 0
    assert {int(e.actions[0, 0]) for e in batch} == {1}  # the top returns follow token 1
    # MaskablePPO's own policy term gets nothing to train on.
    assert not model.rollout_buffer.advantages.any()
    logged = model.logger.name_to_value  # the last train()'s records
    assert logged["train/risk_episodes"] == len(batch) and np.isfinite(logged["train/risk_loss"])


def test_without_selected_episodes_only_the_critic_learns() -> None:
    # One rollout of two steps: no three-step episode ends, so nothing is selected, and
    # MaskablePPO's epochs (zero advantages) must leave the actor alone, momentum and entropy
    # bonus included.
    model = _first_token_model("episodes")
    model.ent_coef = 0.1
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(32)
    assert model.risk_batch == []
    after = model.policy.state_dict()
    moved = {k for k in before if not th.equal(before[k], after[k])}
    assert moved and all(k.startswith(("value_net.", "mlp_extractor.value_net.")) for k in moved)


class _KeepsItsAdvantages(RiskSeekingPPO):
    """Copies the buffer's advantages and observations after each rollout (train() flattens
    the buffer)."""

    def collect_rollouts(self, *args: Any, **kwargs: Any) -> bool:
        complete = super().collect_rollouts(*args, **kwargs)
        buffer = self.rollout_buffer
        self.seen = (np.array(buffer.advantages), np.array(buffer.observations))
        return complete


def test_the_buffer_mode_never_credits_a_first_token_from_the_previous_rollout() -> None:
    # What "episodes" fixes. The fifth rollout holds each env's steps 8 and 9: the last token of
    # an episode (credited if among the best) and the first of the next (never credited: its
    # episode ends in the sixth rollout, whose buffer no longer holds it).
    model = _first_token_model("buffer", _KeepsItsAdvantages)
    model.learn(5 * 32)
    advantages, observations = model.seen  # type: ignore[attr-defined]
    position = observations.argmax(-1)
    assert (position[0] == 2).all() and (position[1] == 0).all()
    assert advantages[0].max() > 0 and not advantages[1].any()
    assert not model.risk_batch


def test_risk_seeking_advantages_credit_the_top_episodes_minus_the_quantile() -> None:
    # Four envs, six steps, three-step episodes rewarded at their last step.
    # env 0: two episodes (1.0, 0.2); env 1: two (0.5, 0.9); env 2: the end of an episode from
    # the last rollout (0.0 carried + 0.7), one episode (0.3), one unfinished; env 3: the end of
    # an episode whose start is unknown (0.95, left out), one episode (0.4), one unfinished.
    starts = np.zeros((6, 4), bool)
    starts[[0, 3], 0] = starts[[0, 3], 1] = True
    starts[[1, 4], 2] = True
    starts[[2, 5], 3] = True
    rewards = np.zeros((6, 4))
    rewards[[2, 5], 0] = [1.0, 0.2]
    rewards[[2, 5], 1] = [0.5, 0.9]
    rewards[[0, 3], 2] = [0.7, 0.3]
    rewards[[1, 4], 3] = [0.95, 0.4]
    last_dones = np.array([True, True, False, False])
    carried = np.array([5.0, 5.0, 0.0, np.nan])  # envs 0 and 1 begin afresh: theirs is unused

    adv, q = risk_seeking_advantages(rewards, starts, last_dones, 0.5, carried)

    # Ended, known returns: 1.0 0.2 0.5 0.9 0.7 0.3 0.4 -> the "higher" median is 0.5.
    assert q == pytest.approx(0.5)
    want = np.zeros((6, 4))
    want[0:3, 0] = 0.5  # 1.0 - q
    want[3:6, 1] = 0.4  # 0.9 - q (the 0.5 episode sits on q: advantage 0)
    want[0, 2] = 0.2  # 0.7 - q, only on its step still in this rollout
    np.testing.assert_allclose(adv, want, atol=1e-6)

    # Nothing ended: no quantile, no gradient.
    adv, q = risk_seeking_advantages(np.ones((2, 1)), np.array([[True], [False]]), [False], 0.05)
    assert np.isnan(q) and not adv.any()


def _three_token_model(**kwargs: Any) -> tuple[RiskSeekingPPO, DummyVecEnv]:
    vec = DummyVecEnv([ThreeTokens] * 4)
    # n_steps=4 with three-step episodes: episodes cross rollouts at every boundary.
    options: dict[str, Any] = {
        "n_steps": 4,
        "batch_size": 16,
        "n_epochs": 2,
        "gamma": 1.0,
        "gae_lambda": 1.0,
        "learning_rate": 1e-3,
        "seed": 0,
        "device": "cpu",
    }
    return RiskSeekingPPO("MlpPolicy", vec, **{**options, **kwargs}), vec


def test_priority_queue_keeps_the_best_distinct_full_episodes_across_rollouts() -> None:
    model, vec = _three_token_model(risk_epsilon=0.1, priority_queue_size=5)
    model.learn(4 * 4 * 6)
    finished = [episode for env in vec.envs for episode in env.log]  # type: ignore[attr-defined]
    best: dict[tuple[int, ...], float] = {}
    for episode in finished:
        best[episode["actions"]] = max(episode["ret"], best.get(episode["actions"], -1.0))
    top = sorted(best.items(), key=lambda kv: -kv[1])[:5]
    assert len(finished) > len(best) > 5  # repeats happened, and more than fit

    queued = model.priority_queue.episodes
    assert [tuple(e.actions.ravel().astype(int)) for e in queued] == [a for a, _ in top]
    assert [e.ret for e in queued] == pytest.approx([r for _, r in top])
    # The trajectories are whole (stitched across rollouts) and as the env saw them.
    logged = {e["actions"]: e for e in finished}
    for e in queued:
        seen = logged[tuple(e.actions.ravel().astype(int))]
        np.testing.assert_array_equal(e.observations, seen["obs"])
        np.testing.assert_array_equal(e.action_masks, seen["masks"])


def test_queue_imitation_raises_the_log_probability_of_queued_sequences() -> None:
    # Same seed, same rollout, same PPO update: the coef 1 agent also imitates its queue.
    lp = {}
    queues = {}
    for coef in (0.0, 1.0):
        model, _ = _three_token_model(
            priority_queue_size=4, priority_queue_coef=coef, n_epochs=4, learning_rate=1e-2
        )
        model.learn(4 * 4)  # one rollout, one train()
        queues[coef] = [e.actions.tobytes() for e in model.priority_queue.episodes]
        with th.no_grad():
            lp[coef] = float(model.queue_log_prob())
    assert queues[0.0] == queues[1.0] and len(queues[1.0]) >= 1
    assert lp[1.0] > lp[0.0] + 0.02, lp  # -0.93 vs -0.99 at this seed


def test_save_and_load_through_loss_rls_safe_loader(tmp_path: Path) -> None:
    config = load_agent_config("risk_seeking_ppo", "tiny")
    assert config.uses_masks and config.min_budget == 8 * 4
    vec = DummyVecEnv([ThreeTokens] * config.n_envs)
    model = make_agent(config, vec, seed=1)
    model.learn(3 * config.n_envs * 8)
    assert isinstance(model, RiskSeekingPPO) and len(model.priority_queue) > 0

    save_agent(model, tmp_path)
    with zipfile.ZipFile(tmp_path / AGENT_FILE) as z:
        data = json.loads(z.read("data"))
    assert data["risk_epsilon"] == 0.05 and data["priority_queue_size"] == 10
    assert data["risk_update"] == "episodes"
    assert not {"priority_queue", "_pending", "risk_batch"} & set(data)  # never pickled

    loaded = load_agent(config, tmp_path / AGENT_FILE, vec)
    assert isinstance(loaded, RiskSeekingPPO)
    options = ("risk_epsilon", "priority_queue_size", "priority_queue_coef", "risk_update")
    assert [getattr(loaded, k) for k in options] == [getattr(model, k) for k in options]
    assert loaded.normalize_advantage is False
    assert loaded.num_timesteps == model.num_timesteps
    for name, weights in model.policy.state_dict().items():
        assert th.equal(weights, loaded.policy.state_dict()[name]), name
    assert len(loaded.priority_queue) == 0  # the queue restarts (documented)
    loaded.learn(config.n_envs * 8, reset_num_timesteps=False)
    assert len(loaded.priority_queue) > 0


class _Boom:
    """Unpickling this creates ``marker`` (see tests/agents/test_load_as_data.py)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_loading_a_poisoned_risk_seeking_agent_runs_no_code(tmp_path: Path) -> None:
    config = load_agent_config("risk_seeking_ppo", "tiny")
    vec = DummyVecEnv([ThreeTokens] * config.n_envs)
    save_agent(make_agent(config, vec), tmp_path)
    path = tmp_path / AGENT_FILE
    marker = tmp_path / "pwned"
    payload = {":serialized:": base64.b64encode(cloudpickle.dumps(_Boom(marker))).decode()}
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    data = json.loads(members["data"])
    poisoned = [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]
    assert poisoned
    members["data"] = json.dumps({**data, **dict.fromkeys(poisoned, payload)}).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    assert isinstance(load_agent(config, path, vec), RiskSeekingPPO)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"risk_epsilon": 0.0}, "agent.risk_epsilon"),
        ({"risk_epsilon": 1.5}, "agent.risk_epsilon"),
        ({"risk_epsilon": True}, "agent.risk_epsilon"),
        ({"priority_queue_size": -1}, "agent.priority_queue_size"),
        ({"priority_queue_size": 2.5}, "agent.priority_queue_size"),
        ({"priority_queue_coef": -0.1}, "agent.priority_queue_coef"),
        ({"risk_epsilon": 0.05, "normalize_advantage": True}, "agent.normalize_advantage"),
        ({"risk_update": "both"}, "agent.risk_update"),
        ({"risk_update": None}, "agent.risk_update"),
    ],
)
def test_bad_options_name_their_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        AgentConfig.from_dict({"algo": "risk_seeking_ppo", **options})
    assert info.value.field == field
    with pytest.raises(ConfigError) as info:
        RiskSeekingPPO("MlpPolicy", DummyVecEnv([Bandit]), device="cpu", **options)
    assert info.value.field == field


def test_the_preset_and_its_keys() -> None:
    config = load_agent_config("risk_seeking_ppo", "digits_noisy")
    assert config.hyperparams["risk_epsilon"] == 0.05 and config.hyperparams["gamma"] == 1.0
    assert config.hyperparams["risk_update"] == "episodes"
    for mode in ("episodes", "buffer"):
        config = AgentConfig.from_dict({"algo": "risk_seeking_ppo", "risk_update": mode})
        assert config.hyperparams["risk_update"] == mode
    with pytest.raises(ConfigError) as info:
        AgentConfig.from_dict({"algo": "risk_seeking_ppo", "risk_epsilonn": 0.1})
    assert info.value.field == "agent.risk_epsilonn"


def test_normalisation_follows_risk_epsilon_unless_given() -> None:
    vec = DummyVecEnv([Bandit])
    assert RiskSeekingPPO("MlpPolicy", vec, device="cpu").normalize_advantage is True
    risky = RiskSeekingPPO("MlpPolicy", vec, risk_epsilon=0.05, device="cpu")
    assert risky.normalize_advantage is False
    plain = RiskSeekingPPO("MlpPolicy", vec, normalize_advantage=False, device="cpu")
    assert plain.normalize_advantage is False
