"""The ``loss-rl`` command line (typer + rich): :data:`app` and the console script's :func:`main`.

The CLI parses arguments, calls the library and owns the console. One module per group of
commands, each command a plain function registered on the app in ``_app``:

- ``_loss``: ``show``, ``export``, ``evaluate`` (a loss named by expression, known name, JSON
  spec or run folder);
- ``_runs``: ``search``, ``pretrain``, ``resume``, ``runs``;
- ``_inspect``: ``inspect``;
- ``_meta``: ``refine``, ``meta-train``;
- ``_tables``: the rich tables they print; ``_console``: the consoles they print on (the
  terminal's width, or long lines when the output is a log); ``_choices``: option choices.

Heavy imports (the RL stack, matplotlib, pandas) happen inside the commands, so ``loss-rl
--help`` stays quick.
"""

from loss_rl.cli._app import EXIT_BAD_INPUT, app, main
from loss_rl.cli._choices import ExecutorName, Format, Kind, Reduction

__all__ = ["EXIT_BAD_INPUT", "ExecutorName", "Format", "Kind", "Reduction", "app", "main"]
