"""Raw datasets, all available offline: scikit-learn's bundled sets, MNIST-1D regenerated with the
``mnist1d`` generator (cached on disk, never downloaded), synthetic generators, and a user's own
data file (``name: file``, read by ``_files.py``).

Raw datasets are cached in-process; they are never modified (splits copy them).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loss_rl.errors import ConfigError
from loss_rl.expr import TaskKind
from loss_rl.tasks._config import FILE_DATASET, DatasetConfig
from loss_rl.tasks._files import read_file_data

logger = logging.getLogger(__name__)

#: Environment variable overriding the on-disk cache folder (default ``~/.cache/loss_rl``).
CACHE_ENV = "LOSS_RL_CACHE"
_MNIST1D_VERSION = 1


@dataclass(frozen=True)
class RawDataset:
    """A whole dataset before splitting.

    Attributes:
        x: Features ``[n, d]`` (float64).
        y: Class indices ``[n]`` (int64) or regression targets ``[n]`` (float64).
        kind: Task kind.
        num_classes: Number of classes (``None`` for regression).
        test_rows: The last ``test_rows`` rows are the test part as given (a ``file``
            dataset's ``test_path``): the split draws val and train from the other rows only.
        classes: Name of each class index (a ``file`` dataset's original labels), or ``None``.
    """

    x: np.ndarray
    y: np.ndarray
    kind: TaskKind
    num_classes: int | None
    test_rows: int = 0
    classes: tuple[str, ...] | None = None


def cache_dir() -> Path:
    """The on-disk cache folder: ``$LOSS_RL_CACHE`` or ``~/.cache/loss_rl``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "loss_rl"


def _sklearn(name: str) -> RawDataset:
    from sklearn import datasets as skd

    loader = {
        "digits": skd.load_digits,
        "breast_cancer": skd.load_breast_cancer,
        "wine": skd.load_wine,
        "iris": skd.load_iris,
        "diabetes": skd.load_diabetes,
    }[name]
    x, y = loader(return_X_y=True)
    if name == "diabetes":
        return RawDataset(x.astype(np.float64), y.astype(np.float64), TaskKind.REGRESSION, None)
    y = y.astype(np.int64)
    return RawDataset(x.astype(np.float64), y, TaskKind.CLASSIFICATION, int(y.max()) + 1)


def _generate_mnist1d(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    # make_dataset seeds the global `random` and `numpy.random` generators; leave them as found.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float64)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    return x, y


def _mnist1d(num_samples: int, seed: int) -> RawDataset:
    tag = hashlib.sha1(
        json.dumps({"n": num_samples, "seed": seed, "v": _MNIST1D_VERSION}).encode()
    ).hexdigest()[:10]
    path = cache_dir() / f"mnist1d_n{num_samples}_s{seed}_{tag}.npz"
    x = y = None
    if path.exists():
        try:
            with np.load(path) as f:
                x, y = f["x"], f["y"]
        except (OSError, ValueError, KeyError):
            logger.warning("ignoring unreadable MNIST-1D cache %s; regenerating", path)
            x = y = None
    if x is None or y is None:
        logger.info("generating MNIST-1D (n=%d, seed=%d) into %s", num_samples, seed, path)
        x, y = _generate_mnist1d(num_samples, seed)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename so concurrent workers never read a half-written file.
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, x=x, y=y)
            os.replace(tmp, path)
        except OSError as exc:  # a read-only home still works, just without the cache
            logger.warning("could not cache MNIST-1D at %s: %s", path, exc)
    return RawDataset(x, y, TaskKind.CLASSIFICATION, int(y.max()) + 1)


def _synthetic(cfg: DatasetConfig) -> RawDataset:
    from sklearn.datasets import make_classification, make_regression

    n = cfg.num_samples or 2000
    d = cfg.num_features or 20
    informative = cfg.num_informative or min(10, d)
    seed = 0 if cfg.seed is None else cfg.seed
    if cfg.name == "synthetic_classification":
        c = cfg.num_classes or 4
        if c > 2**informative:
            raise ConfigError(
                f"{c} classes need at least {int(np.ceil(np.log2(c)))} informative features; "
                f"raise num_informative (now {informative})",
                field="task.dataset.num_informative",
            )
        x, y = make_classification(
            n_samples=n,
            n_features=d,
            n_informative=informative,
            n_redundant=0,
            n_classes=c,
            n_clusters_per_class=1,
            class_sep=1.0 if cfg.class_sep is None else cfg.class_sep,
            flip_y=0.0,
            random_state=seed,
        )
        return RawDataset(x.astype(np.float64), y.astype(np.int64), TaskKind.CLASSIFICATION, c)
    x, y = make_regression(
        n_samples=n,
        n_features=d,
        n_informative=informative,
        noise=10.0 if cfg.noise is None else cfg.noise,
        random_state=seed,
    )
    return RawDataset(x.astype(np.float64), y.astype(np.float64), TaskKind.REGRESSION, None)


@functools.lru_cache(maxsize=16)
def load_raw(cfg: DatasetConfig) -> RawDataset:
    """The whole dataset described by ``cfg`` (cached in-process; do not modify the arrays).

    Raises:
        ConfigError: if the dataset options are invalid (checked by :class:`DatasetConfig`), or
            a ``file`` dataset's file cannot be used (see :func:`describe_file_data`).
    """
    if cfg.name == FILE_DATASET:
        data = read_file_data(cfg)  # its arrays are already read-only
        return RawDataset(data.x, data.y, data.kind, data.num_classes, data.test_rows, data.classes)
    if cfg.name == "mnist1d":
        raw = _mnist1d(cfg.num_samples or 5000, 42 if cfg.seed is None else cfg.seed)
    elif cfg.name.startswith("synthetic_"):
        raw = _synthetic(cfg)
    else:
        raw = _sklearn(cfg.name)
    raw.x.setflags(write=False)
    raw.y.setflags(write=False)
    return raw


def describe_file_data(cfg: DatasetConfig) -> dict[str, Any]:
    """What a ``file`` dataset holds, as plain JSON-able data (for the run folder and ``inspect``).

    Args:
        cfg: A dataset with ``name: file``.

    Returns:
        ``path`` (absolute), ``format``, ``size_bytes``, ``sha256``, ``rows`` (used),
        ``rows_dropped`` (missing values, ``drop_missing: true``), ``columns`` (``count`` of
        feature columns after one-hot encoding, their ``names``, the ``source`` columns of the
        file and the ``encoded`` ones with their values), ``target``, ``task_kind``,
        ``kind_inferred`` and ``kind_reason``, ``classes`` (``names`` and ``counts`` of the
        data file's rows; ``None`` for regression), ``target_stats`` (``mean``, ``std``,
        ``min``, ``max`` of the data file's targets; ``None`` for classification), ``test``
        (the same facts of the test file, or ``None``) and ``summary``, one line of text.

    Raises:
        ConfigError: if ``cfg`` is not a ``file`` dataset (``task.dataset.name``), or its file
            cannot be used: missing, changed since its run started (``sha256``), unknown or
            missing columns, missing values, a single class, a class too rare to split, ...
    """
    if cfg.name != FILE_DATASET:
        raise ConfigError(
            f"dataset {cfg.name!r} is not read from a file; describe_file_data needs name: file",
            field="task.dataset.name",
        )
    data = read_file_data(cfg)
    main = data.files[0]
    n = main.rows
    y = data.y[:n]
    classes = None
    stats = None
    if data.classes is not None:
        counts = np.bincount(y, minlength=len(data.classes))
        classes = {"names": list(data.classes), "counts": [int(c) for c in counts]}
    else:
        stats = {
            "mean": float(y.mean()),
            "std": float(y.std()),
            "min": float(y.min()),
            "max": float(y.max()),
        }
    test = None
    if len(data.files) > 1:
        info = data.files[1]
        test = {
            "path": info.path,
            "size_bytes": info.size_bytes,
            "sha256": info.sha256,
            "rows": info.rows,
            "rows_dropped": info.rows_dropped,
        }
    how = f"inferred from {data.kind_reason}" if data.kind_inferred else "set by task_kind"
    size = f"{len(data.classes)} classes" if data.classes is not None else "a numeric target"
    dropped = sum(f.rows_dropped for f in data.files)
    summary = (
        f"{Path(main.path).name}: {n} rows"
        + (f" (+{test['rows']} test rows from {Path(test['path']).name})" if test else "")
        + (f", {dropped} dropped for missing values" if dropped else "")
        + f"; {len(data.feature_names)} feature columns from {len(data.feature_columns)}"
        + f"; target {data.target!r}: {data.kind.value} ({how}), {size}"
    )
    return {
        "path": main.path,
        "format": main.format,
        "size_bytes": main.size_bytes,
        "sha256": main.sha256,
        "rows": n,
        "rows_dropped": main.rows_dropped,
        "columns": {
            "count": len(data.feature_names),
            "names": list(data.feature_names),
            "source": list(data.feature_columns),
            "encoded": {k: list(v) for k, v in data.categories.items()},
        },
        "target": data.target,
        "task_kind": data.kind.value,
        "kind_inferred": data.kind_inferred,
        "kind_reason": data.kind_reason,
        "classes": classes,
        "target_stats": stats,
        "test": test,
        "summary": summary,
    }
