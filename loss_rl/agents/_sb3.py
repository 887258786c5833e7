"""Stable-Baselines3 agents (DQN, PPO, MaskablePPO, risk-seeking PPO): config, build, save, load.

An agent preset ``agents/<algo>.yaml`` (read by :func:`loss_rl.presets.load_agent_config`) maps
env preset names to hyper-parameters; the ``default`` section applies to every env and a section
named after the env preset overrides it::

    default:
      n_envs: 8           # environments stepped together (one evaluator batch per step)
      policy: MlpPolicy
      learning_rate: 3.0e-4
    digits_noisy:
      ent_coef: 0.02

Every other key is passed to the SB3 constructor and validated against its signature.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sb3_contrib import MaskablePPO
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import VecEnv

from loss_rl.agents._risk_seeking import RiskSeekingPPO, check_risk_options
from loss_rl.errors import ConfigError, RunError
from loss_rl.schema import check_choice, check_int, check_keys, fail
from loss_rl.store import AGENT_ZIP

ALGOS: dict[str, type[BaseAlgorithm]] = {
    "dqn": DQN,
    "ppo": PPO,
    "maskable_ppo": MaskablePPO,
    "risk_seeking_ppo": RiskSeekingPPO,
}

# Keys owned by loss_rl (not passed to SB3).
_OWN_KEYS = {"algo", "n_envs", "policy"}
# SB3 constructor arguments that the search sets itself.
_RESERVED = {"env", "seed", "tensorboard_log", "verbose", "device", "_init_setup_model"}


@dataclass
class AgentConfig:
    """A resolved agent preset.

    Attributes:
        algo: ``dqn`` | ``ppo`` | ``maskable_ppo`` | ``risk_seeking_ppo`` (SB3 agents) or
            ``random`` | ``evolution`` | ``optuna`` (baselines).
        n_envs: Environments stepped together (candidates per evaluator batch).
        policy: SB3 policy name.
        hyperparams: Remaining SB3 constructor arguments.
        source: Where the preset came from.
    """

    algo: str
    n_envs: int = 8
    policy: str = "MlpPolicy"
    hyperparams: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def is_baseline(self) -> bool:
        """Whether this is a non-RL baseline searcher (random, evolution, optuna)."""
        return self.algo not in ALGOS

    @property
    def min_budget(self) -> int:
        """Fewest inner trainings with which the agent learns at all.

        PPO updates its policy after ``n_steps × n_envs`` proposals and DQN starts learning after
        ``learning_starts`` transitions; a smaller budget would end before either (each proposal
        costs at most one training, so this many trainings guarantee that many proposals).
        """
        if self.is_baseline:
            return 1
        params = inspect.signature(ALGOS[self.algo].__init__).parameters
        if self.algo == "dqn":
            starts = self.hyperparams.get("learning_starts", params["learning_starts"].default)
            return max(int(starts), self.n_envs)
        n_steps = self.hyperparams.get("n_steps", params["n_steps"].default)
        return int(n_steps) * self.n_envs

    @property
    def uses_masks(self) -> bool:
        """Whether the algorithm consumes ``action_masks()`` (MaskablePPO and its subclasses)."""
        return not self.is_baseline and issubclass(ALGOS[self.algo], MaskablePPO)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``config.yaml``."""
        out: dict[str, Any] = {"algo": self.algo, "n_envs": self.n_envs}
        if not self.is_baseline:
            out["policy"] = self.policy
        return {**out, **self.hyperparams}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> AgentConfig:
        """Validate a flat mapping (``algo`` plus hyper-parameters).

        Raises:
            ConfigError: naming the field for an unknown algorithm, key or bad value.
        """
        from loss_rl.agents.baselines import BASELINES, baseline_options

        data = dict(data)
        algo = str(data.pop("algo", ""))
        check_choice(
            algo,
            "agent.algo",
            [*ALGOS, *BASELINES],
            "unknown agent {value!r}; choose one of {choices}",
        )
        n_envs = data.pop("n_envs", 8)
        check_int(n_envs, "agent.n_envs", 1, message="must be an integer >= 1, got {value!r}")
        if algo in BASELINES:
            baseline_options(algo, data)  # validates
            return cls(algo, n_envs, "", data, source)
        policy = data.pop("policy", "MlpPolicy")
        if not isinstance(policy, str):
            fail("agent.policy", "must be a policy name such as MlpPolicy")
        # The SB3 constructor's own arguments, less those the search sets itself.
        params = set(inspect.signature(ALGOS[algo].__init__).parameters)
        allowed = sorted(params - _RESERVED - {"self", "policy"})
        check_keys(
            data,
            allowed,
            "agent",
            f"{algo} takes no hyper-parameter {{key!r}}; allowed: {{allowed}}",
        )
        if algo == "risk_seeking_ppo":
            # Checked here, naming the field, rather than when the agent is first built.
            defaults = inspect.signature(RiskSeekingPPO.__init__).parameters
            check_risk_options(
                data.get("risk_epsilon"),
                data.get("priority_queue_size", 0),
                data.get("priority_queue_coef", 0.0),
                data.get("normalize_advantage"),
                data.get("risk_update", defaults["risk_update"].default),
            )
        return cls(algo, n_envs, policy, data, source)


def make_agent(
    config: AgentConfig, env: VecEnv, *, seed: int = 0, tensorboard_log: str | None = None
) -> BaseAlgorithm:
    """Build a fresh SB3 agent on ``env`` from ``config``."""
    cls = ALGOS[config.algo]
    try:
        return cls(
            config.policy,
            env,
            seed=seed,
            verbose=0,
            device="cpu",
            tensorboard_log=tensorboard_log,
            **config.hyperparams,
        )
    except ConfigError:
        raise  # already names its field
    except (TypeError, ValueError, AssertionError) as err:
        raise ConfigError(f"{config.algo} rejected its hyper-parameters: {err}", "agent") from err


AGENT_FILE = AGENT_ZIP  # the run folder's checkpoint, named by the store
REPLAY_FILE = "replay_buffer.npz"
"""DQN's replay buffer: plain arrays (``np.savez``), read back with ``allow_pickle=False``."""
LEGACY_REPLAY_FILE = "replay_buffer.pkl"
"""SB3's pickled replay buffer, written by older loss_rl versions: never opened (a pickle runs
code when it is read); a run that has one re-collects its buffer."""

logger = logging.getLogger(__name__)

_SERIALIZED = ":serialized:"
"""SB3's marker of a cloudpickled entry in an ``agent.zip``'s ``data`` JSON."""
_FROM_ENV = ("policy_class", "observation_space", "action_space")
"""Entries always taken from the fresh agent, pickled or not: the spaces are the current env's."""
_REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
"""Arrays of an SB3 ``ReplayBuffer`` (``next_observations`` is ``None`` with
``optimize_memory_usage``)."""


def save_agent(model: BaseAlgorithm, folder: Path) -> None:
    """Write ``folder/agent.zip`` (and DQN's replay buffer) atomically.

    A kill mid-write never leaves half a file, so an interrupted run resumes from its last
    checkpoint. The replay buffer is written as arrays (:data:`REPLAY_FILE`), never pickled.

    Args:
        model: The agent.
        folder: The run folder.
    """
    tmp = folder / "agent.tmp.zip"
    model.save(str(tmp))
    os.replace(tmp, folder / AGENT_FILE)
    buffer = getattr(model, "replay_buffer", None)
    if not isinstance(buffer, ReplayBuffer):
        return  # an on-policy agent: nothing more to keep
    arrays = _replay_arrays(buffer)
    if arrays is None:
        return
    # Only the filled rows: a young buffer is mostly zeros and would cost its full size.
    n = buffer.buffer_size if buffer.full else buffer.pos
    content = {name: a[:n] for name, a in arrays.items()}
    tmp_buffer = folder / "replay_buffer.tmp.npz"
    with open(tmp_buffer, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(
            f, allow_pickle=False, pos=np.int64(buffer.pos), full=np.bool_(buffer.full), **content
        )
    os.replace(tmp_buffer, folder / REPLAY_FILE)


def load_replay_buffer(model: BaseAlgorithm, folder: Path) -> bool:
    """Fill ``model``'s replay buffer from ``folder/replay_buffer.npz``, read as plain arrays.

    A missing file, one whose arrays do not fit the model's buffer (shape or dtype) or one that
    holds anything but numeric arrays leaves the buffer empty with a logged warning: DQN
    re-collects it. A legacy ``replay_buffer.pkl`` is never opened.

    Args:
        model: A freshly loaded agent (its buffer is empty); agents without one are left alone.
        folder: The run folder.

    Returns:
        Whether the buffer was restored.
    """
    buffer = getattr(model, "replay_buffer", None)
    if not isinstance(buffer, ReplayBuffer):
        return False
    path = folder / REPLAY_FILE
    if not path.is_file():
        if (folder / LEGACY_REPLAY_FILE).is_file():
            logger.warning(
                "%s is a pickle from an older loss_rl and is ignored (reading a pickle can run "
                "code); the replay buffer is re-collected",
                folder / LEGACY_REPLAY_FILE,
            )
        return False
    want = _replay_arrays(buffer)
    if want is None:
        return False
    try:
        pos, full, saved = _read_replay(path, buffer.buffer_size, want)
    except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as err:
        logger.warning(
            "%s does not fit this agent (%s); the replay buffer is re-collected", path, err
        )
        return False
    for name, rows in saved.items():
        want[name][: len(rows)] = rows
    buffer.pos, buffer.full = pos, full
    return True


def _replay_arrays(buffer: ReplayBuffer) -> dict[str, np.ndarray] | None:
    """The buffer's arrays by name; ``None`` for a buffer of another make (e.g. dict
    observations), which is then neither saved nor restored rather than half restored."""
    out = {}
    for name in _REPLAY_ARRAYS:
        value = getattr(buffer, name, None)
        if isinstance(value, np.ndarray):
            out[name] = value
        elif value is not None:
            return None
    return out


def _read_replay(
    path: Path, size: int, want: dict[str, np.ndarray]
) -> tuple[int, bool, dict[str, np.ndarray]]:
    """Read and check a saved replay buffer against the arrays it must fill.

    Raises:
        ValueError: naming what does not fit (also raised by numpy for a pickled array).
        KeyError: for a missing array.
    """
    with np.load(path, allow_pickle=False) as f:
        if f["pos"].shape != () or f["full"].shape != ():
            raise ValueError("pos and full must be scalars")
        pos, full = int(f["pos"]), bool(f["full"])
        if not 0 <= pos < size:
            raise ValueError(f"pos {pos} outside a buffer of {size} rows")
        n = size if full else pos
        saved = {}
        for name, have in want.items():
            rows = f[name]
            shape = (n, *have.shape[1:])
            if rows.shape != shape or rows.dtype != have.dtype:
                raise ValueError(
                    f"{name} is {rows.dtype}{list(rows.shape)}, the agent's buffer needs "
                    f"{have.dtype}{list(shape)}"
                )
            saved[name] = rows
    return pos, full, saved


def load_agent(config: AgentConfig, path: str | Path, env: VecEnv) -> BaseAlgorithm:
    """Load a saved agent (``agent.zip``) onto ``env`` as data: nothing in the file is unpickled.

    SB3 cloudpickles some attributes into the zip's ``data`` JSON (the policy class, the spaces,
    schedules, buffer classes, last observations); unpickling them would run whatever code the
    file's author chose. Each such entry is instead taken from a fresh agent built from
    ``config`` on ``env`` (SB3's ``custom_objects``, which it uses in place of the pickle), and
    so are the policy class and the spaces. Everything else is plain JSON, and the weights are
    ``.pth`` files that SB3 reads with ``torch.load(weights_only=True)`` (checked in
    ``stable_baselines3.common.save_util.load_from_zip_file``, SB3 2.9), which refuses code.

    Args:
        config: The agent config the policy was trained with (its algorithm builds the agent).
        path: The ``agent.zip``.
        env: The env the agent acts in; its spaces are the agent's.

    Returns:
        The agent, its weights and counters from the file.

    Raises:
        ConfigError: for an algorithm that is not an SB3 one.
        RunError: if the file is not a saved agent, or pickles an entry that the fresh agent does
            not have (it would have to be unpickled: it is refused, naming the file and field).
        RuntimeError: from ``load_state_dict`` if the saved network does not fit ``env``.
    """
    if config.algo not in ALGOS:
        raise ConfigError(f"unknown algorithm {config.algo!r}", field="agent.algo")
    path = Path(path)
    # One read: the entries checked here are the ones SB3 then loads (no swap in between).
    try:
        blob = path.read_bytes()
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            data = json.loads(archive.read("data").decode())
    except (OSError, KeyError, UnicodeDecodeError, ValueError, zipfile.BadZipFile) as err:
        raise RunError(f"{path} is not a saved agent: {err}") from err
    if not isinstance(data, dict):
        raise RunError(f"{path} is not a saved agent: its data is not a JSON object")
    seed = data.get("seed")
    # The saved seed: SB3 reseeds with it on load anyway, so the fresh agent changes no RNG state.
    fresh = make_agent(config, env, seed=seed if type(seed) is int and 0 <= seed < 2**32 else 0)
    own = vars(fresh)
    custom: dict[str, Any] = {key: own[key] for key in _FROM_ENV}
    for key, value in data.items():
        if isinstance(value, dict) and _SERIALIZED in value and key not in custom:
            if key not in own:
                raise RunError(
                    f"{path} holds a pickled field {key!r} that a {config.algo} agent does not "
                    "have; loss_rl never unpickles an agent file (it could run code), so it cannot "
                    "be loaded. Was it saved by another algorithm or program?"
                )
            custom[key] = own[key]
    # SB3 2.9.2's load_from_zip_file reads every .pth member with torch.load(weights_only=True)
    # (verified in the installed source; tests/agents/test_load_as_data.py fails if that changes).
    return ALGOS[config.algo].load(io.BytesIO(blob), env=env, device="cpu", custom_objects=custom)
