"""The ``inspect`` command: a run's summary, what its policy learned, plots and HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loss_rl.cli._choices import TrustCode
from loss_rl.cli._console import console


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
    trust_code: TrustCode = False,
) -> None:
    """Inspect a run: summary, what the policy learned, plots (RUN/plots/), HTML report."""
    import json

    from loss_rl.cli._tables import inspection
    from loss_rl.inspect import inspect_run

    if top < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--top")
    ins = inspect_run(
        runs[0], runs[1:], top=top, rollout_policy=not no_rollout, seed=seed, trust_code=trust_code
    )
    report = ins.write_html() if html else None
    if json_:
        data = ins.to_dict()
        if report is not None:
            data["report"] = str(report)
        print(json.dumps(data, indent=2))  # plain stdout: rich would wrap and restyle it
        return
    out = console()
    for part in inspection(ins):
        out.print(part)
    if report is not None:
        out.print(f"report: {report}")
