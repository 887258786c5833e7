"""Run folders and the SQLite ledger of every evaluation (the only state a resume reads).

Layout of ``results/<run-id>/``::

    config.yaml      fully resolved configuration (env preset + agent preset + run options)
    command.txt      the command line that started the run (and each resume)
    ledger.sqlite    every evaluation, written as each batch finishes (WAL mode)
    agent.zip        the SB3 agent (+ replay_buffer.npz for DQN), saved at checkpoints
    best/            loss.json, loss.py, loss.pt of the verified winner
    summary.json     best loss, verification table, evaluation counts, timing
    run.lock         the writer's lock (:class:`RunLock`): pid of the process writing the run

The ledger sits behind :class:`Ledger` so that other back ends can be added without touching the
evaluator (Optuna's storage pattern); SQLite from the standard library is the default.

Run folders are shared, resumable state, so this module also guards them:

- damage: :func:`load_run` and :func:`check_run_files` check every file a reader or a resume
  relies on (``config.yaml``, ``summary.json``, ``ledger.sqlite``, ``agent.zip``) and turn damage
  into a one-line :class:`~loss_rl.errors.RunError` that names the file and what to do;
- one writer: :class:`RunLock` (``run.lock``, an exclusive ``flock``) is held by the process that
  writes a run; readers never take it;
- creation: :func:`create_run_dir` claims a new folder atomically and refuses a ``--name`` that
  is not a single folder name.
"""

from loss_rl.store._config import CONFIG_VERSION, RunConfig
from loss_rl.store._files import (
    AGENT_ZIP,
    CONFIG,
    DATA_RECORD,
    LEDGER,
    LOCK,
    SUMMARY,
    check_zip,
    read_summary,
    read_yaml,
    write_yaml,
)
from loss_rl.store._ledger import LEDGER_SCHEMA_VERSION, Ledger, check_ledger
from loss_rl.store._lock import RunLock, check_run_name, create_run_dir
from loss_rl.store._run import Run, check_run_files, is_run, load_run, read_data_record

__all__ = [
    "AGENT_ZIP",
    "CONFIG",
    "CONFIG_VERSION",
    "DATA_RECORD",
    "LEDGER",
    "LEDGER_SCHEMA_VERSION",
    "LOCK",
    "SUMMARY",
    "Ledger",
    "Run",
    "RunConfig",
    "RunLock",
    "check_ledger",
    "check_run_files",
    "check_run_name",
    "check_zip",
    "create_run_dir",
    "is_run",
    "load_run",
    "read_data_record",
    "read_summary",
    "read_yaml",
    "write_yaml",
]
