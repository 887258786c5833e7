"""The SQLite ledger of every evaluation, and the check that a ledger file is whole."""

from __future__ import annotations

import json
import sqlite3
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from loss_rl.errors import RunError
from loss_rl.results import EvalResult, Status
from loss_rl.store._files import _FIX

if sys.platform != "win32":
    pass


LEDGER_SCHEMA_VERSION = 2  # 2: the `action` column (the edit that proposed a candidate)

_COLUMNS = (
    "key",
    "expression",
    "fingerprint",
    "status",
    "score",
    "metrics",
    "fidelity",
    "seeds",
    "source",
    "reason",
    "seconds",
    "episode",
    "step",
    "env_index",
    "batch",
    "created",
    "action",
)


@dataclass(frozen=True)
class RungRecord:
    """One finished rung of a candidate under multi-fidelity evaluation.

    Attributes:
        key: Canonical key of the candidate.
        rung: Index of the rung (0 = the lowest).
        steps: Optimiser steps the candidate has taken at this rung, in all.
        status: Its status there (``ok`` or ``diverged``; errors are not recorded).
        score: Validation score there (mean over the paired seeds), ``None`` unless ok.
        metrics: Validation metrics there.
        reason: Why it diverged.
        seconds: Training time of this rung attributed to the candidate.
        state: The saved training states (``loss_rl.training.states_to_bytes``: plain tensors)
            a promotion continues from; ``None`` once its batch is decided, and when read back
            by :meth:`Ledger.rungs` (fetch it with :meth:`Ledger.rung_state`).
    """

    key: str
    rung: int
    steps: int
    status: Status
    score: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    seconds: float = 0.0
    state: bytes | None = field(default=None, repr=False)


_SQLITE_MAGIC = b"SQLite format 3\x00"
_LEDGER_TABLES = ("meta", "evaluations")
_REQUIRED_COLUMNS = frozenset(_COLUMNS) - {"action"}  # `action` is added to version-1 ledgers


def check_ledger(path: str | Path) -> int:
    """Check that ``path`` is a whole loss_rl ledger, without writing to it.

    Args:
        path: An existing ``ledger.sqlite``.

    Returns:
        How many evaluations it holds (0 for an empty file or one without tables yet, as a run
        killed while creating its ledger leaves it).

    Raises:
        RunError: one line naming the file, if it is not SQLite, is truncated, fails SQLite's
            integrity check, or is another program's database.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise RunError(f"{path} is not an SQLite database (damaged or a foreign file); {_FIX}")
    page = struct.unpack(">H", header[16:18])[0]
    page = 65536 if page == 1 else page
    # SQLite writes whole pages: a file that ends inside a page, or before the page count its
    # header vouches for (valid when bytes 92-95 match the change counter), was cut short. With
    # a live write-ahead log the file may lag its header, so the count is trusted only without.
    pages = struct.unpack(">I", header[28:32])[0]
    wal = path.with_name(path.name + "-wal")
    no_wal = not wal.is_file() or wal.stat().st_size == 0
    count_valid = header[24:28] == header[92:96] and pages > 0
    if page < 512 or size % page or (no_wal and count_valid and size < pages * page):
        raise RunError(f"{path} is truncated ({size} bytes, not the whole database); {_FIX}")
    try:
        # A normal connection that only reads: closing it removes the -wal/-shm files again
        # (a read-only connection would leave them behind in the run folder).
        db = sqlite3.connect(path, timeout=30.0)
        try:
            check = db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                first = str(check[0][0]).replace("*** in database main ***", "").strip()
                first = first.splitlines()[0] if first else "failed"
                raise RunError(f"{path} is damaged (SQLite integrity check: {first}); {_FIX}")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if not tables:
                return 0
            if "meta" not in tables:
                raise RunError(
                    f"{path} is an SQLite database but not a loss_rl ledger (tables: "
                    f"{', '.join(sorted(tables))}); {_FIX}"
                )
            if "evaluations" not in tables:
                return 0
            cols = {r[1] for r in db.execute("PRAGMA table_info(evaluations)")}
            lacking = sorted(_REQUIRED_COLUMNS - cols)
            if lacking:
                raise RunError(
                    f"{path} is not a loss_rl ledger (its evaluations table lacks "
                    f"{', '.join(lacking)}); {_FIX}"
                )
            return int(db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])
        finally:
            db.close()
    except sqlite3.OperationalError as err:  # locked, unreadable: not damage, but no traceback
        raise RunError(f"{path} cannot be read ({err}); check its permissions and retry") from None
    except sqlite3.DatabaseError as err:
        raise RunError(f"{path} is damaged ({err}); {_FIX}") from None


class Ledger:
    """Append-only SQLite ledger of evaluations.

    Args:
        path: The ``ledger.sqlite`` file (created if missing).
        check: Check an existing file with :func:`check_ledger` first (a reader that has just
            done so, such as :class:`Run`, skips the repeated integrity scan).

    Raises:
        RunError: if the file was written by a newer ledger schema, or is not a whole loss_rl
            ledger (one line naming the file).
    """

    def __init__(self, path: str | Path, *, check: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if check and self.path.is_file():
            check_ledger(self.path)
        self._db = sqlite3.connect(self.path, timeout=30.0)
        try:
            self._open()
        except sqlite3.OperationalError as err:
            self._db.close()
            raise RunError(f"{self.path} cannot be opened ({err}); check it and retry") from None
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise RunError(f"{self.path} is damaged ({err}); {_FIX}") from None
        except RunError:
            self._db.close()
            raise

    def _open(self) -> None:
        """Set the connection up and create (or migrate) the tables."""
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL sync: a completed batch must survive a kill -9 right after it is recorded.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        row = self._db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
        try:
            version = None if row is None else int(row[0])
        except (TypeError, ValueError):
            raise RunError(
                f"{self.path} has a malformed schema version ({row[0]!r}); {_FIX}"
            ) from None
        if version is None:
            self._db.execute(
                "INSERT INTO meta VALUES ('schema_version', ?)", (str(LEDGER_SCHEMA_VERSION),)
            )
        elif version > LEDGER_SCHEMA_VERSION:
            raise RunError(
                f"{self.path} was written by a newer loss_rl (ledger schema {row[0]}, this "
                f"version reads up to {LEDGER_SCHEMA_VERSION}); upgrade loss_rl to open it"
            )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS evaluations (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "key TEXT NOT NULL, expression TEXT, fingerprint TEXT, status TEXT NOT NULL, "
            "score REAL, metrics TEXT, fidelity INTEGER, seeds TEXT, source TEXT, reason TEXT, "
            "seconds REAL, episode INTEGER, step INTEGER, env_index INTEGER, batch INTEGER, "
            "created REAL, action TEXT)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS ix_key ON evaluations(key)")
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(evaluations)")}
        if "action" not in cols:  # a version-1 ledger: add the column, keep every row
            self._db.execute("ALTER TABLE evaluations ADD COLUMN action TEXT")
        if version != LEDGER_SCHEMA_VERSION:
            self._db.execute(
                "UPDATE meta SET value=? WHERE name='schema_version'",
                (str(LEDGER_SCHEMA_VERSION),),
            )
        # Opening a current ledger writes nothing, so a reader (inspect, a progress poll) never
        # takes the write lock from a running search.
        if self._db.in_transaction:
            self._db.commit()

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def next_batch(self) -> int:
        """Id for the next batch of evaluations."""
        row = self._db.execute("SELECT MAX(batch) FROM evaluations").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def record(
        self, results: Sequence[EvalResult], contexts: Sequence[dict[str, Any]] | None = None
    ) -> None:
        """Append one batch of results in a single transaction."""
        batch = self.next_batch()
        now = time.time()
        ctxs = contexts or [{} for _ in results]
        rows = [
            (
                r.key,
                r.expression,
                r.fingerprint,
                r.status.value,
                r.score,
                json.dumps(r.metrics),
                r.fidelity,
                json.dumps(list(r.seeds)),
                r.source,
                r.reason,
                r.seconds,
                c.get("episode"),
                c.get("step"),
                c.get("env_index"),
                batch,
                now,
                c.get("action"),
            )
            for r, c in zip(results, ctxs, strict=True)
        ]
        with self._db:
            self._db.executemany(
                f"INSERT INTO evaluations ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                rows,
            )

    # Multi-fidelity rungs live in their own table, created by the first rung recorded: a
    # ledger without fidelity levels is unchanged (and older readers ignore the extra table).
    def _has_rungs(self) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='rungs'"
        ).fetchone()
        return row is not None

    def record_rungs(self, rows: Sequence[RungRecord]) -> None:
        """Append finished rungs, with their saved states, in a single transaction."""
        now = time.time()
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS rungs (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "key TEXT NOT NULL, rung INTEGER NOT NULL, steps INTEGER NOT NULL, "
                "status TEXT NOT NULL, score REAL, metrics TEXT, reason TEXT, seconds REAL, "
                "state BLOB, created REAL, UNIQUE (key, rung))"
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO rungs (key, rung, steps, status, score, metrics, reason, "
                "seconds, state, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.key,
                        r.rung,
                        r.steps,
                        r.status.value,
                        r.score,
                        json.dumps(r.metrics),
                        r.reason,
                        r.seconds,
                        r.state,
                        now,
                    )
                    for r in rows
                ],
            )

    def rungs(self) -> list[RungRecord]:
        """Every finished rung, oldest first (states left out: see :meth:`rung_state`)."""
        if not self._has_rungs():
            return []
        cur = self._db.execute(
            "SELECT key, rung, steps, status, score, metrics, reason, seconds FROM rungs "
            "ORDER BY id"
        )
        return [
            RungRecord(
                key,
                rung,
                steps,
                Status(status),
                score,
                json.loads(m or "{}"),
                why or "",
                secs or 0.0,
            )
            for key, rung, steps, status, score, m, why, secs in cur
        ]

    def rung_state(self, key: str, rung: int) -> bytes | None:
        """The saved states of ``key`` at ``rung``, ``None`` if none is kept."""
        if not self._has_rungs():
            return None
        row = self._db.execute(
            "SELECT state FROM rungs WHERE key=? AND rung=?", (key, rung)
        ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def drop_rung_states(self, keys: Sequence[str]) -> None:
        """Forget the saved states of ``keys`` (nothing will continue them)."""
        if not keys or not self._has_rungs():
            return
        with self._db:
            self._db.executemany(
                "UPDATE rungs SET state=NULL WHERE key=? AND state IS NOT NULL",
                [(k,) for k in keys],
            )

    def resolved(self) -> Iterable[EvalResult]:
        """Every result that decided a key by itself (trained or rejected), oldest first."""
        cur = self._db.execute(
            "SELECT key, expression, fingerprint, status, score, metrics, fidelity, seeds, "
            "source, reason, seconds FROM evaluations WHERE source IN ('trained', 'check') "
            "ORDER BY id"
        )
        for key, expr, fp, status, score, metrics, fid, seeds, source, reason, secs in cur:
            yield EvalResult(
                key=key,
                expression=expr,
                score=score,
                status=Status(status),
                metrics=json.loads(metrics or "{}"),
                fidelity=fid or 0,
                seeds=tuple(json.loads(seeds or "[]")),
                seconds=secs or 0.0,
                source=source,
                reason=reason or "",
                fingerprint=fp,
            )

    def counts(self) -> dict[str, int]:
        """Evaluation counts: proposed, trained, cached, rejected, diverged, errors."""
        q = self._db.execute(
            "SELECT COUNT(*), "
            "SUM(source='trained'), "
            "SUM(source LIKE 'cache%'), "
            "SUM(source='check'), "
            "SUM(status='diverged' AND source='trained'), "
            "SUM(status='error' AND source='trained') FROM evaluations"
        ).fetchone()
        names = ("proposed", "trained", "cached", "rejected", "diverged", "errors")
        return {n: int(v or 0) for n, v in zip(names, q, strict=True)}

    def frame(self) -> pd.DataFrame:
        """The whole ledger as a DataFrame (metrics and seeds decoded)."""
        df = pd.read_sql_query("SELECT * FROM evaluations ORDER BY id", self._db)
        df["metrics"] = df["metrics"].map(lambda s: json.loads(s or "{}"))
        df["seeds"] = df["seeds"].map(lambda s: json.loads(s or "[]"))
        return df
