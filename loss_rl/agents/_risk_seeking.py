"""Risk-seeking policy gradient and priority-queue training on top of MaskablePPO.

For an MDP whose episode builds one candidate (a loss expression, token by token) and whose only
reward is the candidate's score at the terminal step, the quantity to maximise is the *best*
return found, not the mean one. Deep Symbolic Regression (Petersen et al., "Deep symbolic
regression: Recovering mathematical expressions from data via risk-seeking policy gradients",
ICLR 2021) does that with two devices, both here:

- **Risk-seeking policy gradient.** After each rollout, ``q`` is the ``(1 - ε)``-quantile of the
  returns of the episodes that ended in it; the episodes with return ``R >= q`` are trained on
  with the advantage ``R - q``, the others not at all (advantages are never normalised: a
  normalisation would give the discarded episodes negative advantages and undo the objective).
- **Priority-queue training** (Abolafia et al., "Neural program synthesis with priority queue
  training", 2018; used as a DSR variant). The ``k`` best distinct complete episodes of the run
  are kept, and each ``train()`` adds an imitation term ``-coef × mean log π(a | s, mask)`` over
  their steps.

Both are generic over any masked env (sb3-contrib's ``action_masks()`` convention) and read only
the rollout buffer after :meth:`MaskablePPO.collect_rollouts`.

Episodes that cross rollouts: SB3 keeps only the current rollout in its buffer, but an episode
(~5-12 tokens) often starts in one rollout and ends in the next. Each env's unfinished episode is
carried over (its reward so far, its observations, masks, actions and behaviour log-probabilities),
so an episode that ends in this rollout has its full return and its full trajectory. What the
risk-seeking gradient is computed on is ``risk_update``:

- ``"episodes"`` (the default, as in DSR): the complete stitched trajectories of the selected
  episodes. ``train()`` first runs MaskablePPO's update with the actor frozen and zero
  advantages, so it fits only the critic (kept for SB3's time-limit bootstrap and its logs);
  then ``n_epochs`` full-batch steps of the PPO clipped surrogate over every step of the selected
  episodes, ``ratio = π(a | s) / π_behaviour(a | s)`` with the log-probability recorded when the
  step was collected, advantage ``R - q`` on all of an episode's steps, minus ``ent_coef ×`` the
  mean entropy over those steps (DSR's entropy bonus, on the top episodes only).
- ``"buffer"``: the advantages are written into SB3's rollout buffer and MaskablePPO's own update
  trains on them. Steps of an episode that were in the earlier rollout were trained on already,
  with advantage 0, as an unfinished episode, and never get theirs: those are the episode's first
  tokens (for an expression, its root operator). Kept for comparison.

Returns are sums of the buffer's rewards (γ = 1); SB3 adds ``γ · V(s_T)`` to the last reward of
an episode cut by a time limit, so such an episode's return includes that estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from loss_rl.errors import ConfigError

Observation = np.ndarray | dict[str, np.ndarray]
"""A batch of observations: an array, or one array per key of a ``Dict`` space."""


RISK_UPDATES = ("episodes", "buffer")
"""Values of ``risk_update``: train on the selected complete episodes, or on the rollout buffer."""


def check_risk_options(
    risk_epsilon: Any,
    priority_queue_size: Any,
    priority_queue_coef: Any,
    normalize_advantage: Any,
    risk_update: Any = "episodes",
) -> None:
    """Validate the options :class:`RiskSeekingPPO` adds to MaskablePPO.

    Args:
        risk_epsilon: ``None`` (off) or the fraction of best episodes trained on, in ``(0, 1]``.
        priority_queue_size: Episodes kept in the priority queue (``0`` = off).
        priority_queue_coef: Weight of the imitation term, ``>= 0``.
        normalize_advantage: ``None`` (decided by ``risk_epsilon``) or a bool.
        risk_update: ``"episodes"`` or ``"buffer"`` (see the module docstring).

    Raises:
        ConfigError: naming the field (``agent.<option>``) and what it accepts.
    """
    if risk_epsilon is not None and not (_is_real(risk_epsilon) and 0 < risk_epsilon <= 1):
        raise ConfigError(
            f"must be null (plain MaskablePPO) or a number in (0, 1], the fraction of best "
            f"episodes trained on (DSR uses 0.05); got {risk_epsilon!r}",
            field="agent.risk_epsilon",
        )
    if not (isinstance(risk_update, str) and risk_update in RISK_UPDATES):
        raise ConfigError(
            f"must be 'episodes' (the risk-seeking gradient on the complete selected episodes, "
            f"as in DSR) or 'buffer' (on the steps still in the rollout buffer); "
            f"got {risk_update!r}",
            field="agent.risk_update",
        )
    if isinstance(priority_queue_size, bool) or not isinstance(priority_queue_size, int):
        raise ConfigError(
            f"must be an integer >= 0 (0 = no queue), got {priority_queue_size!r}",
            field="agent.priority_queue_size",
        )
    if priority_queue_size < 0:
        raise ConfigError(
            f"must be an integer >= 0 (0 = no queue), got {priority_queue_size!r}",
            field="agent.priority_queue_size",
        )
    if not (_is_real(priority_queue_coef) and priority_queue_coef >= 0):
        raise ConfigError(
            f"must be a finite number >= 0, got {priority_queue_coef!r}",
            field="agent.priority_queue_coef",
        )
    if normalize_advantage is not None and not isinstance(normalize_advantage, bool):
        raise ConfigError(
            f"must be true or false, got {normalize_advantage!r}",
            field="agent.normalize_advantage",
        )
    if risk_epsilon is not None and normalize_advantage:
        raise ConfigError(
            "must be false (or left out) with risk_epsilon: normalising the risk-seeking "
            "advantages would give the discarded episodes negative advantages",
            field="agent.normalize_advantage",
        )


def _is_real(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return (
        not isinstance(value, bool) and isinstance(value, (int, float)) and bool(np.isfinite(value))
    )


@dataclass(frozen=True)
class _Segment:
    """One env's consecutive steps ``[start, stop)`` of one episode inside a rollout.

    Attributes:
        env: The env's index.
        start: First step in the rollout.
        stop: One past the last step.
        begins: Whether the episode starts at ``start`` (else it began in an earlier rollout).
        ends: Whether the episode ends at ``stop - 1`` (else it goes on in the next rollout).
    """

    env: int
    start: int
    stop: int
    begins: bool
    ends: bool


def _segments(episode_starts: np.ndarray, last_dones: np.ndarray) -> list[_Segment]:
    """Cut a rollout into per-env episode segments.

    Args:
        episode_starts: ``(n_steps, n_envs)``; true where a step is an episode's first.
        last_dones: ``(n_envs,)``; whether each env's last step in the rollout ended its episode.
    """
    n_steps, n_envs = episode_starts.shape
    starts = episode_starts.astype(bool)
    # A step ends its episode iff the next one starts a new episode.
    dones = np.concatenate([starts[1:], np.asarray(last_dones, bool).reshape(1, n_envs)])
    out = []
    for env in range(n_envs):
        start = 0
        for t in range(n_steps):
            if dones[t, env] or t == n_steps - 1:
                out.append(
                    _Segment(env, start, t + 1, bool(starts[start, env]), bool(dones[t, env]))
                )
                start = t + 1
    return out


def risk_seeking_advantages(
    rewards: np.ndarray,
    episode_starts: np.ndarray,
    last_dones: np.ndarray,
    epsilon: float,
    carried: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Risk-seeking advantages of one rollout (Petersen et al., ICLR 2021, eq. 3 with γ = 1).

    ``q`` is the ``(1 - ε)``-quantile of the returns of the episodes that end in the rollout
    (``numpy.quantile(..., method="higher")``, as in the authors' code, so ``q`` is one of the
    returns); each step of such an episode with ``R >= q`` gets ``R - q``, every other step
    (worse episodes, and episodes that do not end in the rollout) ``0``.

    Args:
        rewards: ``(n_steps, n_envs)`` rewards as in SB3's rollout buffer.
        episode_starts: ``(n_steps, n_envs)``; true where a step is an episode's first.
        last_dones: ``(n_envs,)``; whether each env's last step ended its episode.
        epsilon: Fraction of best episodes trained on, in ``(0, 1]``.
        carried: ``(n_envs,)`` reward summed so far by each env's episode running when the
            rollout began (from earlier rollouts); ``NaN`` where unknown, which leaves that
            episode out (its return is unknown). ``None``: all unknown.

    Returns:
        The advantages, shaped like ``rewards``, and ``q`` (``NaN`` if no episode ended).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    n_envs = rewards.shape[1]
    carry = np.full(n_envs, np.nan) if carried is None else np.asarray(carried, np.float64)
    advantages = np.zeros_like(rewards, dtype=np.float32)
    ended: list[tuple[_Segment, float]] = []
    for seg in _segments(np.asarray(episode_starts), np.asarray(last_dones)):
        if not seg.ends:
            continue
        before = 0.0 if seg.begins else carry[seg.env]
        ret = before + float(rewards[seg.start : seg.stop, seg.env].sum())
        if np.isfinite(ret):
            ended.append((seg, ret))
    if not ended:
        return advantages, float("nan")
    q = _risk_quantile([ret for _, ret in ended], epsilon)
    for seg, ret in ended:
        if ret >= q:
            advantages[seg.start : seg.stop, seg.env] = ret - q
    return advantages, q


def _risk_quantile(returns: list[float], epsilon: float) -> float:
    """The ``(1 - ε)``-quantile of ``returns`` (non-empty), one of them as in the DSR code."""
    return float(np.quantile(returns, 1.0 - epsilon, method="higher"))


@dataclass
class QueuedEpisode:
    """A complete episode kept by the priority queue.

    Attributes:
        ret: Its return (sum of rewards, γ = 1).
        actions: ``(T, action_dim)`` actions as stored in SB3's rollout buffer.
        observations: ``(T, *obs_shape)`` (or one such array per key of a ``Dict`` space).
        action_masks: ``(T, mask_dims)``; the masks the actions were sampled under.
    """

    ret: float
    actions: np.ndarray
    observations: Observation
    action_masks: np.ndarray

    @property
    def key(self) -> bytes:
        """Identity of the episode: its action sequence (the same sequence counts once)."""
        return np.ascontiguousarray(self.actions).tobytes()


class PriorityQueue:
    """The ``size`` best distinct complete episodes seen so far, best first.

    An action sequence seen again keeps its best return (a stochastic reward can differ between
    visits); a new episode whose return only ties the worst kept one does not replace it.

    Args:
        size: Most episodes kept (``0`` keeps none).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: dict[bytes, QueuedEpisode] = {}

    def __len__(self) -> int:
        return len(self._items)

    @property
    def episodes(self) -> list[QueuedEpisode]:
        """The kept episodes, best return first."""
        return sorted(self._items.values(), key=lambda e: -e.ret)

    def push(self, episode: QueuedEpisode) -> bool:
        """Offer ``episode``; returns whether the queue changed."""
        if self.size == 0 or not np.isfinite(episode.ret):
            return False
        key = episode.key
        old = self._items.get(key)
        if old is not None:
            if episode.ret <= old.ret:
                return False
            self._items[key] = episode
            return True
        if len(self._items) >= self.size:
            worst = min(self._items, key=lambda k: self._items[k].ret)
            if episode.ret <= self._items[worst].ret:
                return False
            del self._items[worst]
        self._items[key] = episode
        return True


@dataclass
class RiskEpisode:
    """A complete episode selected by the risk-seeking quantile (``risk_update="episodes"``).

    Attributes:
        ret: Its return (sum of rewards, γ = 1).
        advantage: ``ret - q``, shared by all its steps.
        observations: ``(T, *obs_shape)`` (or one such array per key of a ``Dict`` space).
        action_masks: ``(T, mask_dims)``; the masks the actions were sampled under.
        actions: ``(T, action_dim)`` actions as stored in SB3's rollout buffer.
        log_probs: ``(T,)`` log-probabilities of the actions under the policy that sampled
            them (the PPO ratio's denominator; a step from an earlier rollout was sampled by the
            policy of that rollout).
    """

    ret: float
    advantage: float
    observations: Observation
    action_masks: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray


@dataclass(frozen=True)
class _Chunk:
    """One episode's steps inside one rollout (copied: the buffer is reused)."""

    observations: Observation
    action_masks: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray


@dataclass
class _Pending:
    """An env's episode still running at the end of a rollout.

    Attributes:
        ret: Reward summed so far; ``NaN`` if some of its steps never reached a buffer.
        chunks: Its steps per rollout so far, kept when a whole trajectory is needed.
    """

    ret: float = float("nan")
    chunks: list[_Chunk] = field(default_factory=list)


def _take(obs: Observation, index: Any) -> Observation:
    """``obs[index]``, per key for dict observations (copied: the buffer is reused)."""
    if isinstance(obs, Mapping):
        return {k: np.array(v[index]) for k, v in obs.items()}
    return np.array(obs[index])


def _concat(parts: list[Observation]) -> Observation:
    """Concatenate observation chunks along time (per key for dict observations)."""
    first = parts[0]
    if isinstance(first, Mapping):
        return {k: np.concatenate([p[k] for p in parts]) for k in first}  # type: ignore[index]
    return np.concatenate(parts)  # type: ignore[arg-type]


class RiskSeekingPPO(MaskablePPO):
    """MaskablePPO with a risk-seeking policy gradient and priority-queue training (DSR).

    With ``risk_epsilon=None`` and ``priority_queue_size=0`` this is MaskablePPO exactly. See the
    module docstring for the two devices and for episodes that span rollouts.

    With ``risk_update="episodes"`` each ``train()`` runs MaskablePPO's epochs with the actor's
    parameters frozen (the buffer's advantages are 0: only the critic learns there, and Adam
    does not move the actor on its momentum alone), then ``n_epochs`` risk-seeking steps, each
    over every step of the episodes selected from the last rollout (about ``ε ×`` the episodes
    that ended in it: one small batch). The clip range is MaskablePPO's; ``target_kl`` applies to
    MaskablePPO's epochs only (DSR has no early stop). With ``"buffer"`` the risk-seeking
    advantages go through MaskablePPO's own update, KL early stop included.

    The priority-queue imitation runs as ``n_epochs`` further gradient steps at the end of each
    ``train()``, each over every step of the queue (``k`` episodes of a few dozen steps). All
    steps share the policy's Adam optimizer (and its moment estimates), so
    ``priority_queue_coef`` sets the imitation gradient's size relative to the policy gradient's.

    Saving keeps the options (plain JSON in ``agent.zip``) and the weights; the priority queue,
    the unfinished episodes and the selected episodes are not saved: a loaded agent starts with
    an empty queue and refills it from its first rollouts (a resumed run's best candidates are
    in its ledger).

    Args:
        risk_epsilon: ``None`` (off) or the fraction ``ε`` of best episodes trained on.
        priority_queue_size: ``k``, the distinct best episodes kept (``0`` = off).
        priority_queue_coef: Weight of the imitation term ``-coef × mean log π``.
        risk_update: ``"episodes"`` (default, DSR) trains the risk-seeking gradient on the
            complete selected episodes, ``"buffer"`` on their steps still in the rollout buffer.
            Ignored without ``risk_epsilon``.
        normalize_advantage: ``None`` = true without ``risk_epsilon``, false with it; true with
            ``risk_epsilon`` is rejected.
        policy: As :class:`sb3_contrib.MaskablePPO`, and so are all arguments not listed here.
        env: The (masked) vectorized env.

    Raises:
        ConfigError: for an invalid option (a ``ValueError``), naming it.
    """

    # Runtime state, rebuilt empty on load: never pickled into agent.zip (loss_rl refuses to
    # unpickle agent files).
    _RUNTIME: ClassVar[tuple[str, ...]] = ("priority_queue", "_pending", "risk_batch")

    def __init__(
        self,
        policy: str | type[MaskableActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int | None = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool | None = None,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        risk_epsilon: float | None = None,
        priority_queue_size: int = 0,
        priority_queue_coef: float = 0.0,
        risk_update: str = "episodes",
        _init_setup_model: bool = True,
    ) -> None:
        check_risk_options(
            risk_epsilon, priority_queue_size, priority_queue_coef, normalize_advantage, risk_update
        )
        self.risk_epsilon = None if risk_epsilon is None else float(risk_epsilon)
        self.priority_queue_size = int(priority_queue_size)
        self.priority_queue_coef = float(priority_queue_coef)
        self.risk_update = risk_update
        if normalize_advantage is None:
            normalize_advantage = risk_epsilon is None
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _setup_model(self) -> None:
        super()._setup_model()
        # Here rather than in __init__: SB3's load() builds the agent without running
        # _setup_model, restores the saved options, then calls it.
        self.priority_queue = PriorityQueue(self.priority_queue_size)
        self._pending: dict[int, _Pending] = {}
        # The episodes selected from the last rollout (risk_update="episodes"); kept after
        # train() so that they can be inspected.
        self.risk_batch: list[RiskEpisode] = []

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), *self._RUNTIME]

    @property
    def _by_episode(self) -> bool:
        """Whether the risk-seeking gradient is trained on the selected complete episodes."""
        return self.risk_epsilon is not None and self.risk_update == "episodes"

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
        use_masking: bool = True,
    ) -> bool:
        """MaskablePPO's rollout, then risk-seeking selection and priority-queue updates."""
        complete = super().collect_rollouts(
            env, callback, rollout_buffer, n_rollout_steps, use_masking
        )
        if not complete:
            # The callback stopped the rollout after a step that never reached the buffer: the
            # running episodes miss a step, so none of them is scored or queued.
            self._pending = {}
            self.risk_batch = []
            return False
        self._digest(rollout_buffer)
        return True

    def _digest(self, buffer: RolloutBuffer) -> None:
        """Score the rollout's ended episodes and carry its unfinished ones over."""
        assert self._last_episode_starts is not None  # set by every step of the rollout
        n_envs = buffer.rewards.shape[1]
        if self.risk_epsilon is not None and not self._by_episode:
            carried = np.array([self._pending.get(e, _Pending()).ret for e in range(n_envs)])
            advantages, q = risk_seeking_advantages(
                buffer.rewards,
                buffer.episode_starts,
                self._last_episode_starts,
                self.risk_epsilon,
                carried,
            )
            buffer.advantages[:] = advantages
            if np.isfinite(q):
                self.logger.record("rollout/risk_quantile", q)
        queue = self.priority_queue_size > 0
        keep = queue or self._by_episode
        pending: dict[int, _Pending] = {}
        ended: list[tuple[float, list[_Chunk]]] = []
        # MaskablePPO fills a MaskableRolloutBuffer (all-ones masks when it runs unmasked).
        masks = buffer.action_masks  # type: ignore[attr-defined]
        for seg in _segments(buffer.episode_starts, self._last_episode_starts):
            before = _Pending(ret=0.0) if seg.begins else self._pending.get(seg.env, _Pending())
            ret = before.ret + float(buffer.rewards[seg.start : seg.stop, seg.env].sum())
            chunks = before.chunks
            if keep and np.isfinite(ret):
                index = (slice(seg.start, seg.stop), seg.env)
                chunk = _Chunk(
                    _take(buffer.observations, index),
                    np.array(masks[index]),
                    np.array(buffer.actions[index]),
                    np.array(buffer.log_probs[index]),
                )
                chunks = [*chunks, chunk]
            if not seg.ends:
                pending[seg.env] = _Pending(ret, chunks)
            elif np.isfinite(ret):
                # An episode whose start was lost has a NaN return: neither scored nor kept.
                ended.append((ret, chunks))
        self._pending = pending
        if queue:
            for ret, chunks in ended:
                self.priority_queue.push(
                    QueuedEpisode(
                        ret=ret,
                        observations=_concat([c.observations for c in chunks]),
                        action_masks=np.concatenate([c.action_masks for c in chunks]),
                        actions=np.concatenate([c.actions for c in chunks]),
                    )
                )
            if len(self.priority_queue):
                self.logger.record("rollout/queue_best", self.priority_queue.episodes[0].ret)
        if self._by_episode:
            self._select(buffer, ended)

    def _select(self, buffer: RolloutBuffer, ended: list[tuple[float, list[_Chunk]]]) -> None:
        """Keep the ended episodes with ``R >= q`` as :attr:`risk_batch`; zero the buffer's
        advantages, so MaskablePPO's own policy-gradient term has nothing to train on."""
        assert self.risk_epsilon is not None
        buffer.advantages[:] = 0.0
        self.risk_batch = []
        if not ended:
            return
        q = _risk_quantile([ret for ret, _ in ended], self.risk_epsilon)
        self.logger.record("rollout/risk_quantile", q)
        for ret, chunks in ended:
            if ret >= q:
                self.risk_batch.append(
                    RiskEpisode(
                        ret=ret,
                        advantage=ret - q,
                        observations=_concat([c.observations for c in chunks]),
                        action_masks=np.concatenate([c.action_masks for c in chunks]),
                        actions=np.concatenate([c.actions for c in chunks]),
                        log_probs=np.concatenate([c.log_probs for c in chunks]),
                    )
                )

    def _evaluate(
        self, observations: Observation, action_masks: np.ndarray, actions: np.ndarray
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """``log π(a | s, mask)`` and the policy's entropy at each step (with gradient)."""
        obs = obs_as_tensor(observations, self.device)  # type: ignore[arg-type]
        acts = th.as_tensor(actions, device=self.device)
        if isinstance(self.action_space, spaces.Discrete):
            acts = acts.long().flatten()  # as MaskablePPO.train does
        _, log_prob, entropy = self.policy.evaluate_actions(obs, acts, action_masks=action_masks)  # type: ignore[arg-type]
        return log_prob, entropy

    def queue_log_prob(self) -> th.Tensor:
        """Mean ``log π(a | s, mask)`` over every step of the queued episodes (with gradient).

        Raises:
            ValueError: if the queue is empty.
        """
        episodes = self.priority_queue.episodes
        if not episodes:
            raise ValueError("the priority queue is empty")
        log_prob, _ = self._evaluate(
            _concat([e.observations for e in episodes]),
            np.concatenate([e.action_masks for e in episodes]),
            np.concatenate([e.actions for e in episodes]),
        )
        return log_prob.mean()

    def _actor_parameters(self) -> list[th.nn.Parameter]:
        """The parameters the value loss must not move: all but the critic's own."""
        critic = [self.policy.value_net, getattr(self.policy.mlp_extractor, "value_net", None)]
        if not self.policy.share_features_extractor:
            critic.append(self.policy.vf_features_extractor)
        own = {id(p) for module in critic if module is not None for p in module.parameters()}
        return [p for p in self.policy.parameters() if id(p) not in own]

    def train(self) -> None:
        """MaskablePPO's update, the risk-seeking steps on the selected episodes (with
        ``risk_update="episodes"``), then ``n_epochs`` priority-queue imitation steps."""
        if self._by_episode:
            # Zero advantages already silence the policy term, but its zero gradients would
            # still let Adam move the actor on its momentum, and the entropy bonus would act on
            # every step of the rollout instead of on the selected episodes only (DSR).
            actor = [p for p in self._actor_parameters() if p.requires_grad]
            for p in actor:
                p.requires_grad_(False)
            try:
                super().train()
            finally:
                for p in actor:
                    p.requires_grad_(True)
            self._train_risk_episodes()
        else:
            super().train()
        if not (self.priority_queue_coef > 0 and len(self.priority_queue)):
            return
        self.policy.set_training_mode(True)
        for _ in range(self.n_epochs):
            loss = -self.priority_queue_coef * self.queue_log_prob()
            self._step(loss)
        self.logger.record("train/queue_imitation_loss", loss.item())

    def _train_risk_episodes(self) -> None:
        """``n_epochs`` PPO clipped-surrogate steps over every step of :attr:`risk_batch`."""
        episodes = self.risk_batch
        self.logger.record("train/risk_episodes", len(episodes))
        if not episodes:
            return
        self.policy.set_training_mode(True)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        observations = _concat([e.observations for e in episodes])
        masks = np.concatenate([e.action_masks for e in episodes])
        actions = np.concatenate([e.actions for e in episodes])
        old_log_prob = th.as_tensor(
            np.concatenate([e.log_probs for e in episodes]), dtype=th.float32, device=self.device
        )
        advantages = th.as_tensor(
            np.concatenate([np.full(len(e.log_probs), e.advantage) for e in episodes]),
            dtype=th.float32,
            device=self.device,
        )
        for _ in range(self.n_epochs):
            log_prob, entropy = self._evaluate(observations, masks, actions)
            ratio = th.exp(log_prob - old_log_prob)
            surrogate = th.min(
                advantages * ratio, advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
            ).mean()
            # As MaskablePPO: -log π estimates the entropy when it has no closed form.
            mean_entropy = -log_prob.mean() if entropy is None else entropy.mean()
            loss = -surrogate - self.ent_coef * mean_entropy
            self._step(loss)
        self.logger.record("train/risk_loss", loss.item())

    def _step(self, loss: th.Tensor) -> None:
        """One optimizer step on ``loss``, the gradient norm clipped as SB3 does."""
        self.policy.optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
