"""Policy rollouts: the saved agent replayed in the run's MDP, with its view of every step.

:func:`rollout` replays the trained agent (``agent.zip``) greedily (or sampled, seeded) from the
start loss and records, at every step, the loss, the chosen edit, the top actions with their
probabilities (PPO, MaskablePPO: the policy's action distribution) or Q-values (DQN), the value
estimate and the validation score reached. The MDP is rebuilt from the run's configuration with
the run's real evaluator, whose cache is warmed from the ledger: a loss the search already
evaluated costs nothing; a new one is trained (``train=True``, the default) or reported as not
evaluated (``train=False``). :func:`action_usage` counts the edits of seeded stochastic
rollouts (the policy's preferences at the end of training).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from loss_rl.errors import LossRLError, RunError
from loss_rl.inspect._evaluator import InspectEvaluator, inspect_evaluator
from loss_rl.inspect._facts import env_config, load_policy, missing
from loss_rl.inspect._format import format_number, json_ready
from loss_rl.inspect._stats import edit_family
from loss_rl.results import EvalResult
from loss_rl.store import Run

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

    from loss_rl.envs import LossDesignEnv

TOP_ACTIONS = 3


@dataclass
class RolloutStep:
    """One step of a rollout.

    Attributes:
        step: Step index (0-based).
        expression: The loss before the edit (grammar: the partial expression, ``?`` slots).
        score: Its validation score (``None``: unknown or not ok).
        action: The chosen edit (``stop``, ``3:wrap:log``, ``gce:q+``...).
        top: The top actions as ``(name, probability)`` or ``(name, Q-value)``.
        value: The value estimate of the state (PPO: V(s); DQN: max Q).
        candidate: The loss the edit proposed (``None`` for stop / invalid).
        outcome: ``ok``, ``rejected``, ``diverged``, ``error``, ``stop``, ``invalid`` or
            ``build`` (a grammar token that leaves the expression unfinished).
        source: Where its score came from (``trained``, ``cache_key``...; ``None`` if none).
        reason: Why it was rejected / not evaluated.
        next_expression: The loss after the step.
        next_score: Its validation score.
        reward: The MDP reward of the step.
    """

    step: int
    expression: str
    score: float | None
    action: str
    top: list[tuple[str, float]]
    value: float | None
    candidate: str | None
    outcome: str
    source: str | None
    reason: str
    next_expression: str
    next_score: float | None
    reward: float


@dataclass
class Rollout:
    """An episode of the saved policy.

    Attributes:
        algo: The agent's algorithm.
        quantity: ``"probability"`` (PPO, MaskablePPO) or ``"q_value"`` (DQN) in ``top``.
        deterministic: Greedy (``True``) or sampled actions.
        seed: Seed of the env reset and of the action sampling.
        start: The start loss.
        steps: The steps taken.
        trained: Inner trainings the rollout needed (losses the search never evaluated).
    """

    algo: str
    quantity: str
    deterministic: bool
    seed: int
    start: str
    steps: list[RolloutStep] = field(default_factory=list)
    trained: int = 0

    @property
    def final_expression(self) -> str:
        """The loss the episode ended on."""
        return self.steps[-1].next_expression if self.steps else self.start

    @property
    def final_score(self) -> float | None:
        """Its validation score."""
        return self.steps[-1].next_score if self.steps else None

    @property
    def total_reward(self) -> float:
        """The episode's return."""
        return float(sum(s.reward for s in self.steps))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        out = asdict(self)
        out.update(
            final_expression=self.final_expression,
            final_score=self.final_score,
            total_reward=self.total_reward,
        )
        return json_ready(out)

    def to_frame(self) -> pd.DataFrame:
        """One row per step."""
        return pd.DataFrame([asdict(s) for s in self.steps])


def rollout_rows(roll: Rollout) -> list[dict[str, str]]:
    """The rollout as display rows (shared by the CLI table and the HTML report)."""
    fmt = "{:.3f}" if roll.quantity == "probability" else "{:+.3f}"
    rows = []
    for s in roll.steps:
        top = ", ".join(f"{a} {fmt.format(v)}" for a, v in s.top)
        result = s.outcome
        if s.outcome == "ok":
            cached = "" if s.source == "trained" else " (cached)"
            result = f"ok → {format_number(s.next_score)}{cached}"
        elif s.reason:
            result = f"{s.outcome}: {s.reason.split(':', 1)[0]}"
        rows.append(
            {
                "step": str(s.step),
                "loss": s.expression,
                "score": format_number(s.score),
                "edit": s.action,
                f"top-{TOP_ACTIONS} ({roll.quantity})": top,
                "value": format_number(s.value, 3),
                "result": result,
                "reward": f"{s.reward:+.3f}",
            }
        )
    return rows


def _policy_view(
    model: BaseAlgorithm, algo: str, obs: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, float, str]:
    """Per-action probabilities (or Q-values), the value estimate and the quantity's name."""
    policy = model.policy
    with torch.no_grad():
        obs_t, _ = policy.obs_to_tensor(obs)
        if algo == "dqn":
            q = policy.q_net(obs_t)[0].cpu().numpy().astype(float)  # type: ignore[operator]
            return q, float(q.max()), "q_value"
        if algo in ("maskable_ppo", "risk_seeking_ppo"):
            dist = policy.get_distribution(obs_t, action_masks=mask)  # type: ignore[call-arg]
        else:
            dist = policy.get_distribution(obs_t)  # type: ignore[attr-defined]
        probs = dist.distribution.probs[0].cpu().numpy().astype(float)  # type: ignore[attr-defined]
        value = float(policy.predict_values(obs_t)[0, 0])  # type: ignore[attr-defined]
    return probs, value, "probability"


def _choose(
    algo: str, view: np.ndarray, deterministic: bool, rng: np.random.Generator, eps: float
) -> int:
    if algo == "dqn":
        if not deterministic and rng.random() < eps:
            return int(rng.integers(len(view)))
        return int(np.argmax(view))
    if deterministic:
        return int(np.argmax(view))
    p = view / view.sum()
    return int(rng.choice(len(p), p=p))


def _make_env(run: Run, evaluator: InspectEvaluator) -> LossDesignEnv:
    from loss_rl.envs import LossDesignEnv, RunStats

    # An env that does not own its RunStats keeps the injected best across the seeded reset.
    return LossDesignEnv(env_config(run), evaluator=evaluator, run=RunStats())


def _default_start(env: LossDesignEnv) -> str | None:
    from loss_rl.envs import LIBRARY, RANDOM

    if env.generative:  # start points are landmarks: every episode builds from scratch
        return None
    first = env.config.start_points[0]
    return None if first in (LIBRARY, RANDOM) else first


def _episode(
    env: LossDesignEnv,
    model: BaseAlgorithm,
    algo: str,
    *,
    seed: int,
    deterministic: bool,
    start: str | None,
    rng: np.random.Generator,
) -> tuple[str, list[RolloutStep]]:
    eps = float(getattr(model, "exploration_rate", 0.05) or 0.0)
    options = {"start": start} if start is not None else None
    obs, info = env.reset(seed=seed, options=options)
    start_expr = info["expression"]
    steps: list[RolloutStep] = []
    done = False
    while not done:
        mask = env.action_masks()
        view, value, _ = _policy_view(model, algo, obs, mask)
        shown = view if algo == "dqn" else np.where(mask, view, 0.0)
        order = [int(i) for i in np.argsort(-shown, kind="stable")[:TOP_ACTIONS]]
        action = _choose(algo, shown, deterministic, rng, eps)
        # A grammar state is a partial expression (with "?" slots), not yet a loss.
        before, score = env.state_text, env.score
        obs, reward, terminated, truncated, info = env.step(action)
        result: EvalResult | None = info["result"]
        if info["action"] == "stop":
            outcome = "stop"
        elif info["invalid"]:
            outcome = "invalid"
        elif info["candidate"] is None:
            outcome = "build"
        else:
            outcome = result.status.value if result is not None else "?"
        steps.append(
            RolloutStep(
                step=len(steps),
                expression=before,
                score=score,
                action=env.action_name(action),
                top=[(env.action_name(i), float(view[i])) for i in order],
                value=value,
                candidate=info["candidate"],
                outcome=outcome,
                source=result.source if result is not None else None,
                reason=result.reason if result is not None else "",
                next_expression=info["expression"],
                next_score=info["score"],
                reward=float(reward),
            )
        )
        done = bool(terminated or truncated)
    return start_expr, steps


def _inject_best(run: Run, env: LossDesignEnv) -> None:
    """The run's best as the env's run-level best, as the policy saw it at the end of training."""
    best = run.best
    if best and best.get("val_score") is not None:
        # A loss outside this space cannot be injected: the rollout then starts without it.
        with contextlib.suppress(LossRLError):
            env.inject_best(str(best["expression"]), float(best["val_score"]))


def rollout(
    run: Run,
    *,
    seed: int = 0,
    deterministic: bool = True,
    start: str | None = None,
    train: bool = True,
    model: BaseAlgorithm | None = None,
) -> Rollout:
    """One episode of the run's trained agent, with its action distribution at every step.

    Args:
        run: The run.
        seed: Seed of the env reset and (``deterministic=False``) of the action sampling.
        deterministic: Greedy actions (the most probable, or the largest Q-value).
        start: Start loss (default: the config's first start point).
        train: Train losses the search never evaluated (else they are reported as not
            evaluated and cost nothing).
        model: An already loaded agent (default: ``agent.zip``).

    Returns:
        The :class:`Rollout`; the same seed gives the same rollout.

    Raises:
        RunError: without a policy (baseline run, no ``agent.zip``) or an incompatible config.
    """
    algo = str(run.algo)
    model = model if model is not None else load_policy(run)
    if model is None:
        raise RunError(f"{run.path} has no policy to roll out: " + "; ".join(missing(run)))
    evaluator = inspect_evaluator(run, train)
    env = _make_env(run, evaluator)
    _inject_best(run, env)
    rng = np.random.default_rng(seed)
    first, steps = _episode(
        env,
        model,
        algo,
        seed=seed,
        deterministic=deterministic,
        start=start or _default_start(env),
        rng=rng,
    )
    quantity = "q_value" if algo == "dqn" else "probability"
    return Rollout(algo, quantity, deterministic, seed, first, steps, evaluator.trained)


def action_usage(
    run: Run, *, episodes: int = 16, seed: int = 0, model: BaseAlgorithm | None = None
) -> pd.DataFrame:
    """Which edits the saved policy prefers: counts over seeded stochastic rollouts.

    Losses the search never evaluated are not trained here (they count as not evaluated), so
    this costs no training.

    Returns:
        Columns ``edit`` (the action without its tree position), ``count``, ``share``, sorted
        by count; empty without a policy.
    """
    algo = str(run.algo)
    model = model if model is not None else load_policy(run)
    if model is None:
        return pd.DataFrame(columns=["edit", "count", "share"])
    env = _make_env(run, inspect_evaluator(run, train=False))
    _inject_best(run, env)
    rng = np.random.default_rng(seed)
    start = _default_start(env)
    names: list[str] = []
    for i in range(episodes):
        _, steps = _episode(
            env, model, algo, seed=seed + i, deterministic=False, start=start, rng=rng
        )
        names += [edit_family(s.action) for s in steps]
    counts = pd.Series(names, dtype=object).value_counts()
    df = counts.rename_axis("edit").reset_index(name="count")
    df["share"] = df["count"] / max(int(df["count"].sum()), 1)
    return df
