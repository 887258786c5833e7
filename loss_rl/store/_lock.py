"""One writer per run folder (``run.lock``), and new run folders claimed atomically."""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from loss_rl.errors import ConfigError, RunError
from loss_rl.store._files import LOCK

if sys.platform != "win32":
    import fcntl


class RunLock:
    """One writer per run folder: an exclusive ``flock`` on ``<run>/run.lock``.

    The process that writes a run (a search, a resume, a pretraining) holds it from start to end
    and writes its pid into the file; a second writer is refused with a :class:`RunError` that
    names that pid. The kernel drops a ``flock`` when its holder dies, so a lock left by a killed
    process never blocks: the pid in the file is only for the message, never trusted alone.
    Readers (inspect, ``runs``) never take it. On Windows there is no ``flock``: no lock.

    Args:
        run_dir: The run folder.
        wait: Seconds to keep trying before refusing (covers a reader's momentary probe, see
            :meth:`check`).
    """

    def __init__(self, run_dir: str | Path, *, wait: float = 0.5) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write this process's pid into it.

        Raises:
            RunError: if another process holds it (its pid in the message).
        """
        if sys.platform == "win32" or self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _read_pid(fd)
                    os.close(fd)
                    raise RunError(_in_use(self.run_dir, pid)) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Clear the pid and drop the lock (nothing if not held)."""
        if sys.platform == "win32" or self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no pid of a finished writer left to mislead anyone
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    @staticmethod
    def check(run_dir: str | Path) -> None:
        """Refuse early if another process writes ``run_dir`` (a writer calls this on opening,
        before it logs anything); creates nothing.

        Raises:
            RunError: if the lock is held (its holder's pid in the message).
        """
        if sys.platform == "win32":
            return
        path = Path(run_dir) / LOCK
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            try:  # shared: two probes never refuse each other
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunError(_in_use(Path(run_dir), _read_pid(fd))) from None
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    return None


def _in_use(run_dir: Path, pid: int | None) -> str:
    who = f"process {pid}" if pid else "another process"
    stop = f" (kill {pid})" if pid else ""
    return (
        f"{run_dir} is in use: loss_rl {who} is writing it ({run_dir / LOCK}); wait for it to "
        f"finish or stop it{stop}, then run this again (a killed process's lock is released "
        "by the system)"
    )


def check_run_name(name: str) -> str:
    """Check that ``name`` (``--name``) is a single folder name; returns it.

    Raises:
        ConfigError: (field ``name``) for an empty name, ``.``/``..``, a path separator, an
            absolute path or a NUL byte: the run folder must be a child of ``--out``.
    """
    bad = (
        not name
        or not name.strip()
        or name in (".", "..")
        or any(c in name for c in ("/", "\\", "\x00"))
        or Path(name).is_absolute()
    )
    if bad:
        raise ConfigError(
            f"{name!r} is not a folder name: give a single name without '/', '\\' or '..' "
            "(the run folder is created inside --out)",
            field="name",
        )
    return name


def create_run_dir(out: str | Path, name: str | None = None, *, default: str = "run") -> Path:
    """Create and claim a new run folder under ``out``, atomically.

    A folder is claimed by creating its ``run.lock`` exclusively (``O_EXCL``), so two processes
    asking for the same folder at once never both get it.

    Args:
        out: The parent folder (created if missing).
        name: The folder name (``--name``); an existing empty folder of that name is used.
        default: The generated name when ``name`` is ``None``; ``-1``, ``-2``, ... are appended
            until a new folder is made.

    Returns:
        The new run folder.

    Raises:
        ConfigError: if ``name`` is not a single folder name (:func:`check_run_name`).
        RunError: if the named folder exists and is not empty, or cannot be created.
    """
    out = Path(out)
    if name is not None:
        check_run_name(name)
    path = out / (name if name is not None else default)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if name is not None:
            path.mkdir(exist_ok=True)
            if any(path.iterdir()) or not _claim(path):
                raise RunError(f"{path} already exists; choose another --out/--name or resume it")
            return path
        for i in itertools.count(1):
            # mkdir is atomic: of two processes that generate the same name, one gets it.
            with contextlib.suppress(FileExistsError):
                path.mkdir()
                if _claim(path):
                    return path
            path = out / f"{default}-{i}"
    except OSError as err:
        raise RunError(f"cannot create the run folder {path}: {err.strerror or err}") from None
    raise AssertionError("itertools.count never ends")  # for type checkers


def _claim(path: Path) -> bool:
    """Create ``path/run.lock`` exclusively: ``True`` if this call made it."""
    try:
        os.close(os.open(path / LOCK, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    return True
