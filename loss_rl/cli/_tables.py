"""What the CLI prints: rich tables (and a Markdown one) built from the library's results.

Numbers are formatted by :func:`loss_rl.inspect.format_number` (``—`` for a missing one), the
same as in the HTML report. Expressions are wrapped in :class:`~rich.text.Text` so that rich
never reads their brackets as markup.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from loss_rl.expr import format_params
from loss_rl.inspect import Inspection, Rollout, format_number, rollout_rows

if TYPE_CHECKING:
    import pandas as pd

    from loss_rl.expr import CheckResult, Expr, TaskKind
    from loss_rl.store import Run


def loss_table(
    expr: Expr, origin: str, kind: TaskKind, fingerprint: str | None, checks: CheckResult
) -> Table:
    """``loss-rl show``: a loss's source, kind, canonical key, fingerprint, size and checks."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("expression", Text(str(expr)))
    table.add_row("source", Text(origin))
    table.add_row("kind", kind.value)
    # The canonical form's text is the key under which evaluations are cached.
    table.add_row("canonical key", Text(expr.key))
    table.add_row("fingerprint", fingerprint or "- (not finite on the probes)")
    table.add_row("size / depth", f"{expr.size()} / {expr.depth()}")
    if checks.ok:
        table.add_row("checks", Text("ok", style="green"))
    for code, message in checks.reasons:
        table.add_row("checks", Text(f"{code}: {message}", style="red"))
    return table


def verification_table(rows: Sequence[Mapping[str, Any]], metric: str, title: str) -> Table:
    """A verification table (:func:`loss_rl.verify.verify`): the found losses in bold green.

    A reference shows its tuned hyper-parameters next to its name; a loss under test that is a
    library loss up to scale says which (``= mae up to scale (×0.25)``) in yellow.
    """
    table = Table(title=title, title_justify="left")
    columns = (
        "loss",
        "expression",
        f"test {metric}",
        "95% CI",
        "Δ vs CE",
        "p",
        "Δ vs best ref [95% CI]",
        "p",
        "n",
    )
    for col in columns:
        table.add_column(col, overflow="fold" if col in ("loss", "expression") else "ellipsis")
    for r in rows:
        expr = r["expression"] if len(r["expression"]) <= 60 else r["expression"][:57] + "..."
        diverged = f" ({r['diverged']} div.)" if r.get("diverged") else ""
        name = Text(str(r["loss"]))
        if r.get("params"):
            name.append(f" ({r['params']})")
        if r.get("known_as"):
            name.append(f"\n= {r['known_as']}", style="yellow")
        low, high = r.get("diff_vs_best_ref_low"), r.get("diff_vs_best_ref_high")
        ci = f" [{format_number(low)}, {format_number(high)}]" if low is not None else ""
        table.add_row(
            name,
            Text(expr),
            format_number(r["mean"]),
            f"[{format_number(r['ci_low'])}, {format_number(r['ci_high'])}]",
            format_number(r["diff_vs_ce"]),
            format_number(r["p_vs_ce"], 3),
            format_number(r["diff_vs_best_ref"]) + ci,
            format_number(r["p_vs_best_ref"], 3),
            f"{r['n']}{diverged}",
            style="bold green" if not r.get("reference") else None,
        )
    return table


def verification_parts(ver: Mapping[str, Any]) -> Iterator[RenderableType]:
    """A run's verification (``summary.json``): the table, the best tuned reference, the verdict.

    Summaries from before the honest protocol have no reference or verdict: only the table.
    """
    seeds = len(ver.get("seeds") or [])
    select = {"best": " (best validation checkpoint)", "last": " (last step)"}
    title = (
        f"verification: {ver.get('steps')} steps{select.get(str(ver.get('select')), '')}, "
        f"{seeds} fresh seeds, test split"
    )
    yield verification_table(ver["table"], ver.get("metric", "score"), title)
    ref = ver.get("best_reference")
    if ref:
        params = format_params(ref.get("params") or {})
        tuned = ver.get("tuning_trainings")
        yield Text.assemble(
            ("Best tuned reference ", "bold"),
            ref["name"] + (f" ({params})" if params else ""),
            f": test {format_number(ref['test_mean'])}",
            f" (references tuned on validation with {tuned} trainings)" if tuned else "",
        )
    if ver.get("verdict"):
        yield Text(str(ver["verdict"]), style="bold")


def markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (floats with 4 decimals, pipes escaped)."""

    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(False)]
    return "\n".join(lines)


def runs_table(runs: Sequence[Run], root: Path) -> Table:
    """``loss-rl runs``: status, budget used, best loss and its scores of each run.

    A damaged run (``Run.damage``) gets one row: status ``damaged`` and the reason in the
    best-loss column, and the listing goes on.
    """
    table = Table(title=f"runs in {root}", title_justify="left")
    for col in ("run", "env", "agent", "status", "trainings", "best loss", "val", "test"):
        table.add_column(col, overflow="fold" if col == "best loss" else "ellipsis")
    for r in runs:
        if r.damage is not None:
            reason = Text(r.damage, style="red")  # Text: a path's [brackets] are not markup
            table.add_row(r.path.name, "—", "—", "damaged", "—", reason, "—", "—")
            continue
        s = r.summary or {}
        best = r.best or {}
        test = None
        ver = s.get("verification") or {}
        for row in ver.get("table", []):
            if row["loss"] == ver.get("winner"):
                test = row["mean"]
        counts = r.counts
        table.add_row(
            r.path.name,
            str(r.env_name),
            str(r.algo),
            s.get("status", "running or killed"),
            f"{counts['trained']}/{r.budget}",
            str(best.get("expression", "—")),
            format_number(best.get("val_score")),
            format_number(test),
        )
    return table


def inspection(ins: Inspection) -> Iterator[RenderableType]:
    """``loss-rl inspect``: everything it prints about a run, in order (the report path aside)."""
    s = ins.summary
    yield run_facts_table(s)
    best = s.get("best")
    if best:
        yield best_loss_line(best)
    yield top_table(s["top"])
    if s.get("hall_of_fame"):
        yield hall_of_fame_table(s["hall_of_fame"])
    ver = s.get("verification")
    if ver:
        yield from verification_parts(ver)
    if ins.rollout is not None:
        yield rollout_table(ins.rollout)
        yield usage_table(ins.usage)
    if len(ins.outcomes):
        yield outcomes_table(ins.outcomes)
    for note in ins.missing:
        yield Text(f"missing: {note}", style="yellow")
    for name, path in ins.plots.items():
        yield f"plot {name}: {path}"


def run_facts_table(summary: Mapping[str, Any]) -> Table:
    """A run's folder, status, task, agent, budget used, timing and reference score."""
    s = summary
    ev = s["evaluations"]
    table = Table(title=f"run {s['name']}", title_justify="left", show_header=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    wall = format_number(s["wall_seconds"], 1)
    if s["wall_seconds_estimated"]:
        wall += " (estimated)"
    resolved = format_number(s["resolved_without_training"], 3)
    facts = [
        ("folder", s["run"]),
        ("status", s["status"]),
        ("env / task", f"{s['env']}: {s['task']}"),
        ("agent", s["agent"]),
        ("budget used", f"{ev['trained']} / {s['budget']} trainings"),
        ("wall time (s)", wall),
        ("evaluations/s", format_number(s["evals_per_second"], 2)),
        ("resolved without training", f"{resolved} of {ev['proposed']} proposals"),
        ("reference (CE) val", format_number(s["reference_score"])),
    ]
    data = s.get("data")
    if data:
        facts.insert(
            3,
            (
                "data",
                f"{data.get('summary', data.get('path'))} (sha256 "
                f"{str(data.get('sha256', ''))[:12]}…)",
            ),
        )
    for key, value in facts:
        table.add_row(key, Text(str(value)))
    return table


def best_loss_line(best: Mapping[str, Any], note: str = "") -> Text:
    """``Best loss EXPR  = SIMPLIFIED  (size N)  (val SCORE)``.

    The simplified form only where it differs from the expression; summaries written before
    simplified forms have neither it nor the size.
    """
    line = Text.assemble(("Best loss ", "bold"), (str(best["expression"]), "green"))
    readable = best.get("simplified")
    if readable and readable != best["expression"]:
        line.append(f"  = {readable}")
    if best.get("size") is not None:
        line.append(f"  (size {best['size']})")
    line.append(f"  (val {format_number(best.get('val_score'))}{note})")
    return line


def hall_of_fame_table(front: Sequence[Mapping[str, Any]]) -> Table:
    """The hall of fame (:func:`loss_rl.store.hall_of_fame`), best score first.

    Each row is smaller than the one before it; ``#`` is what ``loss-rl export RUN --pick``
    takes.
    """
    table = Table(
        title="hall of fame: validation score against size (Pareto front)", title_justify="left"
    )
    for col in ("#", "size", "val score", "loss (simplified)", "known as"):
        table.add_column(col, overflow="fold" if col.startswith("loss") else "ellipsis")
    for row in front:
        table.add_row(
            str(row["rank"]),
            str(row["size"]),
            format_number(row["score"]),
            Text(str(row.get("simplified") or row["expression"])),
            Text(str(row.get("known_as") or "—"), style="yellow" if row.get("known_as") else None),
        )
    return table


def top_table(top: Sequence[Mapping[str, Any]]) -> Table:
    """The best losses of a run by validation score (:func:`loss_rl.inspect.run_summary`)."""
    table = Table(title=f"top {len(top)} losses (validation)", title_justify="left")
    for col in ("#", "loss", "val score"):
        table.add_column(col, overflow="fold" if col == "loss" else "ellipsis")
    for row in top:
        table.add_row(str(row["rank"]), Text(row["expression"]), format_number(row["score"]))
    return table


def rollout_table(roll: Rollout) -> Table:
    """A policy rollout, one row per step (:func:`loss_rl.inspect.rollout_rows`)."""
    rows = rollout_rows(roll)
    kind = "greedy" if roll.deterministic else "sampled"
    title = f"policy: {kind} rollout ({roll.algo}, seed {roll.seed}), start {roll.start}"
    table = Table(title=title, title_justify="left")
    for col in rows[0] if rows else ():
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(Text(v) for v in row.values()))
    return table


def usage_table(usage: pd.DataFrame, top: int = 10) -> Table:
    """The edits the final policy uses most (:func:`loss_rl.inspect.action_usage`)."""
    table = Table(title="edit usage of the final policy (sampled episodes)", title_justify="left")
    for col in ("edit", "count", "share"):
        table.add_column(col)
    for u in usage.head(top).itertuples(index=False):
        table.add_row(Text(str(u.edit)), str(u.count), f"{u.share:.2f}")
    return table


def outcomes_table(outcomes: pd.DataFrame) -> Table:
    """Proposals over training (:func:`loss_rl.inspect.outcomes_over_training`)."""
    table = Table(title="proposals over training", title_justify="left")
    columns = (
        "part",
        "proposals",
        "new",
        "cached",
        "rejected",
        "mean ok score",
        "best",
        "edits used most",
    )
    for col in columns:
        table.add_column(col, overflow="fold" if col == "edits used most" else "ellipsis")
    for o in outcomes.itertuples(index=False):
        table.add_row(
            o.part,
            str(o.proposals),
            f"{o.new:.2f}",
            f"{o.cached:.2f}",
            f"{o.rejected:.2f}",
            format_number(o.score),
            format_number(o.best),
            Text(o.top_edits or "—"),
        )
    return table
