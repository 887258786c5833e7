"""Inspecting a run: what the agent learned (policy rollouts) and what it found (plots, report).

Everything here reads a run folder (:class:`loss_rl.store.Run`) and never writes to its ledger:

- :func:`rollout` replays the trained agent (``agent.zip``) greedily (or sampled, seeded) from
  the start loss and records, at every step, the loss, the chosen edit, the top actions with their
  probabilities (PPO, MaskablePPO: the policy's action distribution) or Q-values (DQN), the value
  estimate and the validation score reached. The MDP is rebuilt from the run's configuration with
  the run's real evaluator, whose cache is warmed from the ledger: a loss the search already
  evaluated costs nothing; a new one is trained (``train=True``, the default) or reported as not
  evaluated (``train=False``).
- :func:`action_usage` counts the edits of seeded stochastic rollouts of the saved policy (its
  preferences at the end of training); :func:`outcomes_over_training` shows how the proposals
  changed during training, from the ledger (the ledger does not record actions, and only the last
  checkpoint of the agent is kept, so per-edit usage *during* training cannot be recovered).
- :func:`episode_rewards` reconstructs the reward of every episode from the ledger (see its
  docstring for what is approximate).
- ``plot_*`` write PNGs under ``<run>/plots/``; :func:`inspect_run` gathers everything into an
  :class:`Inspection` that renders as JSON (:meth:`Inspection.to_dict`) or as a self-contained
  HTML page (:meth:`Inspection.write_html`).
"""

from __future__ import annotations

import base64
import contextlib
import html
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from loss_rl.errors import LossRLError, RunError
from loss_rl.evaluation import EvalResult, Status
from loss_rl.store import LEDGER, Ledger, Run, load_run

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from stable_baselines3.common.base_class import BaseAlgorithm

    from loss_rl.envs import EnvConfig, LossDesignEnv
    from loss_rl.evaluation import Evaluator

AGENT_FILE = "agent.zip"
PLOTS = "plots"
REPORT = "report.html"
TOP_ACTIONS = 3

PLOT_FILES = {
    "best_so_far": "best_so_far.png",
    "loss_curve": "loss_curve.png",
    "scores": "scores.png",
    "rewards": "rewards.png",
}


# ---------------------------------------------------------------------------------------------
# Run facts


def is_baseline(run: Run) -> bool:
    """Whether the run's agent is a non-RL baseline (random, evolution, optuna): no policy."""
    from loss_rl.agents import ALGOS

    return str(run.config.get("agent", {}).get("algo")) not in ALGOS


def missing(run: Run) -> list[str]:
    """What this run lacks for a full inspection, as sentences (empty for a complete run)."""
    from loss_rl._search import CONFIG_VERSION

    notes = []
    version = int(run.config.get("version", 0) or 0)
    if version > CONFIG_VERSION:
        notes.append(
            f"config.yaml was written by a newer loss_rl (config version {version}, this one "
            f"reads {CONFIG_VERSION}): policy inspection skipped; ledger views still shown"
        )
    if run.summary is None:
        notes.append(
            "no summary.json: the run was interrupted (or is still running); counts come from "
            "the ledger, wall time from its timestamps, and there is no verification table"
        )
    elif run.summary.get("status") != "finished":
        notes.append(f"the run's status is {run.summary.get('status')!r}: resume it to finish")
    elif not run.summary.get("verification"):
        notes.append("no verification table in summary.json (verification was skipped)")
    algo = run.config.get("agent", {}).get("algo")
    if is_baseline(run):
        notes.append(f"no policy: {algo} is a baseline searcher, it has no agent.zip to inspect")
    elif policy_file(run) is None:
        notes.append("no agent.zip: the run stopped before its first checkpoint; no policy")
    return notes


def policy_file(run: Run) -> Path | None:
    """The policy a run used: its ``agent.zip``, or for a ``--no-train`` rollout the policy it
    rolled out (``config.init_agent``, e.g. a pretrained one); ``None`` if there is none."""
    if is_baseline(run):
        return None
    own = run.path / AGENT_FILE
    if own.is_file():
        return own
    init = run.config.get("init_agent")
    if init and not run.config.get("train", True) and Path(init).is_file():
        return Path(init)
    return None


def load_policy(run: Run) -> BaseAlgorithm | None:
    """The SB3 agent of ``run`` (see :func:`policy_file`; ``None`` for baselines or without one).

    Raises:
        RunError: if the policy file exists but cannot be loaded.
    """
    path = policy_file(run)
    if path is None:
        return None
    from loss_rl.agents import load_agent

    try:
        return load_agent(str(run.config["agent"]["algo"]), path)
    except LossRLError:
        raise
    except Exception as err:  # a truncated or foreign zip: name the file
        raise RunError(f"{path} cannot be loaded: {err}") from err


def _env_config(run: Run) -> EnvConfig:
    from loss_rl._search import Search

    try:
        return Search.open(run.path).env_config()
    except LossRLError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise RunError(f"{run.path}/config.yaml cannot rebuild the MDP: {err}") from err


def _reward_config(run: Run) -> EnvConfig | None:
    """The MDP config without the task descriptor (no dataset load); ``None`` if unreadable."""
    from loss_rl.envs import EnvConfig
    from loss_rl.presets import parse_env_preset

    try:
        preset = parse_env_preset(run.config["env"], str(run.config.get("env_name", "")))
        space = {**preset.space, "kind": preset.task.kind.value}
        return EnvConfig.from_dict(space, prefix="env.space")
    except (LossRLError, KeyError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Evaluation during inspection: the run's evaluator, its ledger read but never written.


class _ReadOnlyLedger:
    """The run's resolved results for the evaluator's cache; new results are not recorded."""

    def __init__(self, path: Path) -> None:
        led = Ledger(path)
        try:
            self._results = list(led.resolved())
        finally:
            led.close()

    def resolved(self) -> Iterator[EvalResult]:
        return iter(self._results)

    def record(self, results: Sequence[EvalResult], contexts: Any = None) -> None:
        """Inspection never writes to the run's ledger."""


class _InspectEvaluator:
    """Answers from the run's cache; trains unknown losses only if ``train`` (counted).

    Without ``train``, a loss the run never evaluated gets status ``error`` (reason: not
    evaluated), which the MDP treats like a diverged candidate.
    """

    def __init__(self, inner: Evaluator, train: bool) -> None:
        self.inner = inner
        self.train = train
        self.trained = 0

    @property
    def reference_score(self) -> float:
        return self.inner.reference_score

    def evaluate(
        self, candidates: Sequence[Any], context: Sequence[dict[str, Any]] | None = None
    ) -> list[EvalResult]:
        if self.train:
            out = self.inner.evaluate(candidates, context)
            self.trained += sum(r.trained for r in out)
            return out
        out = []
        for expr in candidates:
            hit = self.inner.lookup(expr)
            if hit is not None:
                out.append(replace(hit, expression=str(expr), source="cache_key", seconds=0.0))
                continue
            # Not even checked: the probe checks cost a sizeable fraction of a tiny training.
            reason = "not evaluated in this run (inspection without training)"
            out.append(EvalResult(expr.key, str(expr), None, Status.ERROR, source="none",
                                  reason=reason))  # fmt: skip
        return out


def _evaluator(run: Run, train: bool) -> _InspectEvaluator:
    from loss_rl.evaluation import Evaluator
    from loss_rl.presets import parse_env_preset

    preset = parse_env_preset(run.config["env"], str(run.config.get("env_name", "")))
    inner = Evaluator(
        preset.task,
        seeds=preset.evaluation.seeds,
        data_seed=preset.evaluation.data_seed,
        ledger=_ReadOnlyLedger(run.path / LEDGER),  # type: ignore[arg-type]
    )
    return _InspectEvaluator(inner, train)


# ---------------------------------------------------------------------------------------------
# Policy rollouts


@dataclass
class RolloutStep:
    """One step of a rollout.

    Attributes:
        step: Step index (0-based).
        expression: The loss before the edit.
        score: Its validation score (``None``: unknown or not ok).
        action: The chosen edit (``stop``, ``3:wrap:log``, ``gce:q+``...).
        top: The top actions as ``(name, probability)`` or ``(name, Q-value)``.
        value: The value estimate of the state (PPO: V(s); DQN: max Q).
        candidate: The loss the edit proposed (``None`` for stop / invalid).
        outcome: ``ok``, ``rejected``, ``diverged``, ``error``, ``stop`` or ``invalid``.
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
        out.update(final_expression=self.final_expression, final_score=self.final_score,
                   total_reward=self.total_reward)  # fmt: skip
        return _clean(out)

    def to_frame(self) -> pd.DataFrame:
        """One row per step."""
        return pd.DataFrame([asdict(s) for s in self.steps])


def _policy_view(
    model: BaseAlgorithm, algo: str, obs: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, float, str]:
    """Per-action probabilities (or Q-values), the value estimate and the quantity's name."""
    import torch

    policy = model.policy
    with torch.no_grad():
        obs_t, _ = policy.obs_to_tensor(obs)
        if algo == "dqn":
            q = policy.q_net(obs_t)[0].cpu().numpy().astype(float)  # type: ignore[operator]
            return q, float(q.max()), "q_value"
        if algo == "maskable_ppo":
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


def _make_env(run: Run, evaluator: _InspectEvaluator) -> LossDesignEnv:
    from loss_rl.envs import LossDesignEnv, RunStats

    # An env that does not own its RunStats keeps the injected best across the seeded reset.
    return LossDesignEnv(_env_config(run), evaluator=evaluator, run=RunStats())


def _default_start(env: LossDesignEnv) -> str | None:
    from loss_rl.envs._config import LIBRARY, RANDOM

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
        before, score = str(env.expression), env.score
        obs, reward, terminated, truncated, info = env.step(action)
        result: EvalResult | None = info["result"]
        if info["action"] == "stop":
            outcome = "stop"
        elif info["invalid"]:
            outcome = "invalid"
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
    algo = str(run.config.get("agent", {}).get("algo"))
    model = model if model is not None else load_policy(run)
    if model is None:
        raise RunError(f"{run.path} has no policy to roll out: " + "; ".join(missing(run)))
    evaluator = _evaluator(run, train)
    env = _make_env(run, evaluator)
    _inject_best(run, env)
    rng = np.random.default_rng(seed)
    first, steps = _episode(env, model, algo, seed=seed, deterministic=deterministic,
                            start=start or _default_start(env), rng=rng)  # fmt: skip
    quantity = "q_value" if algo == "dqn" else "probability"
    return Rollout(algo, quantity, deterministic, seed, first, steps, evaluator.trained)


def _edit_family(action: str) -> str:
    """``"3:wrap:log"`` → ``"wrap:log"`` (the edit, whatever the position)."""
    head, _, rest = action.partition(":")
    return rest if head.isdigit() and rest else action


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
    algo = str(run.config.get("agent", {}).get("algo"))
    model = model if model is not None else load_policy(run)
    if model is None:
        return pd.DataFrame(columns=["edit", "count", "share"])
    env = _make_env(run, _evaluator(run, train=False))
    _inject_best(run, env)
    rng = np.random.default_rng(seed)
    start = _default_start(env)
    names: list[str] = []
    for i in range(episodes):
        _, steps = _episode(env, model, algo, seed=seed + i, deterministic=False, start=start,
                            rng=rng)  # fmt: skip
        names += [_edit_family(s.action) for s in steps]
    counts = pd.Series(names, dtype=object).value_counts()
    df = counts.rename_axis("edit").reset_index(name="count")
    df["share"] = df["count"] / max(int(df["count"].sum()), 1)
    return df


# ---------------------------------------------------------------------------------------------
# Ledger views


def best_so_far(run: Run) -> pd.DataFrame:
    """Best validation score after each inner training (columns ``trainings``, ``best``)."""
    df = run.ledger
    trained = df[df["source"] == "trained"].reset_index(drop=True)
    ok = trained["score"].where(trained["status"] == "ok")
    return pd.DataFrame({"trainings": np.arange(1, len(trained) + 1), "best": ok.cummax()})


def reference_score(run: Run) -> float | None:
    """The reference (CE) score: the run's first ok evaluation outside any episode."""
    df = run.ledger
    ref = df[df["episode"].isna() & (df["status"] == "ok")]
    return float(ref["score"].iloc[0]) if not ref.empty else None


def outcomes_over_training(run: Run, parts: int = 4) -> pd.DataFrame:
    """How the proposals changed during the search: the ledger cut into ``parts`` by time.

    Returns:
        Per part: ``proposals``, shares ``new`` (trained), ``cached`` and ``rejected``, the mean
        ok ``score`` of the part's proposals, the ``best`` so far at its end, and ``top_edits``:
        the three edits the agent used most in that part, with their shares (from the ledger's
        ``action`` column; empty for runs recorded before it existed).
    """
    df = run.ledger
    df = df[df["episode"].notna()].reset_index(drop=True)
    rows = []
    best = -math.inf
    for i, part in enumerate(np.array_split(np.arange(len(df)), max(parts, 1))):
        if len(part) == 0:
            continue
        chunk = df.iloc[part]
        n = len(chunk)
        ok = chunk[chunk["status"] == "ok"]["score"]
        trained_ok = chunk[(chunk["status"] == "ok") & (chunk["source"] == "trained")]["score"]
        if not trained_ok.empty:
            best = max(best, float(trained_ok.max()))
        rows.append({
            "part": f"{i + 1}/{parts}",
            "proposals": n,
            "new": float((chunk["source"] == "trained").mean()),
            "cached": float(chunk["source"].str.startswith("cache").mean()),
            "rejected": float((chunk["source"] == "check").mean()),
            "score": float(ok.mean()) if not ok.empty else None,
            "best": best if best > -math.inf else None,
            "top_edits": _top_edits(chunk),
        })  # fmt: skip
    return pd.DataFrame(rows)


def outcomes_recorded_actions(run: Run) -> bool:
    """Whether the run's ledger recorded the edit behind each proposal (ledger schema >= 2)."""
    df = run.ledger
    return "action" in df and bool(df["action"].notna().any())


def _top_edits(chunk: pd.DataFrame, k: int = 3) -> str:
    if "action" not in chunk or chunk["action"].isna().all():
        return ""
    fams = chunk["action"].dropna().map(_edit_family).value_counts(normalize=True).head(k)
    return ", ".join(f"{name} {share:.0%}" for name, share in fams.items())


def episode_rewards(run: Run) -> pd.DataFrame:
    """The return of every episode, reconstructed from the ledger in time order.

    SB3's ``Monitor`` is not used by the search, so rewards are recomputed with the run's reward
    settings (:func:`loss_rl.envs._reward.score_reward`, penalties, novelty bonus, revisit
    penalty), tracking the run-level best through the ledger as the envs did. Approximate:
    masked actions taken anyway (DQN, PPO) and ``stop`` leave no ledger row, so their penalties
    (and zeros) are missing; a later episode's start score is taken from the first start loss.
    An episode is a run of rows of one env whose step keeps increasing.

    Returns:
        Columns ``episode`` (order of start), ``env_index``, ``steps``, ``reward``, ``best``
        (best score reached in the episode); empty when the ledger has no episode rows and for
        baseline searchers (they get no rewards).
    """
    cfg = _reward_config(run)
    df = run.ledger
    rows = df[df["episode"].notna() & df["step"].notna()]
    if cfg is None or rows.empty or is_baseline(run):
        return pd.DataFrame(columns=["episode", "env_index", "steps", "reward", "best"])
    from loss_rl.envs._reward import score_reward

    ref = reference_score(run)
    start_score = None
    first_start = rows[rows["step"] == 0]
    if not first_start.empty and first_start.iloc[0]["status"] == "ok":
        start_score = float(first_start.iloc[0]["score"])
    ref_v = ref if ref is not None else (start_score if start_score is not None else 0.0)
    run_best = ref_v
    episodes: list[dict[str, Any]] = []
    current: dict[int, dict[str, Any]] = {}
    for r in rows.itertuples(index=False):
        env_i = int(r.env_index) if not pd.isna(r.env_index) else -1
        step = int(r.step)
        ok = r.status == "ok" and r.score is not None and not pd.isna(r.score)
        score = float(r.score) if ok else None
        ep = current.get(env_i)
        if ep is None or ep["tag"] != r.episode or step <= ep["last"]:
            ep = {"tag": r.episode, "last": -1, "reward": 0.0, "steps": 0, "env_index": env_i,
                  "known": start_score, "best": start_score}  # fmt: skip
            current[env_i] = ep
            episodes.append(ep)
        ep["last"] = step
        if step == 0:  # the start loss's evaluation: no reward
            ep["known"] = ep["best"] = score
            if score is not None:
                run_best = max(run_best, score)
            continue
        ep["steps"] += 1
        if ok and score is not None:
            best = run_best if cfg.best_scope == "run" else (ep["best"] if ep["best"] is not None
                                                               else ref_v)  # fmt: skip
            prev = ep["known"] if ep["known"] is not None else ref_v
            reward = score_reward(cfg.reward, score, previous=prev, reference=ref_v, best=best,
                                  gain_clip=cfg.gain_clip)  # fmt: skip
            reward += cfg.novelty_bonus if r.source == "trained" else -cfg.revisit_penalty
            ep["known"] = score
            ep["best"] = score if ep["best"] is None else max(ep["best"], score)
            run_best = max(run_best, score)
        else:
            reward = -(cfg.reject_penalty if r.status == "rejected" else cfg.diverge_penalty)
        ep["reward"] += reward
    out = pd.DataFrame(episodes)
    out.insert(0, "episode", np.arange(len(out)))
    return out[["episode", "env_index", "steps", "reward", "best"]]


def rejection_reasons(run: Run) -> pd.Series:
    """Counts of why proposals failed: the check's code (``zero_gradient``...) or the status."""
    df = run.ledger
    bad = df[df["status"] != "ok"]
    codes = [
        (str(reason).split(":", 1)[0] if reason else status)
        for status, reason in zip(bad["status"], bad["reason"], strict=True)
    ]
    return pd.Series(codes, dtype=object).value_counts()


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib's object API with the Agg canvas: no global state, no display needed)


def _figure(width: float = 7.0, height: float = 4.0) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, run: Run, name: str, path: str | Path | None) -> Path:
    out = Path(path) if path is not None else run.path / PLOTS / PLOT_FILES[name]
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def _metric(run: Run) -> str:
    env = run.config.get("env")
    task = env.get("task") if isinstance(env, dict) else None
    return str(task.get("metric", "score")) if isinstance(task, dict) else "score"


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_best_so_far(run: Run, others: Sequence[Run] = (), path: str | Path | None = None) -> Path:
    """Best-so-far validation score against inner trainings, other runs overlaid.

    Args:
        run: The run.
        others: Other runs (of the same task) drawn on the same axes.
        path: Output file (default ``<run>/plots/best_so_far.png``).
    """
    fig = _figure()
    ax = fig.subplots()
    drawn = 0
    for i, r in enumerate([run, *others]):
        curve = best_so_far(r)
        if curve["best"].notna().any():
            algo = r.config.get("agent", {}).get("algo", "?")
            ax.step(curve["trainings"], curve["best"], where="post", lw=2.2 if i == 0 else 1.4,
                    label=f"{r.path.name} ({algo})")  # fmt: skip
            drawn += 1
    ref = reference_score(run)
    if ref is not None:
        ax.axhline(ref, ls="--", color="tab:gray", label="reference (CE)")
    if drawn:
        ax.set_xlabel("inner trainings")
        ax.set_ylabel(f"best validation {_metric(run)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    else:
        _empty(ax, "no inner training finished with an ok score yet")
    ax.set_title(f"best so far: {run.path.name}", fontsize="medium")
    return _save(fig, run, "best_so_far", path)


def _curves(fn: Any, kind: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, loss, gradient) along p_y (classification, w.r.t. z_y) or the residual."""
    import torch

    from loss_rl.expr import TaskKind

    with torch.enable_grad():
        if kind is TaskKind.CLASSIFICATION:
            s = torch.linspace(-7.0, 7.0, 561, dtype=torch.float64)
            z = torch.stack([s, torch.zeros_like(s)], -1).requires_grad_(True)
            value = fn(z, torch.zeros(len(s), dtype=torch.int64))
            (g,) = torch.autograd.grad(value.sum(), z, allow_unused=True)
            grad = torch.zeros_like(z) if g is None else g
            return torch.sigmoid(s).numpy(), value.detach().numpy(), grad[:, 0].numpy()
        r = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64)
        pred = r.clone().requires_grad_(True)
        value = fn(pred, torch.zeros_like(r))
        (g,) = torch.autograd.grad(value.sum(), pred, allow_unused=True)
        grad = torch.zeros_like(pred) if g is None else g
        return r.numpy(), value.detach().numpy(), grad.numpy()


def plot_loss_curve(run: Run, path: str | Path | None = None) -> Path:
    """The best loss and its gradient against p_y (or the residual), next to known losses.

    Classification: CE, MAE and GCE (q = 0.7), two classes, target 0, logits ``(s, 0)``, so
    ``p_y = sigmoid(s)``; the gradient is with respect to the true-class logit. Regression: MSE,
    L1 and Huber against the residual.
    """
    from loss_rl.expr import TaskKind, compile_loss, known_loss, parse, task_kind

    fig = _figure(10.0, 4.0)
    ax_l, ax_g = fig.subplots(1, 2)
    best = run.best
    if not best:
        _empty(ax_l, "no loss with an ok score yet")
        _empty(ax_g, "")
        return _save(fig, run, "loss_curve", path)
    expr = parse(str(best["expression"]))
    kind = task_kind(expr) or TaskKind.CLASSIFICATION
    refs = ("ce", "mae", "gce") if kind is TaskKind.CLASSIFICATION else ("mse", "l1", "huber")
    label = str(expr) if len(str(expr)) <= 45 else str(expr)[:42] + "..."
    x, y, g = _curves(compile_loss(expr, kind), kind)
    ax_l.plot(x, y, lw=2.4, color="tab:red", label=f"found: {label}")
    ax_g.plot(x, g, lw=2.4, color="tab:red", label="found")
    # Axis limits from the references and from the found loss away from p_y → 0, where losses
    # such as -log_p_y / p_y blow up and would flatten every other curve.
    window = x >= 0.05 if kind is TaskKind.CLASSIFICATION else np.ones_like(x, dtype=bool)
    seen_l, seen_g = [y[window]], [g[window]]
    for name, style in zip(refs, ("--", ":", "-."), strict=True):
        _, ry, rg = _curves(compile_loss(known_loss(name), kind), kind)
        ax_l.plot(x, ry, style, color="tab:gray", label=name.upper())
        ax_g.plot(x, rg, style, color="tab:gray", label=name.upper())
        seen_l.append(ry[window])
        seen_g.append(rg[window])
    xlabel = "true-class probability $p_y$" if kind is TaskKind.CLASSIFICATION else "residual"
    glabel = (r"$\partial \ell / \partial z_y$" if kind is TaskKind.CLASSIFICATION
              else r"$\partial \ell / \partial \hat y$")  # fmt: skip
    for ax, ylabel, seen in ((ax_l, "loss", seen_l), (ax_g, glabel, seen_g)):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        values = np.concatenate(seen)
        values = values[np.isfinite(values)]
        if values.size:
            lo, hi = float(values.min()), float(values.max())
            pad = 0.08 * max(hi - lo, 1e-6)
            ax.set_ylim(lo - pad, hi + pad)
    fig.suptitle(f"best loss of {run.path.name}: val {_num(best.get('val_score'))}",
                 fontsize="medium")  # fmt: skip
    return _save(fig, run, "loss_curve", path)


def plot_scores(run: Run, path: str | Path | None = None) -> Path:
    """Distribution of the validation scores of trained losses, and of rejection reasons."""
    fig = _figure(10.0, 4.0)
    ax_s, ax_r = fig.subplots(1, 2)
    df = run.ledger
    ok = df[(df["source"] == "trained") & (df["status"] == "ok")]["score"].dropna()
    if len(ok):
        ax_s.hist(ok, bins=min(30, max(5, len(ok) // 2)), color="tab:blue", alpha=0.8)
        ref = reference_score(run)
        if ref is not None:
            ax_s.axvline(ref, ls="--", color="tab:gray", label="reference (CE)")
            ax_s.legend(fontsize="small")
        ax_s.set_xlabel("validation score")
        ax_s.set_ylabel("trained losses")
        ax_s.grid(alpha=0.3)
    else:
        _empty(ax_s, "no trained loss with an ok score")
    ax_s.set_title("scores of trained losses", fontsize="medium")
    reasons = rejection_reasons(run)
    if len(reasons):
        ax_r.barh(list(reasons.index)[::-1], list(reasons.values)[::-1], color="tab:orange")
        ax_r.set_xlabel("proposals (incl. repeats answered from the cache)")
        ax_r.grid(alpha=0.3, axis="x")
    else:
        _empty(ax_r, "no rejected or diverged proposal")
    ax_r.set_title("why proposals failed", fontsize="medium")
    return _save(fig, run, "scores", path)


def plot_rewards(run: Run, path: str | Path | None = None) -> Path:
    """Return per episode (reconstructed, see :func:`episode_rewards`) with a moving average."""
    fig = _figure()
    ax = fig.subplots()
    eps = episode_rewards(run)
    if len(eps):
        x, y = eps["episode"].to_numpy(), eps["reward"].to_numpy(dtype=float)
        ax.plot(x, y, ".", alpha=0.5, color="tab:blue", label="episode return")
        w = max(1, len(y) // 10)
        ma = pd.Series(y).rolling(w, min_periods=1).mean()
        ax.plot(x, ma, color="tab:red", lw=2, label=f"moving average ({w})")
        ax.set_xlabel("episode (order of start)")
        ax.set_ylabel("return (reconstructed from the ledger)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    elif is_baseline(run):
        algo = run.config.get("agent", {}).get("algo")
        _empty(ax, f"no rewards: {algo} is a baseline searcher, not an RL agent")
    else:
        _empty(ax, "no episode in the ledger")
    ax.set_title("reward per episode", fontsize="medium")
    return _save(fig, run, "rewards", path)


def plot_all(run: Run, others: Sequence[Run] = ()) -> dict[str, Path]:
    """Write every plot under ``<run>/plots/``; returns name → path."""
    return {
        "best_so_far": plot_best_so_far(run, others),
        "loss_curve": plot_loss_curve(run),
        "scores": plot_scores(run),
        "rewards": plot_rewards(run),
    }


# ---------------------------------------------------------------------------------------------
# The whole inspection


@dataclass
class Inspection:
    """Everything ``loss-rl inspect`` shows about a run.

    Attributes:
        run: The run.
        summary: Run facts (JSON-ready): task, agent, budget, counts, timing, best, top-K,
            verification.
        rollout: The greedy rollout of the policy (``None`` without one, or when skipped).
        usage: Edit usage of the policy (:func:`action_usage`).
        outcomes: Proposals over training (:func:`outcomes_over_training`).
        episodes: Reconstructed episode returns (:func:`episode_rewards`).
        plots: Plot name → PNG path.
        missing: What could not be shown, and why.
    """

    run: Run
    summary: dict[str, Any]
    rollout: Rollout | None
    usage: pd.DataFrame
    outcomes: pd.DataFrame
    episodes: pd.DataFrame
    plots: dict[str, Path]
    missing: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable summary (what ``loss-rl inspect --json`` prints)."""
        eps = self.episodes
        return _clean({
            **self.summary,
            "rollout": self.rollout.to_dict() if self.rollout is not None else None,
            "action_usage": self.usage.to_dict(orient="records"),
            "outcomes_over_training": self.outcomes.to_dict(orient="records"),
            "episodes": {
                "count": len(eps),
                "mean_return": float(eps["reward"].mean()) if len(eps) else None,
                "returns": [float(v) for v in eps["reward"]] if len(eps) else [],
            },
            "plots": {k: str(v) for k, v in self.plots.items()},
            "missing": self.missing,
        })  # fmt: skip

    def write_html(self, path: str | Path | None = None) -> Path:
        """Write the self-contained report (images embedded); default ``<run>/report.html``."""
        out = Path(path) if path is not None else self.run.path / REPORT
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(_render_html(self), encoding="utf-8")
        return out


def run_summary(run: Run, top: int = 5) -> dict[str, Any]:
    """Task, agent, budget, counts, timing, best and top-``top`` losses of a run."""
    s = run.summary or {}
    counts = run.counts
    wall = s.get("wall_seconds")
    estimated = False
    if wall is None:
        created = run.ledger["created"].dropna()
        wall = float(created.max() - created.min()) if len(created) > 1 else None
        estimated = True
    resolved = s.get("resolved_without_training")
    if resolved is None and counts["proposed"]:
        resolved = (counts["cached"] + counts["rejected"]) / counts["proposed"]
    env = run.config.get("env", {})
    task = env.get("task", {}) if isinstance(env, dict) else {}
    topk = run.top(top)
    return _clean({
        "run": str(run.path),
        "name": run.path.name,
        "status": s.get("status", "interrupted (no summary.json)"),
        "env": run.config.get("env_name"),
        "task": env.get("description") if isinstance(env, dict) else None,
        "dataset": task.get("dataset", {}).get("name") if isinstance(task, dict) else None,
        "metric": task.get("metric") if isinstance(task, dict) else None,
        "agent": run.config.get("agent", {}).get("algo"),
        "budget": run.config.get("budget"),
        "evaluations": counts,
        "wall_seconds": wall,
        "wall_seconds_estimated": estimated,
        "evals_per_second": (counts["trained"] / wall) if wall else None,
        "resolved_without_training": resolved,
        "reference_score": reference_score(run),
        "best": run.best,
        "top": [
            {"rank": i + 1, "expression": r.expression, "score": r.score, "fidelity": r.fidelity}
            for i, r in enumerate(topk.itertuples(index=False))
        ],
        "verification": s.get("verification"),
    })  # fmt: skip


def inspect_run(
    run: Run | str | Path,
    others: Sequence[Run | str | Path] = (),
    *,
    top: int = 5,
    rollout_policy: bool = True,
    seed: int = 0,
    usage_episodes: int = 8,
    train: bool = True,
) -> Inspection:
    """Gather the summary, policy inspection and plots of a run.

    Args:
        run: The run (or its folder).
        others: Runs to overlay on the best-so-far plot (runs of another env are skipped, with
            a note).
        top: How many of the best losses to list.
        rollout_policy: Roll the policy out (greedy rollout and edit usage).
        seed: Seed of the rollouts.
        usage_episodes: Stochastic episodes behind the edit usage.
        train: Let the greedy rollout train losses the search never evaluated.

    Raises:
        RunError: if ``run`` is not a run folder or its ledger is from a newer loss_rl.
    """
    run = run if isinstance(run, Run) else load_run(run)
    notes = missing(run)
    overlay = []
    for o in others:
        other = o if isinstance(o, Run) else load_run(o)
        if other.config.get("env") != run.config.get("env"):
            notes.append(f"{other.path} searched another task ({other.config.get('env_name')}): "
                         "not overlaid")  # fmt: skip
        else:
            overlay.append(other)
    roll: Rollout | None = None
    usage = pd.DataFrame(columns=["edit", "count", "share"])
    compatible = not any("newer loss_rl" in n for n in notes)
    if not rollout_policy:
        notes.append("policy rollout skipped (--no-rollout)")
    elif compatible and policy_file(run) is not None:
        try:
            model = load_policy(run)
            roll = rollout(run, seed=seed, train=train, model=model)
            usage = action_usage(run, episodes=usage_episodes, seed=seed, model=model)
        except LossRLError as err:
            notes.append(f"policy inspection failed: {err}")
    if roll is not None and not outcomes_recorded_actions(run):
        notes.append(
            "this run's ledger predates the `action` column: edit usage during training is not "
            "recorded, only the final policy's usage is shown"
        )
    return Inspection(
        run=run,
        summary=run_summary(run, top),
        rollout=roll,
        usage=usage,
        outcomes=outcomes_over_training(run),
        episodes=episode_rewards(run),
        plots=plot_all(run, overlay),
        missing=notes,
    )


def report_html(run: Run, path: str | Path | None = None, **kwargs: Any) -> Path:
    """Inspect ``run`` (see :func:`inspect_run`) and write its self-contained HTML report."""
    return inspect_run(run, **kwargs).write_html(path)


# ---------------------------------------------------------------------------------------------
# Rendering helpers


def _clean(obj: Any) -> Any:
    """JSON-ready copy: numpy scalars to Python, NaN/inf to ``None``, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def rollout_rows(roll: Rollout) -> list[dict[str, str]]:
    """The rollout as display rows (shared by the CLI table and the HTML report)."""
    fmt = "{:.3f}" if roll.quantity == "probability" else "{:+.3f}"
    rows = []
    for s in roll.steps:
        top = ", ".join(f"{a} {fmt.format(v)}" for a, v in s.top)
        result = s.outcome
        if s.outcome == "ok":
            result = f"ok → {_num(s.next_score)}" + ("" if s.source == "trained" else " (cached)")
        elif s.reason:
            result = f"{s.outcome}: {s.reason.split(':', 1)[0]}"
        rows.append({
            "step": str(s.step), "loss": s.expression, "score": _num(s.score),
            "edit": s.action, f"top-{TOP_ACTIONS} ({roll.quantity})": top,
            "value": _num(s.value, 3), "result": result, "reward": f"{s.reward:+.3f}",
        })  # fmt: skip
    return rows


def _html_table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p class='none'>none</p>"
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_num(r.get(c)))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}code,.math{font-family:ui-monospace,Menlo,Consolas,monospace}
.best{font-size:1.15em;background:#eef7ee;padding:.6em;border-left:4px solid #2a2}
.missing li{color:#a60}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>"


def _render_html(ins: Inspection) -> str:
    s = ins.summary
    e = html.escape
    best = s.get("best") or {}
    facts = [
        ("run", s["run"]), ("status", s["status"]), ("env / task", f"{s['env']}: {s['task']}"),
        ("agent", s["agent"]), ("budget", s["budget"]),
        ("inner trainings", s["evaluations"]["trained"]),
        ("proposals", s["evaluations"]["proposed"]),
        ("wall time (s)", _num(s["wall_seconds"], 1) + (" (estimated from the ledger)"
                                                        if s["wall_seconds_estimated"] else "")),
        ("evaluations / s", _num(s["evals_per_second"], 2)),
        ("resolved without training", _num(s["resolved_without_training"], 3)),
        ("reference (CE) score", _num(s["reference_score"])),
    ]  # fmt: skip
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>loss_rl report: {e(s['name'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>loss_rl run <code>{e(s['name'])}</code></h1>",
    ]
    if best:
        parts.append(
            f"<p class='best'>Best loss: <span class='math' id='best-loss'>"
            f"{e(str(best.get('expression')))}</span> (validation {e(_num(best.get('val_score')))})"
            "</p>"
        )
    else:
        parts.append("<p class='best'>No loss with an ok score yet.</p>")
    if ins.missing:
        parts.append("<h2>What is missing</h2><ul class='missing'>")
        parts += [f"<li>{e(n)}</li>" for n in ins.missing]
        parts.append("</ul>")
    parts.append("<h2>Run summary</h2>" + _html_table([{"": k, "value": v} for k, v in facts]))
    parts.append(f"<h2>Top {len(s['top'])} losses (validation)</h2>" + _html_table(s["top"]))
    ver = s.get("verification")
    if ver:
        cols = ["loss", "expression", "mean", "ci_low", "ci_high", "diff_vs_ce", "p_vs_ce", "n"]
        parts.append(f"<h2>Verification ({e(str(ver.get('steps')))} steps, "
                     f"{len(ver.get('seeds') or [])} fresh seeds, test {e(str(ver.get('metric')))})"
                     "</h2>" + _html_table(ver.get("table", []), cols))  # fmt: skip
    if ins.rollout is not None:
        r = ins.rollout
        parts.append(f"<h2>Policy: {'greedy' if r.deterministic else 'sampled'} rollout "
                     f"({e(r.algo)}, seed {r.seed})</h2><p>start <code>{e(r.start)}</code> → "
                     f"<code>{e(r.final_expression)}</code> (score {e(_num(r.final_score))}, "
                     f"return {r.total_reward:+.3f}, {r.trained} new trainings)</p>"
                     + _html_table(rollout_rows(r)))  # fmt: skip
        parts.append("<h2>Edit usage of the final policy</h2>"
                     + _html_table(ins.usage.to_dict(orient="records")))  # fmt: skip
    parts.append("<h2>Proposals over training</h2>"
                 + _html_table(ins.outcomes.to_dict(orient="records")))  # fmt: skip
    parts.append("<h2>Plots</h2>")
    for name, path in ins.plots.items():
        parts.append(f"<h3>{e(name.replace('_', ' '))}</h3>{_img(path)}")
    parts.append("</body></html>")
    return "\n".join(parts)


__all__ = [
    "Inspection",
    "Rollout",
    "RolloutStep",
    "action_usage",
    "best_so_far",
    "episode_rewards",
    "inspect_run",
    "load_policy",
    "missing",
    "outcomes_over_training",
    "plot_all",
    "plot_best_so_far",
    "plot_loss_curve",
    "plot_rewards",
    "plot_scores",
    "report_html",
    "rollout",
    "run_summary",
]
