"""Finding presets by name: the YAML files of ``envs/`` and ``agents/``.

The presets live at the top of the repository (rl-zoo3 style) and are copied into the wheel under
``loss_rl/_presets/``; a source checkout reads them from the repository directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from loss_rl.errors import ConfigError

PresetKind = Literal["envs", "agents"]


def preset_dirs(kind: PresetKind) -> list[Path]:
    """Folders searched for presets of ``kind``, in order (installed copy first)."""
    # This file is loss_rl/presets/_files.py: `here` is the package, its parent the repository.
    here = Path(__file__).resolve().parent.parent
    return [p for p in (here / "_presets" / kind, here.parent / kind) if p.is_dir()]


def list_presets(kind: PresetKind) -> list[str]:
    """Names of the available presets of ``kind``."""
    names: set[str] = set()
    for d in preset_dirs(kind):
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_preset(kind: PresetKind, name_or_path: str | Path) -> Path:
    """Resolve a preset name (``digits_noisy``) or a path to a YAML file.

    Raises:
        ConfigError: naming the available presets when nothing matches.
    """
    p = Path(name_or_path)
    if not str(name_or_path).strip():
        raise ConfigError(
            f"is empty; give a preset name ({', '.join(list_presets(kind)) or 'none found'}) or "
            "a path to a YAML file",
            field=kind.rstrip("s"),
        )
    if p.suffix in (".yaml", ".yml") or _exists(p):
        if not _is_file(p):
            raise ConfigError(f"preset file {p} does not exist", field=kind.rstrip("s"))
        return p
    for d in preset_dirs(kind):
        cand = d / f"{name_or_path}.yaml"
        if _is_file(cand):
            return cand
    raise ConfigError(
        f"unknown {kind.rstrip('s')} preset {str(name_or_path)!r}; available: "
        f"{', '.join(list_presets(kind)) or '(none found)'}; or give a path to a YAML file",
        field=kind.rstrip("s"),
    )


def _exists(path: Path) -> bool:
    """``path.exists()``, ``False`` for a text that cannot name a file (too long, a NUL byte)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _is_file(path: Path) -> bool:
    """``path.is_file()``, ``False`` for a text that cannot name a file."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


MAX_YAML_BYTES = 1_000_000
"""Largest preset file read (a preset is a few dozen lines; anything this big is a mistake)."""


def load_yaml(path: Path, field: str) -> dict[str, Any]:
    """Read a YAML mapping (UTF-8 text); what cannot be read is a :class:`ConfigError`.

    Raises:
        ConfigError: naming ``field`` for an unreadable or oversized file, text that is not
            UTF-8, invalid YAML or a top level that is not a mapping.
    """
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(
                f"{path} is larger than {MAX_YAML_BYTES} bytes; a preset is a small YAML file",
                field=field,
            )
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {err.start}); save the preset as UTF-8", field=field
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}", field=field) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}", field=field) from err
    except RecursionError:
        # Thousands of nested brackets: the YAML composer recurses once per level.
        raise ConfigError(f"{path} nests too deeply to be a preset", field=field) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level", field=field)
    return data


#: Options of ``task.dataset`` that name files (a ``file`` dataset's data and test files).
DATA_PATH_OPTIONS: tuple[str, ...] = ("path", "test_path")


def resolve_data_paths(task: Any, folder: Path) -> Any:
    """A copy of a preset's ``task:`` data whose relative file paths start at ``folder``.

    A preset that names ``path: data.csv`` means the file next to it, wherever the command runs
    from: the loader of a YAML *file* passes the file's folder. The paths become absolute
    (``~`` expanded), which is also what a run folder's ``config.yaml`` then records. Anything
    that is not a dataset mapping with such string options comes back unchanged (the config's
    own validation reports it).

    Args:
        task: The ``task:`` value of a preset, as read from YAML.
        folder: The folder of the YAML file.

    Returns:
        ``task``, or a copy with ``dataset.path`` / ``dataset.test_path`` and a ``.py`` file of
        ``model.factory`` (``"model.py:make"``) made absolute.
    """
    if not isinstance(task, Mapping):
        return task
    out = dict(task)
    if isinstance(task.get("dataset"), Mapping):
        dataset = dict(task["dataset"])
        for key in DATA_PATH_OPTIONS:
            value = dataset.get(key)
            if isinstance(value, str) and value.strip():
                dataset[key] = _absolute(value, folder)
        out["dataset"] = dataset
    model = task.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("factory"), str):
        # A model factory given as "file.py:function" sits next to the preset too.
        module, sep, function = model["factory"].rpartition(":")
        if sep and module.endswith(".py"):
            out["model"] = {**model, "factory": f"{_absolute(module, folder)}:{function}"}
    return out


def _absolute(value: str, folder: Path) -> str:
    given = Path(value).expanduser()
    # abspath also normalises "../data.csv"; a symlinked folder is kept as named.
    return os.path.abspath(given if given.is_absolute() else folder / given)
