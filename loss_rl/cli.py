"""The ``loss-rl`` command line (typer + rich).

The CLI parses arguments, calls the library and owns the console. Every command is registered on
:data:`app`; the app's group class turns the library's typed errors
(:class:`~loss_rl.errors.LossRLError`) into one red message and exit code 2, unless ``--debug``
asks for the traceback. Add a command with ``@app.command()`` and it gets the same handling.

Heavy imports (torch, matplotlib) happen inside the commands, so ``loss-rl --help`` stays quick.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from loss_rl.errors import ConfigError, LossRLError, LossSpecError, RunError

if TYPE_CHECKING:
    from loss_rl.expr import Expr, TaskKind

EXIT_BAD_INPUT = 2


class _Group(TyperGroup):
    """Runs a command; a typed loss_rl error becomes one red line and exit code 2."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LossRLError as err:
            if ctx.params.get("debug"):
                raise
            # soft_wrap: a syntax error's caret must stay under the character it points at.
            Console(stderr=True).print(Text(f"Error: {err}", style="bold red"), soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None


app = typer.Typer(
    cls=_Group,
    name="loss-rl",
    help="Discover training loss functions with reinforcement learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback when a command fails.")
    ] = False,
) -> None:
    """Discover training loss functions with reinforcement learning."""


# The choices below mirror TaskKind, export.FORMATS and the reductions: importing those would
# import torch, and `loss-rl --help` should not wait for it. tests/test_cli.py keeps them equal.
class Kind(str, Enum):
    """Task kinds, as CLI choices."""

    classification = "classification"
    regression = "regression"


class Format(str, Enum):
    """Export formats, as CLI choices."""

    json = "json"
    py = "py"
    torchscript = "torchscript"


class Reduction(str, Enum):
    """Batch reductions, as CLI choices."""

    mean = "mean"
    sum = "sum"
    none = "none"


class ExecutorName(str, Enum):
    """Executors (loss_rl.executors.EXECUTORS), as CLI choices."""

    inprocess = "inprocess"
    ray = "ray"


@dataclass(frozen=True)
class _Source:
    """A loss named on the command line, with what its source said about it."""

    expr: Expr
    kind: TaskKind | None
    reduction: str
    metadata: dict[str, Any]
    origin: str


def _resolve(source: str) -> _Source:
    """An expression, a known loss name, a JSON spec path or a run folder (``best/loss.json``)."""
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
        return _Source(spec.expression, spec.kind, spec.reduction, spec.metadata, str(path))
    if source in KNOWN_LOSSES:
        known = KNOWN_LOSSES[source]
        meta = {"name": source, "title": known.title}
        return _Source(known_loss(source), known.kind, "mean", meta, f"known loss {source!r}")
    if source.endswith(".json") or os.sep in source:
        raise LossSpecError(f"no such file or folder: {source}", field="path")
    return _Source(parse(source), None, "mean", {}, "expression")


# Expressions often start with "-" (e.g. "-log_p_y"): unknown options pass through as arguments.
# (Hence no short option names on these commands: "-o" would capture "-log_p_y" as "-o g_p_y".)
_EXPRESSION_ARGS = {"ignore_unknown_options": True}


@app.command(context_settings=_EXPRESSION_ARGS)
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
    from loss_rl.expr import TaskKind, check, compile_loss, fingerprint, task_kind

    loss = _resolve(source)
    expr = loss.expr
    chosen = TaskKind(kind.value) if kind else loss.kind
    resolved = chosen or task_kind(expr) or TaskKind.CLASSIFICATION
    result = check(expr, resolved)

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("expression", Text(str(expr)))
    table.add_row("source", Text(loss.origin))
    table.add_row("kind", resolved.value)
    # The canonical form's text is the key under which evaluations are cached.
    table.add_row("canonical key", Text(expr.key))
    table.add_row("fingerprint", fingerprint(expr, resolved) or "- (not finite on the probes)")
    table.add_row("size / depth", f"{expr.size()} / {expr.depth()}")
    if result.ok:
        table.add_row("checks", Text("ok", style="green"))
    for code, message in result.reasons:
        table.add_row("checks", Text(f"{code}: {message}", style="red"))
    console = Console()
    console.print(table)
    if plot is not None:
        # Plotting needs a loss that compiles (a failed check may still be worth a look).
        label = str(loss.metadata.get("name") or expr)
        _plot(compile_loss(expr, resolved), resolved, label, str(expr), plot)
        console.print(f"Saved the plot to {plot}")


@app.command("export", context_settings=_EXPRESSION_ARGS)
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

    loss = _resolve(source)
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
    Console().print(f"Wrote {path} ({format.value}: {hint})")


def _command_line() -> str:
    import shlex
    import sys

    return shlex.join(["loss-rl", *sys.argv[1:]])


def _run_with_progress(
    search: Any, console: Console, resume_hint: str = "loss-rl resume", label: str = "search"
) -> Any:
    """Run a search with a rich progress bar; Ctrl-C saves and exits with code 130."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("trainings"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("search", total=search.budget, info="")

        def report(p: Any) -> None:
            best = "—" if p.best_score is None else f"{p.best_score:.4f}"
            info = (f"best {best} · {p.evals_per_second:.1f} trainings/s · "
                    f"{100 * p.resolved_without_training:.0f}% free")  # fmt: skip
            bar.update(task, completed=min(p.trained, search.budget), info=info)

        try:
            return search.run(progress=report)
        except KeyboardInterrupt:
            bar.stop()
            console.print(
                f"[yellow]Interrupted: the agent and every finished evaluation are saved.[/]\n"
                f"Continue with: {resume_hint} {search.path}"
            )
            raise typer.Exit(130) from None


def _print_summary(run: Any, console: Console) -> None:
    s = run.summary or {}
    ev = s.get("evaluations", {})
    console.print(
        f"\n[bold]Run[/] {run.path}  ·  {s.get('env')} / {s.get('agent')}  ·  "
        f"{ev.get('trained', 0)} trainings of {s.get('budget')}  ·  "
        f"{s.get('wall_seconds', 0):.0f} s ({s.get('evals_per_second', 0):.1f} trainings/s)  ·  "
        f"{100 * s.get('resolved_without_training', 0):.0f}% of {ev.get('proposed', 0)} "
        "proposals resolved without training"
    )
    best = s.get("best")
    if best:
        console.print(f"[bold]Best loss[/] {best['expression']}  (val {best['val_score']:.4f})")
    ver = s.get("verification")
    if ver:
        console.print(_verification_table(ver["table"], ver.get("metric", "score"),
                                          f"verification: {ver.get('steps')} steps, "
                                          f"{len(ver.get('seeds', []))} fresh seeds, test split"))
    console.print(
        f"\nInspect:  loss-rl inspect {run.path} --html\n"
        f"Export:   loss-rl export {run.path} --format py --out discovered_loss.py"
    )


def _fmt(v: Any, digits: int = 4) -> str:
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:+.{digits}f}" if digits < 0 else f"{v:.{digits}f}"


def _verification_table(rows: list[dict[str, Any]], metric: str, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("loss", "expression", f"test {metric}", "95% CI", "Δ vs CE", "p", "Δ vs best ref",
                "p", "n"):  # fmt: skip
        table.add_column(col, overflow="fold" if col == "expression" else "ellipsis")
    for r in rows:
        expr = r["expression"] if len(r["expression"]) <= 60 else r["expression"][:57] + "..."
        style = "bold green" if not r.get("reference") else None
        table.add_row(
            r["loss"], expr, _fmt(r["mean"]), f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
            _fmt(r["diff_vs_ce"]), _fmt(r["p_vs_ce"], 3), _fmt(r["diff_vs_best_ref"]),
            _fmt(r["p_vs_best_ref"], 3), f"{r['n']}" + (f" ({r['diverged']} div.)"
                                                        if r.get("diverged") else ""),
            style=style,
        )  # fmt: skip
    return table


def _markdown(df: Any) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(False)]
    return "\n".join(lines)


@app.command()
def search(
    env: Annotated[str, typer.Option(help="Env preset name (envs/*.yaml) or a YAML path.")] = (
        "digits_noisy"
    ),
    agent: Annotated[
        str,
        typer.Option(
            help="dqn | ppo | maskable_ppo | random | evolution | optuna | pretrained (the policy "
            "shipped in the package), or YAML."
        ),
    ] = "maskable_ppo",
    budget: Annotated[
        int | None, typer.Option(help="Inner trainings to spend (default: the env preset's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the agent and environments.")] = 0,
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
        typer.Option(help="Where inner trainings run: inprocess, or ray (pip install "
                     "'loss-rl[ray]'). Default: the env preset's executor, else inprocess."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray cluster for --executor ray: auto | HOST:PORT | ray://HOST:PORT. "
                     "Default: $RAY_ADDRESS, else a private local Ray instance."),
    ] = None,
) -> None:
    """Search for a loss: the agent edits losses, each scored by a short inner training.

    --agent may also be a run folder: its agent, starting from its trained policy.
    """
    from loss_rl._search import Search

    console = Console()
    s = Search.create(env, agent, budget=budget, seed=seed, out=out, name=name,
                      command=_command_line(), init_agent=init_agent,
                      train=not no_train, tensorboard=tensorboard,
                      executor=executor.value if executor else None,
                      ray_address=ray_address)  # fmt: skip
    where = "" if s.executor_config.name == "inprocess" else f", executor {s.executor_config.name}"
    console.print(f"Run folder: {s.path}  (env {s.env_preset.name}, agent {s.agent_config.algo}, "
                  f"budget {s.budget} trainings{where})")  # fmt: skip
    _print_summary(_run_with_progress(s, console), console)


@app.command()
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
    seed: Annotated[int, typer.Option(help="Seed of the agent, envs and task order.")] = 0,
    out: Annotated[Path, typer.Option(help="Parent folder.")] = Path("results"),
    name: Annotated[str | None, typer.Option(help="Folder name.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this interrupted pretraining folder.")
    ] = None,
) -> None:
    """Pretrain a loss-design policy across the tasks of a suite (one task per episode).

    Writes FOLDER/agent.zip and its card (card.md, card.json, curve.png). Use it on a new task
    with `loss-rl search --env TASK --agent maskable_ppo --init-agent FOLDER [--no-train]`.
    """
    from loss_rl.pretrain import Pretraining

    console = Console()
    if resume is not None:
        p = Pretraining.open(resume)
        p.log_command(_command_line())
    elif suite is None:
        from loss_rl.suites import list_suites

        raise ConfigError(f"give --suite NAME|PATH (shipped: {', '.join(list_suites())}) or "
                          "--resume FOLDER", field="suite")  # fmt: skip
    else:
        p = Pretraining.create(suite, agent, budget=budget, seed=seed, exclude=exclude or (),
                               out=out, name=name, command=_command_line())  # fmt: skip
    console.print(f"Pretraining folder: {p.path}  (suite {p.suite.name}: {len(p.suite.tasks)} "
                  f"tasks, agent {p.agent_config.algo}, budget {p.budget} trainings)")  # fmt: skip
    _run_with_progress(p, console, resume_hint="loss-rl pretrain --resume", label="pretrain")
    console.print((p.path / "card.md").read_text())
    console.print(
        f"Use it: loss-rl search --env ENV --agent {p.agent_config.algo} --init-agent {p.path} "
        "[--no-train]"
    )


@app.command()
def resume(
    run: Annotated[Path, typer.Argument(help="The run folder to continue.")],
) -> None:
    """Continue an interrupted run to its budget (finished evaluations are never re-trained)."""
    from loss_rl._search import Search

    console = Console()
    s = Search.open(run)
    s.log_command(_command_line())
    console.print(f"Resuming {s.path} (budget {s.budget} trainings)")
    _print_summary(_run_with_progress(s, console), console)


@app.command()
def runs(
    root: Annotated[Path, typer.Argument(help="Folder holding run folders.")] = Path("results"),
) -> None:
    """List runs with their status, budget and best loss."""
    from loss_rl._search import list_runs

    found = list_runs(root)
    console = Console()
    if not found:
        console.print(f"No runs under {root}.")
        return
    table = Table(title=f"runs in {root}", title_justify="left")
    for col in ("run", "env", "agent", "status", "trainings", "best loss", "val", "test"):
        table.add_column(col, overflow="fold" if col == "best loss" else "ellipsis")
    for r in found:
        s = r.summary or {}
        best = r.best or {}
        test = None
        ver = s.get("verification") or {}
        for row in ver.get("table", []):
            if row["loss"] == ver.get("winner"):
                test = row["mean"]
        counts = r.counts
        table.add_row(
            r.path.name, str(r.config.get("env_name")), str(r.config.get("agent", {}).get("algo")),
            s.get("status", "running or killed"), f"{counts['trained']}/{r.config.get('budget')}",
            str(best.get("expression", "—")), _fmt(best.get("val_score")), _fmt(test),
        )  # fmt: skip
    console.print(table)


@app.command("inspect")
def inspect_command(
    runs: Annotated[
        list[Path],
        typer.Argument(help="The run folder to inspect; more runs are overlaid on its plots."),
    ],
    html: Annotated[bool, typer.Option("--html", help="Also write RUN/report.html.")] = False,
    json_: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable summary (JSON) only.")
    ] = False,
    top: Annotated[int, typer.Option("--top", help="How many of the best losses to list.")] = 5,
    no_rollout: Annotated[
        bool, typer.Option("--no-rollout", help="Skip the policy rollout and edit usage.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the policy rollouts.")] = 0,
) -> None:
    """Inspect a run: summary, what the policy learned, plots (RUN/plots/), HTML report."""
    import json

    from loss_rl.inspect import inspect_run, rollout_rows

    if top < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--top")
    ins = inspect_run(runs[0], runs[1:], top=top, rollout_policy=not no_rollout, seed=seed)
    report = ins.write_html() if html else None
    if json_:
        data = ins.to_dict()
        if report is not None:
            data["report"] = str(report)
        print(json.dumps(data, indent=2))  # plain stdout: rich would wrap and restyle it
        return
    console = Console()
    s = ins.summary
    ev = s["evaluations"]
    facts = Table(title=f"run {s['name']}", title_justify="left", show_header=False)
    facts.add_column(style="bold cyan", no_wrap=True)
    facts.add_column(overflow="fold")
    wall = _fmt(s["wall_seconds"], 1) + (" (estimated)" if s["wall_seconds_estimated"] else "")
    for key, value in (
        ("folder", s["run"]), ("status", s["status"]), ("env / task", f"{s['env']}: {s['task']}"),
        ("agent", s["agent"]), ("budget used", f"{ev['trained']} / {s['budget']} trainings"),
        ("wall time (s)", wall), ("evaluations/s", _fmt(s["evals_per_second"], 2)),
        ("resolved without training",
         f"{_fmt(s['resolved_without_training'], 3)} of {ev['proposed']} proposals"),
        ("reference (CE) val", _fmt(s["reference_score"])),
    ):  # fmt: skip
        facts.add_row(key, Text(str(value)))
    console.print(facts)
    best = s.get("best")
    if best:
        console.print(Text.assemble(("Best loss ", "bold"), (str(best["expression"]), "green"),
                                    f"  (val {_fmt(best.get('val_score'))})"))  # fmt: skip
    topk = Table(title=f"top {len(s['top'])} losses (validation)", title_justify="left")
    for col in ("#", "loss", "val score"):
        topk.add_column(col, overflow="fold" if col == "loss" else "ellipsis")
    for row in s["top"]:
        topk.add_row(str(row["rank"]), Text(row["expression"]), _fmt(row["score"]))
    console.print(topk)
    ver = s.get("verification")
    if ver:
        title = (f"verification: {ver.get('steps')} steps, "
                 f"{len(ver.get('seeds') or [])} fresh seeds, test split")  # fmt: skip
        console.print(_verification_table(ver["table"], ver.get("metric", "score"), title))
    if ins.rollout is not None:
        r = ins.rollout
        rows = rollout_rows(r)
        kind = "greedy" if r.deterministic else "sampled"
        table = Table(title=f"policy: {kind} rollout ({r.algo}, seed {r.seed}), start {r.start}",
                      title_justify="left")  # fmt: skip
        for col in rows[0] if rows else ():
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*(Text(v) for v in row.values()))
        console.print(table)
        usage = Table(title="edit usage of the final policy (sampled episodes)",
                      title_justify="left")  # fmt: skip
        for col in ("edit", "count", "share"):
            usage.add_column(col)
        for u in ins.usage.head(10).itertuples(index=False):
            usage.add_row(Text(str(u.edit)), str(u.count), f"{u.share:.2f}")
        console.print(usage)
    if len(ins.outcomes):
        out = Table(title="proposals over training", title_justify="left")
        for col in ("part", "proposals", "new", "cached", "rejected", "mean ok score", "best",
                    "edits used most"):  # fmt: skip
            out.add_column(col, overflow="fold" if col == "edits used most" else "ellipsis")
        for o in ins.outcomes.itertuples(index=False):
            out.add_row(o.part, str(o.proposals), f"{o.new:.2f}", f"{o.cached:.2f}",
                        f"{o.rejected:.2f}", _fmt(o.score), _fmt(o.best),
                        Text(o.top_edits or "—"))  # fmt: skip
        console.print(out)
    for note in ins.missing:
        console.print(Text(f"missing: {note}", style="yellow"))
    for name, path in ins.plots.items():
        console.print(f"plot {name}: {path}")
    if report is not None:
        console.print(f"report: {report}")


@app.command(context_settings=_EXPRESSION_ARGS)
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
    from loss_rl.presets import load_env_preset
    from loss_rl.verify import verify

    preset = load_env_preset(env)
    named = {}
    for src in losses:
        loss = _resolve(src)
        label = str(loss.metadata.get("name") or (Path(src).name if Path(src).exists() else src))
        named[label] = loss.expr
    table = verify(named, preset.task, seeds=seeds, steps=steps,
                   references=preset.verification.references,
                   data_seed=preset.evaluation.data_seed)  # fmt: skip
    if csv is not None:
        table.to_csv(csv, index=False)
    console = Console()
    if markdown:
        # Plain print: rich would restyle the pipes and dashes.
        print(_markdown(table.drop(columns=["reference"])))
    else:
        rows = table.to_dict(orient="records")
        title = (f"{preset.name}: {table.attrs['steps']} steps, {len(table.attrs['seeds'])} "
                 f"fresh seeds, test {table.attrs['metric']}")  # fmt: skip
        console.print(_verification_table(rows, table.attrs["metric"], title))


def _meta_progress(console: Console, what: str) -> Any:
    """A rich progress bar fed by :class:`loss_rl.meta.MetaProgress` snapshots."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), console=console)  # fmt: skip
    task = bar.add_task(what, total=1, info="")

    def report(p: Any) -> None:
        info = "verifying on test" if p.phase == "verify" else f"meta-loss {p.meta_loss:.4f}"
        bar.update(task, total=p.total, completed=p.step, info=info)

    return bar, report


@app.command(context_settings=_EXPRESSION_ARGS)
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
    from loss_rl.meta import refine as refine_loss

    console = Console()
    bar, report = _meta_progress(console, "refine")
    with bar:
        res = refine_loss(source, env, meta_steps=meta_steps, inner_steps=inner_steps,
                          verify_seeds=seeds, progress=report)  # fmt: skip
    console.print(f"[bold]original[/] {res.original}\n[bold]refined [/] {res.refined}")
    for dead in res.summary.get("no_gradient_constants", []):
        console.print(f"[yellow]constant without gradient:[/] {dead}")
    if res.verification is not None:
        rows = res.verification.to_dict(orient="records")
        console.print(_verification_table(rows, res.verification.attrs.get("metric", "score"),
                                          "verification on test, fresh seeds"))  # fmt: skip
    for what, path in res.paths.items():
        console.print(f"wrote {what}: {path}")


@app.command("meta-train")
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
    from loss_rl.meta import meta_train

    console = Console()
    bar, report = _meta_progress(console, "meta-train")
    with bar:
        res = meta_train(env, meta_steps=meta_steps, inner_steps=inner_steps, verify_seeds=seeds,
                         out=out, seed=seed, progress=report)  # fmt: skip
    if res.verification is not None:
        console.print(res.verification.to_string(index=False))
    for what, path in res.paths.items():
        console.print(f"wrote {what}: {path}")


def _plot(fn: Any, kind: TaskKind, label: str, title: str, path: Path) -> None:
    """Save the loss and its gradient along a 1-D sweep (see ``show --plot``)."""
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from loss_rl.expr import TaskKind, compile_loss, known_loss

    if kind is TaskKind.CLASSIFICATION:
        # Two classes, target 0, logits (s, 0): p_y = sigmoid(s) sweeps (0, 1).
        s = torch.linspace(-9.0, 9.0, 721, dtype=torch.float64)
        y = torch.zeros(len(s), dtype=torch.int64)
        axis, axis_label = torch.sigmoid(s), "true-class probability $p_y$"
        grad_label = r"$\partial \ell / \partial z_y$"
        reference, ref_label = compile_loss(known_loss("ce"), kind), "cross-entropy"

        def curve(f: Any) -> tuple[Any, Any]:
            z = torch.stack([s, torch.zeros_like(s)], -1).requires_grad_(True)
            value = f(z, y)
            (grad,) = torch.autograd.grad(value.sum(), z, allow_unused=True)
            g = torch.zeros_like(z) if grad is None else grad
            return value.detach().numpy(), g[:, 0].numpy()
    else:
        r = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64)
        axis, axis_label = r, r"residual $\hat y - y$"
        grad_label = r"$\partial \ell / \partial \hat y$"
        reference, ref_label = compile_loss(known_loss("mse"), kind), "MSE"

        def curve(f: Any) -> tuple[Any, Any]:
            pred = r.clone().requires_grad_(True)
            value = f(pred, torch.zeros_like(r))
            (grad,) = torch.autograd.grad(value.sum(), pred, allow_unused=True)
            g = torch.zeros_like(pred) if grad is None else grad
            return value.detach().numpy(), g.numpy()

    with torch.enable_grad():
        values, grads = curve(fn)
        ref_values, ref_grads = curve(reference)
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    x = axis.numpy()
    for ax, ys, ref, ylabel in zip(
        fig.subplots(1, 2),
        (values, grads),
        (ref_values, ref_grads),
        ("loss", grad_label),
        strict=True,
    ):
        ax.plot(x, ys, label=label if len(label) <= 40 else "loss", color="tab:blue")
        ax.plot(x, ref, "--", label=ref_label, color="tab:gray")
        ax.set_xlabel(axis_label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title if len(title) <= 90 else title[:87] + "...", fontsize="medium")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    """Entry point of the ``loss-rl`` console script."""
    app(prog_name="loss-rl")


if __name__ == "__main__":
    main()
