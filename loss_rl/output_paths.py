"""Paths a user names: outputs checked before any work, inputs probed without raising.

Refinement, meta-training, a search and the CLI's ``--out``/``--csv``/``--plot`` all write their
result at the end; a path that cannot be written must fail at the start, not after minutes of
training, and as a :class:`~loss_rl.errors.ConfigError` naming the option, not as an ``OSError``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

from loss_rl.errors import ConfigError

NAME_MAX = 255
"""Longest file or folder name (one path component) most file systems take, in bytes."""


def check_writable(path: str | Path, field: str, *, folder: bool = False) -> Path:
    """Check that ``path`` can be written, without creating it or anything above it.

    A missing file or folder is fine when its nearest existing ancestor is a folder this process
    can create files in (probed with a temporary file that is removed at once: permissions alone
    do not tell, e.g. for root or a read-only mount) and every missing name is short enough.

    Args:
        path: The file (or, with ``folder=True``, the folder) to be written.
        field: The option or argument named in the error (e.g. ``"out"``).
        folder: ``path`` is a folder to write into rather than a file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: naming ``field`` and what is in the way.
    """
    p = Path(path)
    if not str(path).strip():
        raise ConfigError("is empty; give a path", field=field)
    try:
        if folder and p.exists() and not p.is_dir():
            raise ConfigError(f"{p} is a file; give a folder", field=field)
        if not folder and p.is_dir():
            raise ConfigError(f"{p} is a folder; give a file name", field=field)
        missing: list[str] = []
        anchor = p if folder else p.parent
        while not anchor.exists():
            missing.append(anchor.name)
            if anchor.parent == anchor:
                break
            anchor = anchor.parent
        if not folder:
            missing.append(p.name)
        too_long = [n for n in missing if len(os.fsencode(n)) > NAME_MAX]
        if too_long:
            raise ConfigError(
                f"the name {too_long[0][:40]}... is longer than {NAME_MAX} bytes", field=field
            )
        if not anchor.is_dir():
            raise ConfigError(f"{anchor} is a file, so {p} cannot be created", field=field)
        if not folder and p.exists() and not os.access(p, os.W_OK):
            raise ConfigError(f"{p} exists and is not writable", field=field)
        try:
            # Probe: a temporary file in the nearest existing folder, removed on close.
            with tempfile.TemporaryFile(dir=anchor):
                pass
        except OSError as err:
            raise ConfigError(
                f"cannot write {p}: no file can be created in {anchor} ({err.strerror or err})",
                field=field,
            ) from None
    except ConfigError:
        raise
    except (OSError, ValueError) as err:
        # ValueError: a NUL byte in the path; OSError: permissions, read-only or odd file systems.
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"cannot write {p}: {reason}", field=field) from None
    return p


def existing(path: Path) -> Literal["dir", "file"] | None:
    """``"dir"`` or ``"file"`` if ``path`` exists, else ``None``.

    A text that cannot name a file (longer than the system allows, a NUL byte) names nothing:
    ``Path.is_dir`` would raise ``OSError``/``ValueError`` on it instead of answering.
    """
    try:
        if path.is_dir():
            return "dir"
        if path.is_file():
            return "file"
    except (OSError, ValueError):
        return None
    return None
