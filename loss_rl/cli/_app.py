"""The typer app: its error handling, the root options, and the table of commands.

The app's group class turns the library's typed errors (:class:`~loss_rl.errors.LossRLError`)
into one red message and exit code 2, unless ``--debug`` asks for the traceback. A command is a
function in the module of its group, registered below with ``app.command``; it gets the same
handling. The commands are listed in ``--help`` in the order registered here.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text
from typer.core import TyperGroup

from loss_rl.cli._console import console
from loss_rl.cli._inspect import inspect_command
from loss_rl.cli._loss import evaluate, export_command, show
from loss_rl.cli._meta import meta_train_command, refine
from loss_rl.cli._runs import pretrain, resume, runs, search
from loss_rl.errors import LossRLError

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
            console(stderr=True).print(Text(f"Error: {err}", style="bold red"), soft_wrap=True)
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


# Expressions often start with "-" (e.g. "-log_p_y"): unknown options pass through as arguments.
_EXPRESSION_ARGS = {"ignore_unknown_options": True}

app.command(context_settings=_EXPRESSION_ARGS)(show)
app.command("export", context_settings=_EXPRESSION_ARGS)(export_command)
app.command()(search)
app.command()(pretrain)
app.command()(resume)
app.command()(runs)
app.command("inspect")(inspect_command)
app.command(context_settings=_EXPRESSION_ARGS)(evaluate)
app.command(context_settings=_EXPRESSION_ARGS)(refine)
app.command("meta-train")(meta_train_command)


def main() -> None:
    """Entry point of the ``loss-rl`` console script."""
    app(prog_name="loss-rl")
