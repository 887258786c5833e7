"""The HTML report of an inspection: one self-contained page, plots embedded as data URIs."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from loss_rl.inspect._format import format_number
from loss_rl.inspect._rollout import Rollout, rollout_rows

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}code,.math{font-family:ui-monospace,Menlo,Consolas,monospace}
.best{font-size:1.15em;background:#eef7ee;padding:.6em;border-left:4px solid #2a2}
.missing li{color:#a60}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
"""


# The hall of fame's columns as the report shows them (the key and fidelity stay in the JSON).
_FRONT_COLUMNS = ("rank", "size", "score", "simplified", "expression", "known_as")


def _table(rows: Sequence[Mapping[Any, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p class='none'>none</p>"
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_number(r.get(c)))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>"


def render_html(
    summary: dict[str, Any],
    *,
    rollout: Rollout | None,
    usage: pd.DataFrame,
    outcomes: pd.DataFrame,
    plots: dict[str, Path],
    missing: Sequence[str],
) -> str:
    """The report page of an inspection (see :class:`loss_rl.inspect.Inspection`).

    Args:
        summary: The run's facts (:func:`loss_rl.inspect.run_summary`).
        rollout: The policy's rollout, if any (its edit usage is shown with it).
        usage: Edit usage of the final policy.
        outcomes: Proposals over training.
        plots: Plot name → PNG (embedded).
        missing: What could not be shown, and why.

    Returns:
        The page, with no reference outside itself.
    """
    s = summary
    e = html.escape
    best = s.get("best") or {}
    wall = format_number(s["wall_seconds"], 1)
    if s["wall_seconds_estimated"]:
        wall += " (estimated from the ledger)"
    facts = [
        ("run", s["run"]),
        ("status", s["status"]),
        ("env / task", f"{s['env']}: {s['task']}"),
        ("agent", s["agent"]),
        ("budget", s["budget"]),
        ("inner trainings", s["evaluations"]["trained"]),
        ("proposals", s["evaluations"]["proposed"]),
        ("wall time (s)", wall),
        ("evaluations / s", format_number(s["evals_per_second"], 2)),
        ("resolved without training", format_number(s["resolved_without_training"], 3)),
        ("reference (CE) score", format_number(s["reference_score"])),
    ]
    data = s.get("data")
    if data:
        facts.insert(3, ("data", f"{data.get('summary', data.get('path'))}"))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>loss_rl report: {e(s['name'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>loss_rl run <code>{e(s['name'])}</code></h1>",
    ]
    if best:
        readable = best.get("simplified")
        shown = (
            f" = <span class='math' id='best-simplified'>{e(str(readable))}</span> "
            f"(size {e(str(best.get('size')))})"
            if readable and readable != best.get("expression")
            else ""
        )
        parts.append(
            f"<p class='best'>Best loss: <span class='math' id='best-loss'>"
            f"{e(str(best.get('expression')))}</span>{shown} "
            f"(validation {e(format_number(best.get('val_score')))})</p>"
        )
    else:
        parts.append("<p class='best'>No loss with an ok score yet.</p>")
    if missing:
        parts.append("<h2>What is missing</h2><ul class='missing'>")
        parts += [f"<li>{e(n)}</li>" for n in missing]
        parts.append("</ul>")
    parts.append("<h2>Run summary</h2>" + _table([{"": k, "value": v} for k, v in facts]))
    parts.append(f"<h2>Top {len(s['top'])} losses (validation)</h2>" + _table(s["top"]))
    front = s.get("hall_of_fame")
    if front is not None:
        # PySR's presentation: what each extra node of the expression buys in score.
        parts.append(
            "<h2 id='hall-of-fame'>Hall of fame (Pareto front: validation score against size)"
            "</h2>" + _table(front, _FRONT_COLUMNS)
        )
    ver = s.get("verification")
    if ver:
        cols = ["loss", "params", "expression", "known_as", "mean", "ci_low", "ci_high"]
        cols += ["diff_vs_ce", "p_vs_ce", "diff_vs_best_ref", "p_vs_best_ref", "n"]
        rows = ver.get("table", [])
        # Summaries from before tuned references lack some columns: show what there is.
        cols = [c for c in cols if any(c in r for r in rows)]
        select = {"best": ", best validation checkpoint", "last": ", last step"}.get(
            str(ver.get("select")), ""
        )
        tuned = ver.get("tuning_trainings")
        parts.append(
            f"<h2>Verification ({e(str(ver.get('steps')))} steps{e(select)}, "
            f"{len(ver.get('seeds') or [])} fresh seeds, test {e(str(ver.get('metric')))}"
            + (f", references tuned with {e(str(tuned))} trainings" if tuned else "")
            + ")</h2>"
        )
        if ver.get("verdict"):
            parts.append(f"<p class='verdict' id='verdict'>{e(str(ver['verdict']))}</p>")
        parts.append(_table(rows, cols))
    if rollout is not None:
        r = rollout
        parts.append(
            f"<h2>Policy: {'greedy' if r.deterministic else 'sampled'} rollout "
            f"({e(r.algo)}, seed {r.seed})</h2><p>start <code>{e(r.start)}</code> → "
            f"<code>{e(r.final_expression)}</code> (score {e(format_number(r.final_score))}, "
            f"return {r.total_reward:+.3f}, {r.trained} new trainings)</p>"
            + _table(rollout_rows(r))
        )
        parts.append(
            "<h2>Edit usage of the final policy</h2>" + _table(usage.to_dict(orient="records"))
        )
    parts.append("<h2>Proposals over training</h2>" + _table(outcomes.to_dict(orient="records")))
    parts.append("<h2>Plots</h2>")
    for name, path in plots.items():
        parts.append(f"<h3>{e(name.replace('_', ' '))}</h3>{_img(path)}")
    parts.append("</body></html>")
    return "\n".join(parts)
