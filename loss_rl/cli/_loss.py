"""Commands on a loss: ``show``, ``export`` and ``evaluate`` (verification on the test split).

A loss on the command line is an expression, a known loss name, a JSON spec or a run folder
(its ``best/loss.json``): :func:`resolve`. Expressions often start with ``-`` (``-log_p_y``), so
these commands pass unknown options through as arguments (hence no short option names: ``-o``
would capture ``-log_p_y`` as ``-o g_p_y``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loss_rl.cli._choices import Format, Kind, Reduction
from loss_rl.cli._console import console
from loss_rl.errors import LossSpecError, RunError

if TYPE_CHECKING:
    from loss_rl.expr import Expr, TaskKind


@dataclass(frozen=True)
class Source:
    """A loss named on the command line, with what its source said about it."""

    expr: Expr
    kind: TaskKind | None
    reduction: str
    metadata: dict[str, Any]
    origin: str


def resolve(source: str) -> Source:
    """An expression, a known loss name, a JSON spec path or a run folder (``best/loss.json``).

    Raises:
        RunError: for a folder without ``best/loss.json``.
        LossSpecError: for a missing file or an invalid spec.
        LossSyntaxError: for an expression that does not parse.
    """
    from loss_rl.export import read_spec
    from loss_rl.expr import KNOWN_LOSSES, known_loss, parse

    path = Path(source)
    if path.is_dir():
        spec_path = path / "best" / "loss.json"
        if not spec_path.is_file():
            raise RunError(
                f"{path} is a folder without best/loss.json; pass a run folder whose search has "
                "recorded a best loss, a spec file, a known loss name or an expression"
            )
        path = spec_path
    if path.is_file():
        spec = read_spec(path)
        return Source(spec.expression, spec.kind, spec.reduction, spec.metadata, str(path))
    if source in KNOWN_LOSSES:
        known = KNOWN_LOSSES[source]
        meta = {"name": source, "title": known.title}
        return Source(known_loss(source), known.kind, "mean", meta, f"known loss {source!r}")
    if source.endswith(".json") or os.sep in source:
        raise LossSpecError(f"no such file or folder: {source}", field="path")
    return Source(parse(source), None, "mean", {}, "expression")


def show(
    source: Annotated[
        str,
        typer.Argument(
            help="A loss expression (e.g. '-(1 - p_y)^2 * log_p_y'), a known loss name "
            "(e.g. gce), a JSON spec or a run folder."
        ),
    ],
    kind: Annotated[
        Kind | None,
        typer.Option(help="Task kind; inferred from the leaves when omitted."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Save a PNG of the loss and its gradient against p_y (classification, "
            "compared with cross-entropy) or against the residual (regression).",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Show a loss: its canonical key, numeric fingerprint and validity checks."""
    from loss_rl.cli._tables import loss_table
    from loss_rl.expr import TaskKind, check, fingerprint, task_kind

    loss = resolve(source)
    expr = loss.expr
    chosen = TaskKind(kind.value) if kind else loss.kind
    resolved = chosen or task_kind(expr) or TaskKind.CLASSIFICATION
    out = console()
    out.print(
        loss_table(expr, loss.origin, resolved, fingerprint(expr, resolved), check(expr, resolved))
    )
    if plot is not None:
        from loss_rl.inspect import plot_loss

        # Plotting needs a loss that compiles (a failed check may still be worth a look).
        plot_loss(expr, resolved, plot, label=str(loss.metadata.get("name") or expr))
        out.print(f"Saved the plot to {plot}")


def export_command(
    source: Annotated[
        str,
        typer.Argument(
            help="A loss expression, a known loss name (e.g. gce), a JSON spec, or a run folder "
            "(its best/loss.json is exported)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="File to write.", dir_okay=False)],
    format: Annotated[
        Format, typer.Option("--format", help="json spec, standalone .py, or TorchScript.")
    ] = Format.json,
    kind: Annotated[
        Kind | None,
        typer.Option(help="Task kind; taken from the source, or inferred from the leaves."),
    ] = None,
    reduction: Annotated[
        Reduction | None,
        typer.Option(help="Default batch reduction; taken from the source, or 'mean'."),
    ] = None,
) -> None:
    """Export a loss as a JSON spec, a standalone PyTorch module, or TorchScript."""
    from loss_rl.export import export

    loss = resolve(source)
    path = export(
        loss.expr,
        out,
        format.value,  # type: ignore[arg-type]
        kind=kind.value if kind else loss.kind,
        reduction=reduction.value if reduction else loss.reduction,  # type: ignore[arg-type]
        metadata=loss.metadata,
    )
    hint = {
        Format.json: "load it with loss_rl.load_loss",
        Format.py: "it needs only torch: import DiscoveredLoss from it",
        Format.torchscript: "load it with torch.jit.load or loss_rl.load_loss",
    }[format]
    console().print(f"Wrote {path} ({format.value}: {hint})")


def evaluate(
    losses: Annotated[
        list[str],
        typer.Argument(help="Losses: expressions, known loss names, JSON specs or run folders."),
    ],
    env: Annotated[str, typer.Option(help="Env preset name or YAML path (its task).")] = (
        "digits_noisy"
    ),
    seeds: Annotated[int, typer.Option(help="Fresh paired seeds (>= 2).")] = 10,
    steps: Annotated[
        int | None, typer.Option(help="Training steps (default: the task's full_steps).")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="Also write the table as CSV.")] = None,
    markdown: Annotated[bool, typer.Option(help="Print a Markdown table instead.")] = False,
) -> None:
    """Verify losses against CE and the known losses on the test split, with 95 % CIs."""
    from loss_rl.cli._tables import markdown as markdown_table
    from loss_rl.cli._tables import verification_table
    from loss_rl.presets import load_env_preset
    from loss_rl.verify import verify

    preset = load_env_preset(env)
    named = {}
    for src in losses:
        loss = resolve(src)
        label = str(loss.metadata.get("name") or (Path(src).name if Path(src).exists() else src))
        named[label] = loss.expr
    table = verify(
        named,
        preset.task,
        seeds=seeds,
        steps=steps,
        references=preset.verification.references,
        data_seed=preset.evaluation.data_seed,
    )
    if csv is not None:
        table.to_csv(csv, index=False)
    if markdown:
        # Plain print: rich would restyle the pipes and dashes.
        print(markdown_table(table.drop(columns=["reference"])))
    else:
        rows = table.to_dict(orient="records")
        title = (
            f"{preset.name}: {table.attrs['steps']} steps, {len(table.attrs['seeds'])} "
            f"fresh seeds, test {table.attrs['metric']}"
        )
        console().print(verification_table(rows, table.attrs["metric"], title))
