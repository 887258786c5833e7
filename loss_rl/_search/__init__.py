"""Search runs: presets → validated config → run folder → agent ↔ MDP ↔ evaluator → verification.

``loss_rl.search(...)`` starts a run, ``loss_rl.resume(path)`` continues one:

- :mod:`._setup`: a new run's options checked, its folder and ``config.yaml`` written;
- :mod:`._data`: the user's own data as a run's task (``--data``, ``data=``), and its record;
- :mod:`._runner`: :class:`Search`, the loop of an agent or baseline until the budget is spent;
- :mod:`._finish`: the top candidates re-checked, the winner exported, ``summary.json``.
"""

from loss_rl._search._data import DataSpec
from loss_rl._search._finish import verify_and_export, write_summary
from loss_rl._search._runner import DEFAULT_AGENT, Search, list_runs, resume, search
from loss_rl._search._setup import PRETRAINED, new_run

__all__ = [
    "DEFAULT_AGENT",
    "PRETRAINED",
    "DataSpec",
    "Search",
    "list_runs",
    "new_run",
    "resume",
    "search",
    "verify_and_export",
    "write_summary",
]
