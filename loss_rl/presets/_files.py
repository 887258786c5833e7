"""Finding presets by name: the YAML files of ``envs/`` and ``agents/``.

The presets live at the top of the repository (rl-zoo3 style) and are copied into the wheel under
``loss_rl/_presets/``; a source checkout reads them from the repository directly.
"""

from __future__ import annotations

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
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"preset file {p} does not exist", field=kind.rstrip("s"))
        return p
    for d in preset_dirs(kind):
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    raise ConfigError(
        f"unknown {kind.rstrip('s')} preset {str(name_or_path)!r}; available: "
        f"{', '.join(list_presets(kind)) or '(none found)'}; or give a path to a YAML file",
        field=kind.rstrip("s"),
    )


def load_yaml(path: Path, field: str) -> dict[str, Any]:
    """Read a YAML mapping, turning syntax errors into :class:`ConfigError`."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}", field=field) from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level", field=field)
    return data
