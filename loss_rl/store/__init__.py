"""Run folders and the SQLite ledger of every evaluation (the only state a resume reads).

Layout of ``results/<run-id>/``::

    config.yaml      fully resolved configuration (env preset + agent preset + run options)
    command.txt      the command line that started the run (and each resume)
    ledger.sqlite    every evaluation, written as each batch finishes (WAL mode); with
                     multi-fidelity evaluation also each finished rung and the training
                     states (plain tensors) its promotion continues from
    agent.zip        the SB3 agent (+ replay_buffer.npz for DQN), saved at checkpoints
    best/            loss.json, loss.py, loss.pt of the verified winner
    summary.json     best loss, verification table, hall of fame, evaluation counts, timing
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
from loss_rl.store._hall_of_fame import (
    HALL_OF_FAME_COLUMNS,
    hall_of_fame,
    hall_of_fame_member,
    hall_of_fame_records,
    run_hall_of_fame,
)
from loss_rl.store._ledger import LEDGER_SCHEMA_VERSION, Ledger, RungRecord, check_ledger
from loss_rl.store._lock import RunLock, check_run_name, create_run_dir
from loss_rl.store._run import Run, check_run_files, is_run, load_run, read_data_record

__all__ = [
    "AGENT_ZIP",
    "CONFIG",
    "CONFIG_VERSION",
    "DATA_RECORD",
    "HALL_OF_FAME_COLUMNS",
    "LEDGER",
    "LEDGER_SCHEMA_VERSION",
    "LOCK",
    "SUMMARY",
    "Ledger",
    "Run",
    "RunConfig",
    "RunLock",
    "RungRecord",
    "check_ledger",
    "check_run_files",
    "check_run_name",
    "check_zip",
    "create_run_dir",
    "hall_of_fame",
    "hall_of_fame_member",
    "hall_of_fame_records",
    "is_run",
    "load_run",
    "read_data_record",
    "read_summary",
    "read_yaml",
    "run_hall_of_fame",
    "write_yaml",
]
