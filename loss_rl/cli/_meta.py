"""Meta-learning commands: ``refine`` (a loss's constants) and ``meta-train`` (a neural loss).

Both check their options and output paths before the meta-training (the library does, and the
verification seeds here): nothing fails after minutes of work for a reason known at the start.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from loss_rl.cli._choices import MAX_SEED, MAX_VERIFY_SEEDS, TrustCode
from loss_rl.cli._console import console
from loss_rl.errors import ConfigError


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


def _verify_seeds(seeds: int, no_verify: bool) -> int:
    """The verification seeds a command passes on: ``--seeds`` (>= 2), or 0 with ``--no-verify``.

    Checked before any work: a count the verification refuses would otherwise fail only after
    the whole refinement, and ``--seeds 0`` used to skip the verification without a word.

    Raises:
        ConfigError: for ``--seeds`` below 2 without ``--no-verify``.
    """
    if no_verify:
        return 0
    if seeds < 2:
        raise ConfigError(
            f"give 2 or more fresh seeds (the paired test on the test split needs 2), got "
            f"{seeds}; pass --no-verify to skip the verification",
            field="--seeds",
        )
    return seeds


def refine(
    source: Annotated[
        str,
        typer.Argument(
            help="An expression, a known loss name, a JSON spec or a run folder (its best loss)."
        ),
    ],
    env: Annotated[
        str | None, typer.Option(help="Env preset (default: the run's env for a run folder).")
    ] = None,
    meta_steps: Annotated[int, typer.Option(help="Outer (meta-gradient) steps.")] = 30,
    inner_steps: Annotated[
        int | None, typer.Option(help="Unrolled inner steps (default: the task's full_steps).")
    ] = None,
    seeds: Annotated[
        int,
        typer.Option(
            help="Fresh paired seeds of the verification on test (>= 2).", max=MAX_VERIFY_SEEDS
        ),
    ] = 10,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Skip the verification on the test split.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder to write the refined loss into. Default: next to a JSON spec "
            "(<stem>.refined.json), RUN/refined/ for a run folder (loss.json + loss.py), the "
            "current folder (loss.refined.json) for an expression or a known loss name.",
            file_okay=False,
        ),
    ] = None,
    trust_code: TrustCode = False,
) -> None:
    """Refine a loss's constants by differentiating through its inner training (MAML/EvoMAL)."""
    from loss_rl.cli._tables import verification_table

    verify_seeds = _verify_seeds(seeds, no_verify)
    api = _api()
    # Where it goes, said before the work: an expression's default is the current folder.
    target = api.resolve_source(source).refined_path(out)
    term = console()
    term.print(f"The refined loss goes to {target}")
    bar, report = _meta_progress(term, "refine")
    with bar:
        res = api.refine(
            source,
            env,
            meta_steps=meta_steps,
            inner_steps=inner_steps,
            verify_seeds=verify_seeds,
            out=out,
            progress=report,
            trust_code=trust_code,
        )
    term.print(f"[bold]original[/] {res.original}\n[bold]refined [/] {res.refined}")
    for dead in res.summary.get("no_gradient_constants", []):
        term.print(f"[yellow]constant without gradient:[/] {dead}")
    if res.verification is not None:
        rows = res.verification.to_dict(orient="records")
        metric = res.verification.attrs.get("metric", "score")
        term.print(verification_table(rows, metric, "verification on test, fresh seeds"))
    else:
        term.print("[yellow]Not verified on the test split (--no-verify).[/]")
    for what, path in res.paths.items():
        term.print(f"wrote {what}: {path}")


def meta_train_command(
    env: Annotated[str, typer.Option(help="Env preset name or YAML path.")] = "digits_noisy",
    meta_steps: Annotated[int, typer.Option(help="Outer (meta-gradient) steps.")] = 100,
    inner_steps: Annotated[
        int | None, typer.Option(help="Unrolled inner steps (default: the task's full_steps).")
    ] = None,
    seeds: Annotated[
        int,
        typer.Option(
            help="Fresh paired seeds of the comparison with CE on test (>= 2).",
            max=MAX_VERIFY_SEEDS,
        ),
    ] = 10,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Skip the comparison on the test split.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output folder (default: results/meta_<env>_s<seed>); checked before training.",
            file_okay=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the loss network.", min=0, max=MAX_SEED)] = 0,
) -> None:
    """Meta-train an ML3-style neural loss network and export it (JSON + standalone .py)."""
    verify_seeds = _verify_seeds(seeds, no_verify)
    term = console()
    bar, report = _meta_progress(term, "meta-train")
    with bar:
        res = _api().meta_train(
            env,
            meta_steps=meta_steps,
            inner_steps=inner_steps,
            verify_seeds=verify_seeds,
            out=out,
            seed=seed,
            progress=report,
        )
    if res.verification is not None:
        term.print(res.verification.to_string(index=False))
    else:
        term.print("[yellow]Not compared on the test split (--no-verify).[/]")
    for what, path in res.paths.items():
        term.print(f"wrote {what}: {path}")
