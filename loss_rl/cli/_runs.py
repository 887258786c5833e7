"""Commands that run or list searches: ``search``, ``pretrain``, ``resume`` and ``runs``.

A search shows a progress bar; Ctrl-C keeps every finished evaluation and the agent, and exits
with code 130 after printing how to resume. A search that ends before its budget (a proposal or
env-step cap: ``stopped`` in ``summary.json``) prints why and exits with code 3
(:data:`EXIT_STOPPED_SHORT`); its run folder is complete (verified, exported) all the same.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from loss_rl.cli._choices import DEFAULT_ENV, MAX_SEED, ExecutorName, Kind, TrustCode
from loss_rl.cli._console import console
from loss_rl.errors import ConfigError

EXIT_INTERRUPTED = 130
EXIT_STOPPED_SHORT = 3
"""Exit code of a search that finished before spending its budget (``stopped`` in its summary)."""


def _command_line() -> str:
    """The command line as typed, to be logged in the run folder's ``command.txt``."""
    return shlex.join(["loss-rl", *sys.argv[1:]])


def _run_with_progress(
    search: Any, out: Console, resume_hint: str = "loss-rl resume", label: str = "search"
) -> Any:
    """Run a search with a rich progress bar; Ctrl-C saves and exits with code 130."""
    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("trainings"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=out, transient=False) as bar:
        task = bar.add_task("search", total=search.budget, info="")

        def report(p: Any) -> None:
            best = "—" if p.best_score is None else f"{p.best_score:.4f}"
            info = (
                f"best {best} · {p.evals_per_second:.1f} trainings/s · "
                f"{100 * p.resolved_without_training:.0f}% free"
            )
            bar.update(task, completed=min(p.trained, search.budget), info=info)

        try:
            return search.run(progress=report)
        except KeyboardInterrupt:
            bar.stop()
            out.print(
                f"[yellow]Interrupted: the agent and every finished evaluation are saved.[/]\n"
                f"Continue with: {resume_hint} {search.path}"
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None


def _print_summary(run: Any, out: Console) -> None:
    """The end of a search: counts, timing, the best loss, verification and what to do next."""
    from loss_rl.cli._tables import best_loss_line, hall_of_fame_table, verification_parts

    s = run.summary or {}
    ev = s.get("evaluations", {})
    out.print(
        f"\n[bold]Run[/] {run.path}  ·  {s.get('env')} / {s.get('agent')}  ·  "
        f"{ev.get('trained', 0)} trainings of {s.get('budget')}  ·  "
        f"{s.get('wall_seconds', 0):.0f} s ({s.get('evals_per_second', 0):.1f} trainings/s)  ·  "
        f"{100 * s.get('resolved_without_training', 0):.0f}% of {ev.get('proposed', 0)} "
        "proposals resolved without training"
    )
    best = s.get("best")
    if best:
        noisy = " on noisy labels" if (s.get("protocol") or {}).get("val_labels") == "noisy" else ""
        out.print(best_loss_line(best, noisy))
    ver = s.get("verification")
    if ver:
        for part in verification_parts(ver):
            out.print(part)
    front = s.get("hall_of_fame")
    if front:
        out.print(hall_of_fame_table(front))
    pick = f" [--pick 1..{len(front)}: a hall-of-fame loss]" if front else ""
    out.print(
        f"\nInspect:  loss-rl inspect {run.path} --html\n"
        f"Export:   loss-rl export {run.path} --format py --out discovered_loss.py{pick}"
    )
    stopped = s.get("stopped")
    if stopped:
        out.print(f"[yellow]Stopped before the budget: {stopped}[/]")


def _exit_if_stopped_short(run: Any) -> None:
    """Exit with :data:`EXIT_STOPPED_SHORT` when the search ended before its budget."""
    if (run.summary or {}).get("stopped"):
        raise typer.Exit(EXIT_STOPPED_SHORT)


#: The options of a ``file`` dataset as ``loss-rl search`` spells them.
_DATA_OPTIONS = {
    "task.dataset.path": "--data",
    "task.dataset.target": "--target",
    "task.dataset.task_kind": "--kind",
    "task.dataset.test_path": "--test",
    "task.dataset.drop_missing": "--drop-missing",
}
_YAML_HINTS = {
    "set drop_missing: true": "pass --drop-missing",
    "set task_kind: classification": "pass --kind classification",
    "set task_kind: regression": "pass --kind regression",
    "task_kind: regression": "--kind regression",
}


def _as_data_option(err: ConfigError) -> ConfigError:
    """A data error named by the command-line option it came from (``--target``, not YAML)."""
    field = _DATA_OPTIONS.get(err.field or "")
    if field is None:
        return err
    message = str(err)[len(err.field or "") + 2 :]
    for yaml_hint, cli_hint in _YAML_HINTS.items():
        message = message.replace(yaml_hint, cli_hint)
    return ConfigError(message, field=field)


SMALL_VAL = 100
"""A validation split under this many rows gets a warning (``--data``)."""


def search(
    env: Annotated[
        str | None,
        typer.Option(
            help=f"Env preset name (envs/*.yaml) or a YAML path. Default: {DEFAULT_ENV}; with "
            "--data, the default preset of the data's task kind (its search settings)."
        ),
    ] = None,
    agent: Annotated[
        str,
        typer.Option(
            help="dqn | ppo | maskable_ppo | risk_seeking_ppo | random | evolution | optuna | "
            "pretrained (the policy shipped in the package), or YAML."
        ),
    ] = "maskable_ppo",
    budget: Annotated[
        int | None,
        typer.Option(
            help="Inner trainings to spend (default: the env preset's); at most 100000 unless "
            "--no-cap."
        ),
    ] = None,
    no_cap: Annotated[
        bool,
        typer.Option("--no-cap", help="Allow a --budget above the cap of 100000 trainings."),
    ] = False,
    seed: Annotated[
        int, typer.Option(help="Seed of the agent and environments.", min=0, max=MAX_SEED)
    ] = 0,
    out: Annotated[Path, typer.Option(help="Parent folder of the run folder.")] = Path("results"),
    name: Annotated[str | None, typer.Option(help="Run folder name.")] = None,
    init_agent: Annotated[
        Path | None,
        typer.Option(help="Start from the trained policy of this run folder (or agent.zip)."),
    ] = None,
    no_train: Annotated[
        bool, typer.Option("--no-train", help="Only roll the trained policy out (no learning).")
    ] = False,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="Log the agent's training to RUN/tb/.")
    ] = False,
    executor: Annotated[
        ExecutorName | None,
        typer.Option(
            help="Where inner trainings run: inprocess, or ray (pip install "
            "'loss-rl[ray]'). Default: the env preset's executor, else inprocess."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster for --executor ray: auto | HOST:PORT | ray://HOST:PORT. "
            "Default: $RAY_ADDRESS, else a private local Ray instance."
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="Where the inner trainings run: cpu | cuda | cuda:N | auto (a GPU when there "
            "is one). Default: the env preset's executor.device, else cpu."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Search on your data: a CSV, Parquet, .npz (arrays x, y) or .npy file. "
            "Everything else comes from --env.",
            rich_help_panel="Your data",
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="The label column of --data (CSV/Parquet; a column index for .npy).",
            rich_help_panel="Your data",
        ),
    ] = None,
    kind: Annotated[
        Kind | None,
        typer.Option(
            help="Task kind of --data (default: inferred from the target, and printed).",
            rich_help_panel="Your data",
        ),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="Fraction of --data held out for validation (default: the preset's).",
            min=0.0,
            max=1.0,
            rich_help_panel="Your data",
        ),
    ] = None,
    test: Annotated[
        Path | None,
        typer.Option(
            help="A test file with the same columns as --data (default: a fraction is drawn).",
            rich_help_panel="Your data",
        ),
    ] = None,
    drop_missing: Annotated[
        bool,
        typer.Option(
            "--drop-missing",
            help="Leave out rows with missing or infinite values instead of refusing them.",
            rich_help_panel="Your data",
        ),
    ] = False,
) -> None:
    """Search for a loss: the agent edits losses, each scored by a short inner training.

    --agent may also be a run folder: its agent, starting from its trained policy. With --data
    the task reads your file (numeric features standardised on the training split, text columns
    one-hot encoded, no label noise injected). Exits with code 3 when the search stops before
    its budget (summary.json says why).
    """
    from loss_rl._search import DataSpec, Search

    term = console()
    if data is None:
        for given, flag in (
            (target, "--target"),
            (kind, "--kind"),
            (val_fraction, "--val-fraction"),
            (test, "--test"),
        ):
            if given is not None:
                raise ConfigError(f"{flag} describes --data; give --data PATH too", field=flag)
        if drop_missing:
            raise ConfigError(
                "--drop-missing describes --data; give --data PATH too", field="--drop-missing"
            )
    spec = (
        DataSpec(
            data,
            target,
            kind.value if kind is not None else None,
            val_fraction,
            test,
            drop_missing,
        )
        if data is not None
        else None
    )
    try:
        s = Search.create(
            env,
            agent,
            budget=budget,
            seed=seed,
            out=out,
            name=name,
            command=_command_line(),
            init_agent=init_agent,
            train=not no_train,
            tensorboard=tensorboard,
            executor=executor.value if executor else None,
            ray_address=ray_address,
            device=device,
            cap=not no_cap,
            data=spec,
        )
    except ConfigError as err:
        raise _as_data_option(err) if spec is not None else err from None
    if spec is not None:
        record = s.data_record or {}
        term.print(Text(f"Data: {record.get('summary', data)}"), soft_wrap=True)
        n_val = s.env_preset.task.split.sizes(int(record.get("rows") or 0))[0]
        if 0 < n_val < SMALL_VAL:
            term.print(
                f"[yellow]The validation split holds {n_val} rows: one row is "
                f"{100 / n_val:.1f} points of accuracy, so the search ranks losses coarsely; "
                "the verification's tuned references are the comparison to trust.[/]"
            )
    where = "" if s.executor_config.name == "inprocess" else f", executor {s.executor_config.name}"
    if s.executor_config.device not in (None, "cpu"):
        where += f", device {s.executor_config.resolved_device()}"
    term.print(
        f"Run folder: {s.path}  (env {s.env_preset.name}, agent {s.agent_config.algo}, "
        f"budget {s.budget} trainings{where})"
    )
    run = _run_with_progress(s, term)
    _print_summary(run, term)
    _exit_if_stopped_short(run)


def pretrain(
    suite: Annotated[
        str | None,
        typer.Option(help="Suite name (envs/suites/<name>.yaml) or path. E.g. classification."),
    ] = None,
    agent: Annotated[str, typer.Option(help="maskable_ppo | ppo | dqn, or YAML.")] = "maskable_ppo",
    budget: Annotated[
        int | None,
        typer.Option(help="Inner trainings across the suite (default: its pretrain_budget)."),
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Leave this task out (repeatable).")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the agent, envs and task order.", min=0, max=MAX_SEED)
    ] = 0,
    out: Annotated[Path, typer.Option(help="Parent folder.")] = Path("results"),
    name: Annotated[str | None, typer.Option(help="Folder name.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this interrupted pretraining folder.")
    ] = None,
    trust_code: TrustCode = False,
) -> None:
    """Pretrain a loss-design policy across the tasks of a suite (one task per episode).

    Writes FOLDER/agent.zip and its card (card.md, card.json, curve.png). Use it on a new task
    with `loss-rl search --env TASK --agent maskable_ppo --init-agent FOLDER [--no-train]`.
    """
    from loss_rl.pretrain import Pretraining

    term = console()
    if resume is not None:
        p = Pretraining.open(resume, trust_code=trust_code)
        p.log_command(_command_line())
    elif suite is None:
        from loss_rl.presets import list_suites

        raise ConfigError(
            f"give --suite NAME|PATH (shipped: {', '.join(list_suites())}) or --resume FOLDER",
            field="suite",
        )
    else:
        p = Pretraining.create(
            suite,
            agent,
            budget=budget,
            seed=seed,
            exclude=exclude or (),
            out=out,
            name=name,
            command=_command_line(),
        )
    term.print(
        f"Pretraining folder: {p.path}  (suite {p.suite.name}: {len(p.suite.tasks)} "
        f"tasks, agent {p.agent_config.algo}, budget {p.budget} trainings)"
    )
    _run_with_progress(p, term, resume_hint="loss-rl pretrain --resume", label="pretrain")
    term.print((p.path / "card.md").read_text())
    term.print(
        f"Use it: loss-rl search --env ENV --agent {p.agent_config.algo} --init-agent {p.path} "
        "[--no-train]"
    )


def resume(
    run: Annotated[Path, typer.Argument(help="The run folder to continue.")],
    trust_code: TrustCode = False,
) -> None:
    """Continue an interrupted run to its budget (finished evaluations are never re-trained).

    Exits with code 3 when it stops before its budget (summary.json says why).
    """
    from loss_rl._search import Search

    term = console()
    s = Search.open(run, trust_code=trust_code)
    s.log_command(_command_line())
    term.print(f"Resuming {s.path} (budget {s.budget} trainings)")
    finished = _run_with_progress(s, term)
    _print_summary(finished, term)
    _exit_if_stopped_short(finished)


def runs(
    root: Annotated[Path, typer.Argument(help="Folder holding run folders.")] = Path("results"),
) -> None:
    """List runs with their status, budget and best loss."""
    from loss_rl._search import list_runs
    from loss_rl.cli._tables import runs_table

    found = list_runs(root)
    term = console()
    if not found:
        term.print(f"No runs under {root}.")
        return
    term.print(runs_table(found, root))
