"""Who searches: SB3 agents (DQN, PPO, MaskablePPO) from YAML presets, and their callbacks."""

from loss_rl.agents._sb3 import ALGOS, AgentConfig, load_agent, load_agent_config, make_agent
from loss_rl.agents.callbacks import (
    BudgetCallback,
    CheckpointCallback,
    Progress,
    ProgressCallback,
    SearchState,
)

__all__ = [
    "ALGOS",
    "AgentConfig",
    "BudgetCallback",
    "CheckpointCallback",
    "Progress",
    "ProgressCallback",
    "SearchState",
    "load_agent",
    "load_agent_config",
    "make_agent",
]
