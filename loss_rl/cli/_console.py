"""The CLI's rich consoles: the terminal's width on a terminal, long lines everywhere else."""

from __future__ import annotations

import os

from rich.console import Console

PLAIN_WIDTH = 1000
"""Line width when the output is not a terminal (CI logs, ``| tee``, a file).

Rich would assume 80 columns there and fold a wide table one word per line; a log reads better
with each row on one line.
"""


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) for one command's output.

    On a terminal (or with ``COLUMNS`` exported), rich's own width; otherwise
    :data:`PLAIN_WIDTH`, so that tables keep one row per line.
    """
    out = Console(stderr=stderr)
    if out.is_terminal or out.is_jupyter or os.environ.get("COLUMNS", "").isdigit():
        return out
    return Console(stderr=stderr, width=PLAIN_WIDTH)
