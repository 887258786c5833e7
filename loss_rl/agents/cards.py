"""Policy cards: what a saved policy was trained on, and whether it fits an env.

A pretrained policy (``loss-rl pretrain``, or the one shipped in ``loss_rl/pretrained/``) comes
with a card (``card.json`` beside ``agent.zip``, or ``<kind>.json`` beside ``<kind>.zip``): its
suite, budget, revision and *layout* — the space, catalog, grids and descriptor that fix the
meaning of its observations and actions. A search that starts from a policy checks the layout
first, so a mismatch is a clear error instead of a silently wrong policy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from loss_rl.envs import TERMS
from loss_rl.errors import ConfigError

CARD_JSON = "card.json"
CARD_MD = "card.md"
DESCRIPTOR = "meta-features+landmarks/v1"
"""Version of the task descriptor a policy was trained with (:mod:`loss_rl.descriptors`)."""
LAYOUT_KEYS = (
    "space",
    "kind",
    "terms",
    "weight_grid",
    "param_grids",
    "max_size",
    "leaves",
    "ops",
    "constants",
    "max_steps",
)
"""Space keys that fix the meaning of a policy's observations and actions (with the descriptor)."""


def layout_of(env_config: Any) -> dict[str, Any]:
    """What ties a policy to an MDP: the space's catalog, grids, sizes and the descriptor.

    Two env configs with equal layouts have the same observation and action meaning, so a policy
    trained on one runs on the other.
    """
    d = env_config.to_dict()
    out = {k: d.get(k) for k in LAYOUT_KEYS}
    if d.get("space") == "parametric":  # defaults resolved: a preset that spells them out matches
        out["terms"] = list(env_config.term_names)
        out["param_grids"] = {
            f"{t}.{p}": list(env_config.param_grid(t, p))
            for t in env_config.term_names
            for p in _term_params(t)
        }
    out["n_task_features"] = len(env_config.task_features)
    out["descriptor"] = DESCRIPTOR
    return json.loads(json.dumps(out, default=list))  # tuples -> lists, as in a card


def _term_params(term: str) -> tuple[str, ...]:
    return TERMS[term].params


def check_layout(card: dict[str, Any], env_config: Any, where: str) -> None:
    """Raise a clear error if a policy card's layout differs from ``env_config``'s.

    Raises:
        ConfigError: naming the keys that differ and what to do.
    """
    want = card.get("layout")
    if not isinstance(want, dict):
        return
    have = layout_of(env_config)
    diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if diff:
        detail = "; ".join(f"{k}: policy {want.get(k)!r}, env {have.get(k)!r}" for k in diff)
        raise ConfigError(
            f"the policy in {where} was trained on another observation/action layout ({detail}). "
            "Use an env whose space matches (e.g. a task of the suite it was pretrained on), or "
            "pretrain a policy for this space with `loss-rl pretrain`",
            field="init_agent",
        )


def read_card(policy: str | Path) -> dict[str, Any] | None:
    """The card next to a policy file or in a pretraining folder (``None`` if there is none)."""
    p = Path(policy)
    for cand in (p / CARD_JSON, p.with_suffix(".json"), p.parent / CARD_JSON):
        if cand.is_file():
            try:
                return cast(dict[str, Any], json.loads(cand.read_text()))
            except (OSError, json.JSONDecodeError) as err:
                raise ConfigError(f"unreadable policy card {cand}: {err}", "init_agent") from err
    return None


SHIPPED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
"""Where the package keeps its pretrained policies: ``<kind>.zip`` with its card ``<kind>.json``."""


def shipped_policy(kind: str = "classification") -> Path:
    """The policy shipped in the package for a task kind (``--agent pretrained``).

    Raises:
        ConfigError: if none is shipped for ``kind``.
    """
    path = SHIPPED_DIR / f"{kind}.zip"
    if not path.is_file():
        have = sorted(p.stem for p in SHIPPED_DIR.glob("*.zip")) if SHIPPED_DIR.is_dir() else []
        raise ConfigError(
            f"no pretrained policy is shipped for {kind} tasks (shipped: "
            f"{', '.join(have) or 'none'}); pretrain one with `loss-rl pretrain --suite SUITE` "
            "and pass --init-agent FOLDER",
            field="agent",
        )
    return path


def card_markdown(card: dict[str, Any]) -> str:
    """A policy card as Markdown (what ``card.md`` holds)."""
    c = card.get("curve", {})
    lines = [
        f"# Pretrained loss-design policy: {card['algo']} on suite `{card['suite']}`",
        "",
        f"- tasks ({len(card['tasks'])}): {', '.join(card['tasks'])}",
        f"- left out: {', '.join(card['excluded']) or 'none'}",
        f"- budget: {card['trained']} inner trainings spent of {card['budget']}, "
        f"{card['wall_seconds']} s, seed {card['seed']}",
        f"- git revision {card['git_revision']}, loss_rl {card['loss_rl_version']}",
        f"- layout: {card['layout']['space']} space, terms {card['layout'].get('terms')}, "
        f"descriptor {card['layout']['descriptor']}",
    ]
    if c:
        lines.append(
            f"- training curve: mean episode gain over CE {c['gain_first_quarter']:+.4f} in the "
            f"first quarter of {c['episodes']} episodes, {c['gain_last_quarter']:+.4f} in the last"
        )
    lines += ["", "| task | CE (val) | best found (val) | loss |", "|---|---|---|---|"]
    for name, t in card.get("per_task", {}).items():
        best = "—" if t["best_score"] is None else f"{t['best_score']:.4f}"
        lines.append(f"| {name} | {t['reference']:.4f} | {best} | `{t['best_loss']}` |")
    return "\n".join(lines) + "\n"
