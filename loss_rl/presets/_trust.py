"""Code a run folder names is not run without the user's word (the trust boundary of models).

A task whose model is ``kind: module`` builds it by importing ``task.model.factory`` — code.
When the user names that preset or factory (``loss-rl search --env my.yaml``, ``model=`` in
Python), running it is what they asked for. When the task comes from a *run folder* (``loss-rl
resume``, ``refine RUN``, ``inspect RUN``, ``pretrain --resume``), the folder may come from
someone else, and opening a shared run folder must never run code: such a command refuses to
build the model unless the user passes ``--trust-code`` (``trust_code=True``).
"""

from __future__ import annotations

from loss_rl.errors import ConfigError
from loss_rl.tasks import TaskConfig

TRUST_HINT = "--trust-code (trust_code=True in Python)"


def code_of(task: TaskConfig) -> str | None:
    """The factory a task imports to build its model, or ``None`` (a built-in model)."""
    return task.model.factory if task.model.runs_code else None


def require_code_trust(task: TaskConfig, where: str, trust_code: bool) -> None:
    """Refuse to go on with a task from ``where`` whose model is code, unless trusted.

    Args:
        task: The task read from a run folder (or another file the user did not write).
        where: The folder or file it was read from (named in the message).
        trust_code: The user's explicit consent to import the factory.

    Raises:
        ConfigError: naming ``trust_code``, the factory and how to consent.
    """
    factory = code_of(task)
    if factory is None or trust_code:
        return
    raise ConfigError(
        f"{where} trains a model built by code it names (task.model.factory: {factory!r}); "
        f"importing it runs that code. If you trust whoever wrote {where}, pass {TRUST_HINT}",
        field="trust_code",
    )
