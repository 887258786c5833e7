"""Who searches: SB3 agents (DQN, PPO, MaskablePPO, risk-seeking PPO) from presets; callbacks."""

from loss_rl.agents._loop import learn_until_done, open_agent, roll_out, train_agent
from loss_rl.agents._risk_seeking import RiskSeekingPPO, risk_seeking_advantages
from loss_rl.agents._sb3 import (
    AGENT_FILE,
    ALGOS,
    REPLAY_FILE,
    AgentConfig,
    load_agent,
    make_agent,
    save_agent,
)
from loss_rl.agents.callbacks import (
    BudgetCallback,
    CheckpointCallback,
    Progress,
    ProgressCallback,
    SearchState,
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
    "RiskSeekingPPO",
    "SearchState",
    "learn_until_done",
    "load_agent",
    "make_agent",
    "open_agent",
    "risk_seeking_advantages",
    "roll_out",
    "save_agent",
    "train_agent",
]
