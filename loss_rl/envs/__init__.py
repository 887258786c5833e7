"""The loss-design MDP: a gymnasium env whose state is a loss and whose reward is its score.

- :class:`LossDesignEnv` (registered by ``import loss_rl`` as ``"loss_rl/LossDesign-v0"``;
  kwargs ``config`` and ``evaluator``) with three search spaces, ``symbolic`` and ``parametric``
  (edit a loss) and ``grammar`` (:class:`GrammarSpace`: build one loss per episode, token by
  token);
- :class:`EnvConfig`, its validated configuration;
- :class:`BatchedLossVecEnv`, an SB3 ``VecEnv`` that evaluates the candidates of all its envs in
  one evaluator call;
- :class:`RunStats`, run-level memory (best so far) shared by the envs of a search;
- :class:`TaskSwitcher` / :class:`TaskSchedule` / :class:`TaskBinding`: one episode per task of a
  suite, for pretraining across tasks;
- :mod:`loss_rl.envs.testing`: :class:`~loss_rl.envs.testing.CheapEvaluator` for tests.
"""

from loss_rl.envs._config import LIBRARY, RANDOM, EnvConfig
from loss_rl.envs._env import LossDesignEnv
from loss_rl.envs._grammar import GrammarSpace, GrammarState
from loss_rl.envs._multitask import TaskBinding, TaskSchedule, TaskSwitcher
from loss_rl.envs._parametric import ParametricSpace, ParamState
from loss_rl.envs._reward import REWARD_MODES, score_reward
from loss_rl.envs._run_stats import RunStats
from loss_rl.envs._terms import DEFAULT_PARAM_GRIDS, DEFAULT_TERMS, TERMS
from loss_rl.envs._vec_env import BatchedLossVecEnv

__all__ = [
    "DEFAULT_PARAM_GRIDS",
    "DEFAULT_TERMS",
    "LIBRARY",
    "RANDOM",
    "REWARD_MODES",
    "TERMS",
    "BatchedLossVecEnv",
    "EnvConfig",
    "GrammarSpace",
    "GrammarState",
    "LossDesignEnv",
    "ParamState",
    "ParametricSpace",
    "RunStats",
    "TaskBinding",
    "TaskSchedule",
    "TaskSwitcher",
    "score_reward",
]
