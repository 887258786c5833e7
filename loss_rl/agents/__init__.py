"""Who searches: SB3 agents (DQN, PPO, MaskablePPO) from YAML presets, and their callbacks."""

from loss_rl.agents._sb3 import (
    AGENT_FILE,
    ALGOS,
    REPLAY_FILE,
    AgentConfig,
    load_agent,
    load_agent_config,
    make_agent,
    save_agent,
)
from loss_rl.agents.callbacks import (
    BudgetCallback,
    CheckpointCallback,
    Progress,
    ProgressCallback,
    SearchState,
    learn_until_done,
)

__all__ = [
    "AGENT_FILE",
    "ALGOS",
    "REPLAY_FILE",
    "AgentConfig",
    "BudgetCallback",
    "CheckpointCallback",
    "Progress",
    "ProgressCallback",
    "SearchState",
    "learn_until_done",
    "load_agent",
    "load_agent_config",
    "make_agent",
    "save_agent",
]
