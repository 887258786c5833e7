"""A user's own data file as a dataset (``task.dataset.name: file``): read, check, encode.

:func:`read_file_data` turns a CSV, Parquet, ``.npz`` or ``.npy`` file (and optionally a separate
test file with the same columns) into a float feature matrix and integer class indices or float
regression targets, ready to become a :class:`~loss_rl.tasks.RawDataset`. It only reads and
encodes: splitting, corruption and standardisation on the training part happen in ``_data.py``,
as for every other dataset.

- **Features**: numeric columns are used as they are; text, categorical and other non-numeric
  columns are one-hot encoded (``column=value``, categories in sorted order), true/false columns
  become 0/1.
- **Target**: the task kind is ``task_kind`` or inferred from the target column
  (:func:`infer_task_kind`); classes are numbered ``0..C-1`` in the sorted order of their
  original values, whose names are kept.
- **Checks**: everything that would make a training fail or mislead (no rows, unknown columns,
  missing values, one class, a class too rare to split, ...) is a
  :class:`~loss_rl.errors.ConfigError` naming the field of ``task.dataset`` at fault, the file
  and the column, and the fix, raised when the file is first read: before any training.

Reads are cached in-process on the configuration and the files' modification times and sizes:
a changed file is read again, and ``sha256`` tells a run when the file is no longer the one it
started with. (The split and standardised tensors of :func:`~loss_rl.tasks.load_task` are cached
on the configuration alone, as for every dataset.)
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from loss_rl.expr import TaskKind
from loss_rl.schema import fail

if TYPE_CHECKING:
    import pandas as pd

#: File suffix -> format name of the files a ``file`` dataset reads.
FILE_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".npz": "npz",
    ".npy": "npy",
}
#: Formats with named columns (``target`` / ``features`` name them).
TABLE_FORMATS: tuple[str, ...] = ("csv", "parquet")
#: A target with at most this many distinct integer values is read as class labels.
MAX_INFERRED_CLASSES = 50
#: Fewest rows of a class in the data file: one each for the train, val and test parts (two
#: with a separate test file), which the stratified split of ``_data.py`` deals out by class.
MIN_CLASS_ROWS = 3
#: A text feature with more distinct values than this is refused (one-hot would add a column
#: per value); so is one with over 20 values that are unique for most rows (an identifier).
MAX_CATEGORIES = 1000
# Errors name the fields of DatasetConfig, which lives in ``task.dataset`` of a task.
_FIELD = "task.dataset"
_PATH_HINT = (
    "check the path (in a YAML preset a relative path is relative to the YAML file's folder; "
    "in Python or on the command line, to the current directory)"
)


class FileSource(Protocol):
    """The options of a ``file`` dataset (what :class:`~loss_rl.tasks.DatasetConfig` holds)."""

    @property
    def path(self) -> str | None: ...

    @property
    def target(self) -> str | int | None: ...

    @property
    def features(self) -> tuple[str, ...] | None: ...

    @property
    def task_kind(self) -> str | None: ...

    @property
    def test_path(self) -> str | None: ...

    @property
    def drop_missing(self) -> bool: ...

    @property
    def sha256(self) -> str | None: ...


@dataclass(frozen=True)
class FileInfo:
    """One file read for a dataset.

    Attributes:
        path: Absolute path.
        format: ``csv``, ``parquet``, ``npz`` or ``npy``.
        size_bytes: Size of the file.
        sha256: SHA-256 of its bytes (hex).
        rows: Rows used (after dropping rows with missing values).
        rows_dropped: Rows dropped for missing values (``drop_missing: true``).
    """

    path: str
    format: str
    size_bytes: int
    sha256: str
    rows: int
    rows_dropped: int


@dataclass(frozen=True, eq=False)
class FileData:
    """A data file (and its optional test file), read, checked and encoded.

    Attributes:
        x: Features ``[n, d]`` (float64, read-only): the data file's rows, then the test file's.
        y: Class indices ``[n]`` (int64) or regression targets ``[n]`` (float64), read-only.
        kind: Classification or regression.
        kind_inferred: Whether ``kind`` was inferred from the target (no ``task_kind``).
        kind_reason: Why the target reads as this kind (e.g. ``3 text values``).
        target: Name of the target column (``y`` for ``.npz``, ``col<j>`` for ``.npy``).
        classes: Original value of each class index, as text (``None`` for regression).
        feature_columns: The columns used as features, as in the file.
        feature_names: The columns of ``x``: numeric columns keep their name, one-hot columns
            are ``column=value``.
        categories: One-hot encoded column -> its values, in the order of their columns.
        files: The data file, then the test file when there is one.
        test_rows: Rows at the end of ``x`` / ``y`` that come from the test file (0: none).
    """

    x: np.ndarray
    y: np.ndarray
    kind: TaskKind
    kind_inferred: bool
    kind_reason: str
    target: str
    classes: tuple[str, ...] | None
    feature_columns: tuple[str, ...]
    feature_names: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    files: tuple[FileInfo, ...]
    test_rows: int = 0

    @property
    def num_classes(self) -> int | None:
        """Number of classes (``None`` for regression)."""
        return None if self.classes is None else len(self.classes)


def file_format(path: str | os.PathLike[str]) -> str | None:
    """The format of a data file from its suffix (``csv``, ``parquet``, ``npz``, ``npy``).

    Args:
        path: The file's path.

    Returns:
        The format name, or ``None`` for a suffix that is not one of :data:`FILE_FORMATS`.
    """
    return FILE_FORMATS.get(Path(path).suffix.lower())


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as 64 lower-case hex digits.

    What a run records in ``task.dataset.sha256`` when it starts, so that a resumed run notices
    a changed file (:func:`read_file_data`).

    Args:
        path: The file (``~`` is expanded; relative to the current directory).

    Raises:
        OSError: if the file cannot be read.
    """
    digest = hashlib.sha256()
    with Path(path).expanduser().open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def infer_task_kind(y: pd.Series) -> tuple[TaskKind, str]:
    """Whether a target column holds class labels or regression targets, and why.

    Text, categorical and true/false values are classes; integers (or floats that are all whole
    numbers) are classes when they take at most :data:`MAX_INFERRED_CLASSES` distinct values,
    fewer than half the number of rows; any other numbers are regression targets.

    Args:
        y: The target column, without missing values.

    Returns:
        ``(kind, reason)``, the reason in a few words (``"3 text values"``).
    """
    from pandas.api import types as pdt

    distinct = int(y.nunique())
    if pdt.is_bool_dtype(y):
        return TaskKind.CLASSIFICATION, "true/false values"
    if not pdt.is_numeric_dtype(y):
        return TaskKind.CLASSIFICATION, f"{distinct} text values"
    whole = pdt.is_integer_dtype(y) or bool(np.all(np.mod(y.to_numpy(dtype=np.float64), 1) == 0))
    what = "integer" if pdt.is_integer_dtype(y) else "whole-number" if whole else "real"
    if whole and distinct <= MAX_INFERRED_CLASSES and distinct < len(y) / 2:
        return TaskKind.CLASSIFICATION, f"{distinct} distinct {what} values"
    return TaskKind.REGRESSION, f"{distinct} distinct {what} values"


def _stamp(path: str | None) -> tuple[int, int] | None:
    """Modification time and size of ``path`` (``None`` if it cannot be seen)."""
    if not path:
        return None
    try:
        st = os.stat(os.path.expanduser(path))
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def read_file_data(source: FileSource) -> FileData:
    """Read, check and encode the data file(s) of a ``file`` dataset (cached in-process).

    The cache is keyed on the files' modification times and sizes too, so a file changed
    while the process runs is read again (and checked against ``sha256``).

    Args:
        source: The dataset's options (a :class:`~loss_rl.tasks.DatasetConfig` with
            ``name: file``).

    Returns:
        The encoded data; do not modify its arrays.

    Raises:
        ConfigError: naming ``task.dataset.<option>``, the file and the column, with the fix:
            a missing or unreadable file, a file changed since its run started (``sha256``),
            no rows, unknown columns, missing values, a single class, a class too rare to
            split, a text regression target, ``.npz`` / ``.npy`` arrays of the wrong shape.
    """
    return _read_file_data(source, _stamp(source.path), _stamp(source.test_path))


@functools.lru_cache(maxsize=8)
def _read_file_data(
    source: FileSource, stamp: tuple[int, int] | None, test_stamp: tuple[int, int] | None
) -> FileData:
    if not source.path:
        fail(f"{_FIELD}.path", "a 'file' dataset needs path: a .csv, .parquet, .npz or .npy file")
    main = _read(source, source.path, "path")
    if source.sha256 is not None and main.sha256 != source.sha256.lower():
        fail(
            f"{_FIELD}.path",
            f"{main.path} changed since the run started (sha256 {source.sha256.lower()[:12]}… "
            f"recorded, {main.sha256[:12]}… now); restore the file or start a new run",
        )
    test = _read(source, source.test_path, "test_path") if source.test_path else None
    if test is not None and main.format == "npy" and test.frame.shape[1] != main.frame.shape[1]:
        fail(
            f"{_FIELD}.test_path",
            f"{test.name} has {test.frame.shape[1]} columns and {main.name} "
            f"{main.frame.shape[1]}; the test file needs the same columns",
        )
    columns = _feature_columns(main, source)
    used = [*columns, main.target]
    if test is not None:
        lacking = [c for c in used if c not in test.frame.columns]
        if lacking:
            fail(
                f"{_FIELD}.test_path",
                f"{test.name} lacks column(s) {_names(lacking)} of {main.name}; the test file "
                "needs the same target and feature columns",
            )
    main_frame, main_dropped = _complete_rows(main, used, source.drop_missing, "path")
    test_frame, test_dropped = (
        _complete_rows(test, used, source.drop_missing, "test_path")
        if test is not None
        else (main_frame.iloc[:0], 0)
    )

    if source.task_kind is None:
        kind, reason = infer_task_kind(main_frame[main.target])
    else:
        kind, reason = TaskKind(source.task_kind), "set by task_kind"
    frames = [main_frame] if test is None else [main_frame, test_frame]
    if kind is TaskKind.CLASSIFICATION:
        y, classes = _class_indices(main, main_frame, test, test_frame)
    else:
        y, classes = _regression_targets(main, main_frame, test, test_frame, source), None
    x, names, categories = _encode_features(frames, columns)
    x.setflags(write=False)
    y.setflags(write=False)
    infos = [main.info(len(main_frame), main_dropped)]
    if test is not None:
        infos.append(test.info(len(test_frame), test_dropped))
    return FileData(
        x=x,
        y=y,
        kind=kind,
        kind_inferred=source.task_kind is None,
        kind_reason=reason,
        target=main.target,
        classes=classes,
        feature_columns=tuple(columns),
        feature_names=names,
        categories=categories,
        files=tuple(infos),
        test_rows=len(test_frame),
    )


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True, eq=False)
class _Table:
    """A file read into a frame: its columns as in the file, and the target column's name."""

    path: str
    format: str
    size_bytes: int
    sha256: str
    frame: pd.DataFrame
    target: str

    @property
    def name(self) -> str:
        return Path(self.path).name

    def info(self, rows: int, dropped: int) -> FileInfo:
        return FileInfo(self.path, self.format, self.size_bytes, self.sha256, rows, dropped)


def _read(source: FileSource, path: str, option: str) -> _Table:
    """Read one file into a frame; the target column is named (``.npz``: ``y``)."""
    field = f"{_FIELD}.{option}"
    fmt = file_format(path)
    if fmt is None:  # checked by DatasetConfig; here for a source built another way
        fail(field, f"{path}: unsupported file type; use one of {', '.join(FILE_FORMATS)}")
    where = os.path.abspath(Path(path).expanduser())
    try:
        # One read serves the hash and the parser, so the hash is that of the data used.
        data = Path(where).read_bytes()
    except FileNotFoundError:
        fail(field, f"file not found: {where}; {_PATH_HINT}")
    except IsADirectoryError:
        fail(field, f"{where} is a folder; give a {', '.join(FILE_FORMATS)} file")
    except OSError as err:
        fail(field, f"cannot read {where}: {err.strerror or err}")
    name = Path(where).name
    if not data.strip():
        fail(field, f"{name} is empty; give a file with a header and data rows")
    if fmt in TABLE_FORMATS:
        if source.target is None:  # checked by DatasetConfig; here for a source built otherwise
            fail(f"{_FIELD}.target", f"required for {fmt} files: the label column of {name}")
        frame = _read_table(data, fmt, name, field)
        target = str(source.target)
    elif fmt == "npz":
        frame, target = _read_npz(data, name, field)
    else:
        frame, target = _read_npy(data, name, field, source.target)
    if len(frame) == 0:
        fail(field, f"{name} has no data rows; give a file with at least a few rows")
    # (A test file's columns are checked against the data file's by the caller.)
    if fmt in TABLE_FORMATS and option == "path" and target not in frame.columns:
        fail(
            f"{_FIELD}.target",
            f"column {target!r} not found in {name}; its columns are: {_names(frame.columns)}",
        )
    digest = hashlib.sha256(data).hexdigest()
    return _Table(where, fmt, len(data), digest, frame, target)


def _read_table(data: bytes, fmt: str, name: str, field: str) -> pd.DataFrame:
    # pandas costs ~0.4 s to import; only file datasets need it.
    import pandas as pd

    buffer = io.BytesIO(data)
    if fmt == "csv":
        try:
            frame = pd.read_csv(buffer)
        except pd.errors.EmptyDataError:
            fail(field, f"{name} is empty; give a file with a header and data rows")
        except UnicodeDecodeError as err:
            fail(field, f"{name} is not UTF-8 text (byte {err.start}); save it as UTF-8 CSV")
        except (pd.errors.ParserError, ValueError) as err:
            fail(field, f"cannot read {name} as CSV: {err}")
    else:
        try:
            frame = pd.read_parquet(buffer)
        except ImportError:
            fail(
                field,
                f'reading Parquet ({name}) needs pyarrow, which is not installed: pip install "'
                'loss-rl[parquet]"',
            )
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            fail(field, f"cannot read {name} as Parquet: {err}")
    # Column names are matched as text (a CSV header is text; YAML may write `target: 3`).
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _load_array(data: bytes, name: str, field: str) -> Any:
    try:
        # No pickles: a data file must not run code when it is read.
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        fail(field, f"cannot read {name} as a NumPy file ({err}); save plain numeric arrays")


def _numeric(a: np.ndarray) -> bool:
    return a.dtype.kind in "biuf"


def _read_npz(data: bytes, name: str, field: str) -> tuple[pd.DataFrame, str]:
    import pandas as pd

    arrays = _load_array(data, name, field)
    if not hasattr(arrays, "files"):
        fail(field, f"{name} holds a single array, not an .npz archive; save it with np.savez")
    with arrays:
        missing = [k for k in ("x", "y") if k not in arrays.files]
        if missing:
            fail(
                field,
                f"{name} lacks array(s) {_names(missing)}; it holds {_names(arrays.files)}: save "
                "features as x [samples, features] and labels or targets as y [samples] "
                "(np.savez(path, x=x, y=y))",
            )
        try:  # the members are read here, lazily
            x, y = arrays["x"], arrays["y"]
        except (ValueError, OSError, EOFError) as err:
            fail(field, f"cannot read the arrays of {name}: {err}")
    if x.ndim != 2:
        fail(
            field,
            f"array x of {name} has shape {x.shape}; it must be 2-D [samples, features] "
            "(reshape a single feature to [n, 1])",
        )
    if not _numeric(x):
        fail(field, f"array x of {name} holds {x.dtype} values; features must be numbers")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        fail(field, f"array y of {name} has shape {y.shape}; it must be 1-D [samples]")
    if len(x) != len(y):
        fail(field, f"{name}: x has {len(x)} rows but y has {len(y)}; they must match")
    if x.shape[1] == 0:
        fail(field, f"array x of {name} has no feature columns")
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    frame["y"] = y
    return frame, "y"


def _read_npy(
    data: bytes, name: str, field: str, target: str | int | None
) -> tuple[pd.DataFrame, str]:
    import pandas as pd

    a = _load_array(data, name, field)
    if not isinstance(a, np.ndarray):
        fail(field, f"{name} is an .npz archive; name it .npz")
    if a.ndim != 2 or a.shape[1] < 2:
        fail(
            field,
            f"{name} holds an array of shape {a.shape}; an .npy dataset is 2-D [samples, "
            "columns] with the target as one column (or save x and y in an .npz)",
        )
    if not _numeric(a):
        fail(field, f"{name} holds {a.dtype} values; an .npy dataset must be numbers")
    j = _column_index(target, a.shape[1], name)
    columns = [f"col{i}" for i in range(a.shape[1])]
    return pd.DataFrame(a, columns=columns), columns[j]


def _column_index(target: str | int | None, width: int, name: str) -> int:
    """The target column of an ``.npy`` array: an index (negative from the end), default last."""
    if target is None:
        return width - 1
    text = str(target).strip()
    try:
        j = int(text)
    except ValueError:
        fail(
            f"{_FIELD}.target",
            f"{target!r} is not a column index; for an .npy file target is a column number "
            f"(0 to {width - 1}, or -1 for the last)",
        )
    if not -width <= j < width:
        fail(
            f"{_FIELD}.target",
            f"column {j} is out of range: {name} has {width} columns (0 to {width - 1})",
        )
    return j % width


# ---------------------------------------------------------------------------------------------
# Checking and encoding


def _names(items: Sequence[Any] | Any, limit: int = 30) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def _feature_columns(table: _Table, source: FileSource) -> list[str]:
    columns = [str(c) for c in table.frame.columns]
    if table.format in TABLE_FORMATS and source.features is not None:
        unknown = [c for c in source.features if c not in columns]
        if unknown:
            fail(
                f"{_FIELD}.features",
                f"column(s) {_names(unknown)} not found in {table.name}; its columns are: "
                f"{_names(columns)}",
            )
        return list(source.features)
    chosen = [c for c in columns if c != table.target]
    if not chosen:
        fail(
            f"{_FIELD}.path",
            f"{table.name} has no column besides the target {table.target!r}; a dataset needs "
            "at least one feature column",
        )
    return chosen


def _missing(column: pd.Series) -> np.ndarray:
    """Rows of ``column`` that are missing, or not finite numbers."""
    from pandas.api import types as pdt

    bad = column.isna().to_numpy()
    if pdt.is_numeric_dtype(column) and not pdt.is_bool_dtype(column):
        bad = bad | ~np.isfinite(column.to_numpy(dtype=np.float64, na_value=np.nan))
    return bad


def _complete_rows(
    table: _Table, columns: list[str], drop: bool, option: str
) -> tuple[pd.DataFrame, int]:
    """The rows of ``table`` without missing / infinite values in ``columns`` (or an error)."""
    frame = table.frame[columns]
    per_column = {c: _missing(frame[c]) for c in columns}
    bad = np.zeros(len(frame), dtype=bool)
    for mask in per_column.values():
        bad |= mask
    count = int(bad.sum())
    if count == 0:
        return frame, 0
    if not drop:
        which = ", ".join(f"{c!r} ({int(m.sum())})" for c, m in per_column.items() if m.any())
        fail(
            f"{_FIELD}.{option}",
            f"{table.name} has missing or infinite values in {count} of {len(frame)} rows, in "
            f"column(s) {which}; fix the file, or set drop_missing: true to leave those rows out",
        )
    kept = frame[~bad]
    if len(kept) == 0:
        fail(
            f"{_FIELD}.{option}",
            f"every row of {table.name} has a missing or infinite value in the columns used; "
            "fix the file or choose other features",
        )
    return kept, count


def _class_name(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _class_indices(
    main: _Table,
    main_frame: pd.DataFrame,
    test: _Table | None,
    test_frame: pd.DataFrame,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices ``0..C-1`` in the sorted order of the data file's target values."""
    import pandas as pd

    y = main_frame[main.target].astype(object)
    values = list(pd.unique(y))
    try:
        values.sort()
    except TypeError:  # mixed types (numbers and text in one column): sort as text
        values.sort(key=lambda v: (type(v).__name__, str(v)))
    classes = tuple(_class_name(v) for v in values)
    if len(classes) < 2:
        fail(
            f"{_FIELD}.target",
            f"target {main.target!r} of {main.name} has a single class ({classes[0]!r}): "
            "nothing to classify; choose another target column (or task_kind: regression for "
            "a numeric target)",
        )
    codes = pd.Categorical(y, categories=values).codes.astype(np.int64)
    counts = np.bincount(codes, minlength=len(classes))
    has_test = test is not None
    need = MIN_CLASS_ROWS - 1 if has_test else MIN_CLASS_ROWS
    rare = [f"{classes[c]!r} ({int(counts[c])})" for c in np.flatnonzero(counts < need)]
    if rare:
        parts = "train and val parts" if has_test else "train, val and test parts"
        fail(
            f"{_FIELD}.target",
            f"class(es) {', '.join(rare)} of target {main.target!r} have fewer than {need} rows "
            f"in {main.name}; every class needs one row in each of the {parts} (the split is "
            "stratified by class): add rows, merge rare classes, or drop their rows",
        )
    if test is None:
        return codes, classes
    test_y = test_frame[main.target].astype(object)  # same columns as the data file
    test_codes = pd.Categorical(test_y, categories=values).codes.astype(np.int64)
    unseen = sorted({_class_name(v) for v in test_y[test_codes < 0]})
    if unseen:
        fail(
            f"{_FIELD}.test_path",
            f"class(es) {_names(unseen)} of {test.name} do not occur in {main.name}; a model "
            "can only predict the classes it trains on",
        )
    return np.concatenate([codes, test_codes]), classes


def _regression_targets(
    main: _Table,
    main_frame: pd.DataFrame,
    test: _Table | None,
    test_frame: pd.DataFrame,
    source: FileSource,
) -> np.ndarray:
    from pandas.api import types as pdt

    parts = []
    for table, frame, option in ((main, main_frame, "path"), (test, test_frame, "test_path")):
        if table is None:
            continue
        y = frame[main.target]  # the test file has the data file's columns
        if not pdt.is_numeric_dtype(y):
            example = next(iter(y.astype(str)), "")
            fix = "set task_kind: classification" if source.task_kind else "fix the file"
            fail(
                f"{_FIELD}.task_kind" if option == "path" else f"{_FIELD}.test_path",
                f"target {main.target!r} of {table.name} holds text (e.g. {example!r}), which "
                f"cannot be a regression target; {fix}, or choose a numeric target column",
            )
        parts.append(y.to_numpy(dtype=np.float64))
    return np.concatenate(parts)


def _encode_features(
    frames: list[pd.DataFrame], columns: list[str]
) -> tuple[np.ndarray, tuple[str, ...], dict[str, tuple[str, ...]]]:
    """Numeric columns as they are, true/false as 0/1, any other column one-hot encoded.

    The data and test files are encoded together, so both get the same columns.
    """
    import pandas as pd
    from pandas.api import types as pdt

    both = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    blocks: list[np.ndarray] = []
    names: list[str] = []
    categories: dict[str, tuple[str, ...]] = {}
    for c in columns:
        col = both[c]
        if pdt.is_numeric_dtype(col):  # bool included: 0/1
            blocks.append(col.to_numpy(dtype=np.float64).reshape(-1, 1))
            names.append(c)
            continue
        text = col.astype(str)
        distinct = int(text.nunique())
        if distinct > MAX_CATEGORIES or (distinct > 20 and distinct > len(text) / 2):
            fail(
                f"{_FIELD}.features",
                f"column {c!r} holds {distinct} distinct text values in {len(text)} rows (an "
                "identifier?); one-hot encoding would add a feature per value: leave it out by "
                "listing the feature columns to use in features",
            )
        # get_dummies orders the new columns by the sorted values: the same on every read.
        dummies = pd.get_dummies(text, prefix=c, prefix_sep="=", dtype=np.float64)
        blocks.append(dummies.to_numpy())
        names.extend(str(n) for n in dummies.columns)
        categories[c] = tuple(str(n)[len(c) + 1 :] for n in dummies.columns)
    return np.hstack(blocks), tuple(names), categories
