"""Commands on a loss: ``show``, ``export`` and ``evaluate`` (verification on the test split).

A loss on the command line is an existing JSON spec or run folder (its ``best/loss.json``), else
a known loss name, else an expression (``/`` and long expressions included): :func:`resolve`.
Output paths (``--out``, ``--plot``, ``--csv``) are checked before any work: :func:`writable`.
Expressions often start with ``-`` (``-log_p_y``), so these commands pass unknown options through
as arguments (hence no short option names: ``-o`` would capture ``-log_p_y`` as ``-o g_p_y``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loss_rl.cli._choices import DEFAULT_ENV, MAX_VERIFY_SEEDS, Format, Kind, Reduction
from loss_rl.cli._console import console

if TYPE_CHECKING:
    from loss_rl._refine import LossSource
    from loss_rl.expr import Expr


def resolve(source: str) -> LossSource:
    """An existing spec file or run folder, else a known loss name, else an expression.

    The library's one resolver (:func:`loss_rl._refine.resolve_source`, which ``refine`` uses
    too): a text names a file only when that file exists, so expressions with ``/`` and
    expressions longer than a file name are parsed (with the parser's limits).

    Raises:
        RunError: for a run folder without a best loss.
        LossSpecError: for an empty source, a missing ``.json`` file, an invalid spec, a folder
            that is not a run folder, or an expression that does not parse.
    """
    from loss_rl._refine import resolve_source

    return resolve_source(source)


def writable(path: Path, option: str, *, folder: bool = False) -> Path:
    """Check before any work that ``--option PATH`` can be written (nothing is created).

    Raises:
        ConfigError: naming ``--option`` and what is in the way.
    """
    from loss_rl.output_paths import check_writable

    return check_writable(path, f"--{option}", folder=folder)


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
    if plot is not None:
        _check_plot_format(plot)
        writable(plot, "plot")
    expr = loss.expr
    chosen = TaskKind(kind.value) if kind else loss.kind
    resolved = chosen or task_kind(expr) or TaskKind.CLASSIFICATION
    out = console()
    table = loss_table(
        expr, loss.description, resolved, fingerprint(expr, resolved), check(expr, resolved)
    )
    out.print(table)
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
    pick: Annotated[
        int | None,
        typer.Option(
            "--pick",
            help="With a run folder: export the K-th loss of its hall of fame (1 = best score, "
            "as `loss-rl inspect` and the search's summary list them) instead of the verified "
            "best.",
            metavar="K",
        ),
    ] = None,
) -> None:
    """Export a loss as a JSON spec, a standalone PyTorch module, or TorchScript."""
    from loss_rl.export import export

    loss = resolve(source)
    expr, metadata = loss.expr, loss.metadata
    if pick is not None:
        expr, metadata = _picked(loss, pick)
    writable(out, "out")
    path = export(
        expr,
        out,
        format.value,  # type: ignore[arg-type]
        kind=kind.value if kind else loss.kind,
        reduction=reduction.value if reduction else loss.reduction,  # type: ignore[arg-type]
        metadata=metadata,
    )
    hint = {
        Format.json: "load it with loss_rl.load_loss",
        Format.py: "it needs only torch: import DiscoveredLoss from it",
        Format.torchscript: "load it with torch.jit.load or loss_rl.load_loss",
    }[format]
    console().print(f"Wrote {path} ({format.value}: {hint})")


def _picked(loss: LossSource, k: int) -> tuple[Expr, dict[str, Any]]:
    """The ``k``-th loss of a run's hall of fame, and the metadata to export with it.

    Raises:
        ConfigError: naming ``--pick``, when the source is not a run folder or ``k`` is outside
            the hall of fame (the message gives the valid range).
    """
    from loss_rl.errors import ConfigError
    from loss_rl.expr import parse
    from loss_rl.store import hall_of_fame_member, load_run, run_hall_of_fame

    if loss.origin != "run" or loss.path is None:
        raise ConfigError(
            f"picks from a run folder's hall of fame; the source is {loss.description}, not a "
            "run folder",
            field="--pick",
        )
    run = load_run(loss.path)
    front = run_hall_of_fame(run)
    try:
        member = hall_of_fame_member(front, k)
    except IndexError as err:
        raise ConfigError(f"{err} (see loss-rl inspect {run.path})", field="--pick") from None
    metadata = {
        "run": run.path.name,
        "env": run.env_name,
        "hall_of_fame_rank": member["rank"],
        "size": member["size"],
        "search_val_score": member["score"],
        "simplified": member["simplified"],
        "known_as": member.get("known_as"),
    }
    return parse(member["expression"]), metadata


def evaluate(
    losses: Annotated[
        list[str],
        typer.Argument(help="Losses: expressions, known loss names, JSON specs or run folders."),
    ],
    env: Annotated[str, typer.Option(help="Env preset name or YAML path (its task).")] = (
        DEFAULT_ENV
    ),
    seeds: Annotated[
        int, typer.Option(help="Fresh paired seeds.", min=2, max=MAX_VERIFY_SEEDS)
    ] = 10,
    steps: Annotated[
        int | None, typer.Option(help="Training steps (default: the task's full_steps).")
    ] = None,
    tune_references: Annotated[
        bool,
        typer.Option(
            help="Tune each reference's hyper-parameters on the validation split over the "
            "library's grid (GCE q, focal gamma, ...) before comparing; the tuning trainings "
            "are counted in the title."
        ),
    ] = True,
    csv: Annotated[Path | None, typer.Option(help="Also write the table as CSV.")] = None,
    markdown: Annotated[bool, typer.Option(help="Print a Markdown table instead.")] = False,
) -> None:
    """Verify losses against CE and the (tuned) known losses on the test split, with 95 % CIs.

    Every loss trains with the task's checkpoint selection on the validation split. A loss that
    is a library loss up to scale is marked as such. A loss failing a validity check is verified
    anyway, with a warning; a duplicate (same canonical key as an earlier loss or a reference)
    is verified once, with a warning.
    """
    from rich.text import Text

    from loss_rl.cli._tables import markdown as markdown_table
    from loss_rl.cli._tables import verification_table
    from loss_rl.presets import load_env_preset
    from loss_rl.verify import verification_losses, verify

    preset = load_env_preset(env)
    given = []
    for src in losses:
        loss = resolve(src)
        given.append((_label(loss, src), loss.expr))
    if csv is not None:
        writable(csv, "csv")  # before the trainings, which take minutes
    # Duplicates merged or renamed, losses failing a validity check: one line each, before the
    # trainings (Text: an expression's [brackets] are not markup).
    named, warnings = verification_losses(given, preset.task.kind, preset.verification.references)
    for line in warnings:
        console(stderr=True).print(Text(f"Warning: {line}", style="yellow"), soft_wrap=True)
    table = verify(
        named,
        preset.task,
        seeds=seeds,
        steps=steps,
        references=preset.verification.references,
        tune_references=tune_references,
        data_seed=preset.evaluation.data_seed,
    )
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)  # checked creatable above
        table.to_csv(csv, index=False)
    if markdown:
        # Plain print: rich would restyle the pipes and dashes.
        print(markdown_table(table.drop(columns=["reference"])))
    else:
        rows = table.to_dict(orient="records")
        a = table.attrs
        select = "best validation checkpoint" if a["select"] == "best" else "last step"
        tuned = f", references tuned ({a['tuning_trainings']} trainings)" * bool(tune_references)
        title = (
            f"{preset.name}: {a['steps']} steps ({select}), {len(a['seeds'])} fresh seeds, "
            f"test {a['metric']}{tuned}; best reference: {a['best_reference']}"
        )
        console().print(verification_table(rows, table.attrs["metric"], title))


def _label(loss: LossSource, text: str) -> str:
    """A loss's row name: its recorded name, its file or folder name, else its text."""
    name = loss.metadata.get("name")
    if name:
        return str(name)
    return loss.path.name if loss.path is not None else text


def _check_plot_format(path: Path) -> None:
    """A ``--plot`` file name matplotlib can write (its suffix is the image format; none: PNG).

    Raises:
        ConfigError: naming ``--plot`` and the formats there are.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    from loss_rl.errors import ConfigError

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix.lower().lstrip(".")
    if suffix and suffix not in formats:
        raise ConfigError(
            f"{path}: matplotlib cannot write .{suffix} images; use .png or one of "
            f"{', '.join(sorted(formats))}",
            field="--plot",
        )
