"""Meta-learning commands: ``refine`` (a loss's constants) and ``meta-train`` (a neural loss)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from loss_rl.cli._console import console


def _api() -> ModuleType:
    """The module of ``refine`` and ``meta_train``: their one import site in the CLI.

    Imported on use: it loads the meta-learning machinery, and ``loss-rl --help`` should not
    wait for it.
    """
    from loss_rl import _refine

    return _refine


def _meta_progress(out: Console, what: str) -> tuple[Progress, Any]:
    """A rich progress bar fed by :class:`loss_rl.meta.MetaProgress` snapshots."""
    bar = Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        console=out,
    )
    task = bar.add_task(what, total=1, info="")

    def report(p: Any) -> None:
        info = "verifying on test" if p.phase == "verify" else f"meta-loss {p.meta_loss:.4f}"
        bar.update(task, total=p.total, completed=p.step, info=info)

    return bar, report


def refine(
    source: Annotated[
        str, typer.Argument(help="An expression, a JSON spec or a run folder (its best loss).")
    ],
    env: Annotated[
        str | None, typer.Option(help="Env preset (default: the run's env for a run folder).")
    ] = None,
    meta_steps: Annotated[int, typer.Option(help="Outer (meta-gradient) steps.")] = 30,
    inner_steps: Annotated[
        int | None, typer.Option(help="Unrolled inner steps (default: the task's full_steps).")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Fresh seeds of the verification.")] = 10,
) -> None:
    """Refine a loss's constants by differentiating through its inner training (MAML/EvoMAL)."""
    from loss_rl.cli._tables import verification_table

    out = console()
    bar, report = _meta_progress(out, "refine")
    with bar:
        res = _api().refine(
            source,
            env,
            meta_steps=meta_steps,
            inner_steps=inner_steps,
            verify_seeds=seeds,
            progress=report,
        )
    out.print(f"[bold]original[/] {res.original}\n[bold]refined [/] {res.refined}")
    for dead in res.summary.get("no_gradient_constants", []):
        out.print(f"[yellow]constant without gradient:[/] {dead}")
    if res.verification is not None:
        rows = res.verification.to_dict(orient="records")
        metric = res.verification.attrs.get("metric", "score")
        out.print(verification_table(rows, metric, "verification on test, fresh seeds"))
    for what, path in res.paths.items():
        out.print(f"wrote {what}: {path}")


def meta_train_command(
    env: Annotated[str, typer.Option(help="Env preset name or YAML path.")] = "digits_noisy",
    meta_steps: Annotated[int, typer.Option(help="Outer (meta-gradient) steps.")] = 100,
    inner_steps: Annotated[
        int | None, typer.Option(help="Unrolled inner steps (default: the task's full_steps).")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Fresh seeds of the verification.")] = 10,
    out: Annotated[Path | None, typer.Option(help="Output folder.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the loss network.")] = 0,
) -> None:
    """Meta-train an ML3-style neural loss network and export it (JSON + standalone .py)."""
    term = console()
    bar, report = _meta_progress(term, "meta-train")
    with bar:
        res = _api().meta_train(
            env,
            meta_steps=meta_steps,
            inner_steps=inner_steps,
            verify_seeds=seeds,
            out=out,
            seed=seed,
            progress=report,
        )
    if res.verification is not None:
        term.print(res.verification.to_string(index=False))
    for what, path in res.paths.items():
        term.print(f"wrote {what}: {path}")
