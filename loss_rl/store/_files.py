"""The files of a run folder: their names, YAML and JSON read and written whole, zip integrity."""

from __future__ import annotations

import json
import os
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

from loss_rl.errors import RunError

if sys.platform != "win32":
    pass


LEDGER = "ledger.sqlite"
CONFIG = "config.yaml"
SUMMARY = "summary.json"
DATA_RECORD = "data.json"
"""A search on the user's data: what the file held (path, size, SHA-256, columns, task kind)."""
AGENT_ZIP = "agent.zip"
"""The agent checkpoint (the agents layer writes it; the store only checks that it is whole)."""
LOCK = "run.lock"
"""The writer lock of a run folder (:class:`RunLock`); it holds the writer's pid."""

_FIX = "restore it from a backup, or move the run folder aside and start a new run"
"""What to do about a damaged run file (appended to each damage message)."""


_YAML_HEADER = "# written by loss_rl; whole only if its last line is '...'\n"
"""First line of every YAML file :func:`write_yaml` writes. A file that starts with it must end
with YAML's end-of-document line ``...``: otherwise it was cut short. Files without the header
(older runs, hand-written ones) are read as they are."""
_YAML_END = "\n...\n"


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line (PyYAML's own message spans several, with a code excerpt)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{err.problem}{where}"
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def read_yaml(path: Path) -> dict[str, Any]:
    """Load a YAML mapping (empty file → ``{}``).

    Raises:
        RunError: one line naming the file, if it is not UTF-8, not YAML, cut short (see
            :data:`_YAML_HEADER`) or not a mapping.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise RunError(f"{path} is not UTF-8 text (byte {err.start}): damaged; {_FIX}") from None
    if text.startswith(_YAML_HEADER) and not text.endswith(_YAML_END):
        raise RunError(f"{path} is cut short (its closing '...' line is missing); {_FIX}")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise RunError(f"{path} is not valid YAML ({_yaml_problem(err)}); {_FIX}") from None
    except RecursionError:  # a run of '[' or '{' in a damaged file
        raise RunError(f"{path} is not valid YAML (nested too deeply); {_FIX}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} does not hold a mapping; {_FIX}")
    return data


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as block-style YAML, keys in insertion order, atomically.

    The file is written beside and renamed into place, so a kill mid-write leaves the old file,
    and it is framed by :data:`_YAML_HEADER` and ``...`` so that a truncated copy is recognised.
    """
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, explicit_end=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(_YAML_HEADER + body, encoding="utf-8")
    os.replace(tmp, path)


def read_summary(path: Path) -> dict[str, Any] | None:
    """Load a run's ``summary.json`` (``None`` if there is none).

    Raises:
        RunError: one line naming the file, if it is not UTF-8 JSON holding an object.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise RunError(f"{path} is not UTF-8 text (byte {err.start}): damaged; {_FIX}") from None
    except json.JSONDecodeError as err:
        raise RunError(
            f"{path} is not valid JSON ({err.msg}: line {err.lineno}, column {err.colno}); {_FIX}"
        ) from None
    except RecursionError:
        raise RunError(f"{path} is not valid JSON (nested too deeply); {_FIX}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} does not hold a JSON object; {_FIX}")
    return data


_EOCD = b"PK\x05\x06"  # a zip's end-of-central-directory record (22 bytes + comment)


def check_zip(path: str | Path) -> None:
    """Check that ``path`` is one whole zip archive (an ``agent.zip``), without loading it.

    ``zipfile.is_zipfile`` is not enough: a truncated ``agent.zip`` still ends with the zip
    nested inside it (``policy.pth``), so the archive's end record must close the file and its
    directory must end where that record starts; every member's CRC is then checked.

    Raises:
        RunError: one line naming the file, if it is not such an archive.
    """
    path = Path(path)
    damaged = f"{path} is not a readable zip archive (truncated or damaged); {_FIX}"
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - (22 + 65535)))
        tail = f.read()
    base = size - len(tail)
    end = len(tail)
    whole = False
    while (end := tail.rfind(_EOCD, 0, end)) >= 0:
        record = tail[end : end + 22]
        if len(record) == 22:
            comment = struct.unpack("<H", record[20:22])[0]
            cd_size, cd_offset = struct.unpack("<II", record[12:20])
            zip64 = cd_offset == 0xFFFFFFFF  # the sizes live in a zip64 record: trust zipfile
            if end + 22 + comment == len(tail) and (zip64 or cd_offset + cd_size == base + end):
                whole = True
                break
    if not whole:
        raise RunError(damaged)
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except Exception as err:  # BadZipFile, zlib.error, EOFError, ...: all mean damage here
        raise RunError(f"{path} is not a readable zip archive ({err}); {_FIX}") from None
    if bad is not None:
        raise RunError(f"{path} is damaged (member {bad!r} fails its checksum); {_FIX}")
