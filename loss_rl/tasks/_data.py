"""Turn a :class:`TaskConfig` and a seed into tensors: split, corrupt, scale.

Order of operations (all deterministic in the seed):

1. **split** the whole dataset into val / test / train (stratified by class unless disabled);
2. **corrupt** the training part (label noise, imbalance or subsampling), recording the clean
   labels and which rows changed;
3. **corrupt the validation labels** with the same label noise (kind and rate) when the task's
   ``corruption.val`` is ``noisy`` (the default for ``symmetric`` / ``pairflip``), from a random
   stream of its own: the split, the training part and the test part are the same as with
   ``val: clean``. The test part is never corrupted;
4. **standardise** features (and regression targets) with statistics of the final training part
   only; val and test are transformed with the same statistics.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from loss_rl.errors import ConfigError
from loss_rl.expr import TaskKind
from loss_rl.tasks._config import CorruptionConfig, DatasetConfig, SplitConfig, TaskConfig
from loss_rl.tasks._datasets import RawDataset, load_raw

_STREAMS = {"data": 0, "init": 1, "batches": 2, "val-noise": 3}


def derive_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed for one use (``data``, ``init``, ``batches``, ``val-noise``).

    Different streams of one seed, and equal streams of different seeds, are statistically
    independent (NumPy ``SeedSequence``).

    Raises:
        ConfigError: if ``seed`` is negative or not an integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seeds must be non-negative integers, got {seed!r}", field="seeds")
    state = np.random.SeedSequence([int(seed), _STREAMS[stream]]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


@dataclass(frozen=True, eq=False)
class Split:
    """One part of a task.

    Attributes:
        x: Standardised features ``[n, d]`` (float32).
        y: Class indices ``[n]`` (int64) or standardised regression targets ``[n]`` (float32).
    """

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True, eq=False)
class NoiseRecord:
    """The realised corruption of one part (the training part, or the validation labels).

    Attributes:
        kind: The corruption kind.
        indices: Row of each sample of the part in the whole dataset.
        clean_y: Labels / targets of the part before corruption (original units).
        corrupted: Which samples of the part had their label / target changed.
        dropped: Dataset rows removed from the part (imbalance, subsample; training only).
    """

    kind: str
    indices: np.ndarray
    clean_y: np.ndarray
    corrupted: np.ndarray
    dropped: np.ndarray

    @property
    def rate(self) -> float:
        """Realised fraction of corrupted labels of the part."""
        return float(self.corrupted.mean()) if self.corrupted.size else 0.0


@dataclass(frozen=True, eq=False)
class TaskData:
    """Tensors of one task realisation (cached and shared: treat them as read-only).

    Attributes:
        config: The task configuration.
        seed: Seed of the split and corruption.
        kind: Classification or regression.
        train: Training part (possibly corrupted) — inner training only.
        val: Validation part — the search reward; its labels are noisy when the task's label
            noise corrupts them (``config.corruption.noisy_val``, see ``val_noise``).
        test: Test part (never corrupted) — reports only.
        num_classes: Number of classes (``None`` for regression).
        num_features: Number of input features.
        noise: The realised corruption of the training part.
        feature_mean: Training feature means used for standardisation.
        feature_std: Training feature stds used for standardisation.
        target_mean: Training target mean (regression; 0 for classification).
        target_std: Training target std (regression; 1 for classification).
        rows: Dataset row of every sample of each part (``train``, ``val``, ``test``).
        val_noise: The realised corruption of the validation labels (``clean_y``, ``corrupted``,
            ``rate``), or ``None`` when they are clean.
    """

    config: TaskConfig
    seed: int
    kind: TaskKind
    train: Split
    val: Split
    test: Split
    num_classes: int | None
    num_features: int
    noise: NoiseRecord
    feature_mean: np.ndarray
    feature_std: np.ndarray
    target_mean: float = 0.0
    target_std: float = 1.0
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    val_noise: NoiseRecord | None = None

    @property
    def num_outputs(self) -> int:
        """Model outputs: the number of classes, or 1 for regression."""
        return self.num_classes or 1

    def split(self, name: str) -> Split:
        """The part called ``name`` (``train``, ``val`` or ``test``)."""
        if name not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {name!r}; use train, val or test", field="splits")
        return getattr(self, name)


def _split_order(raw: RawDataset, split: SplitConfig, rng: np.random.Generator) -> np.ndarray:
    """A random order of the rows to split whose every prefix is (nearly) stratified by class.

    The rows to split are all but the last ``raw.test_rows`` (a test part given as a file).
    """
    y = raw.y[: len(raw.y) - raw.test_rows]
    n = len(y)
    if raw.kind is TaskKind.REGRESSION or not split.stratify:
        return rng.permutation(n)
    # Rank rows within their class at random, then sort by (rank + jitter) / class size: the
    # classes interleave evenly, so taking the first k rows takes ~k·n_c/n rows of class c.
    key = np.empty(n)
    for c in range(raw.num_classes or 0):
        idx = np.flatnonzero(y == c)
        key[idx] = (rng.permutation(len(idx)) + rng.random(len(idx))) / len(idx)
    return np.argsort(key, kind="stable")


def _corrupt(
    y: np.ndarray,
    cfg: CorruptionConfig,
    num_classes: int | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(kept_positions, new_y_of_kept, corrupted_mask_of_kept)`` for one part.

    The training part takes every kind; the validation part only label noise (nothing is
    dropped). Regression symmetric noise draws the new targets from other samples of ``y``.
    """
    n = len(y)
    keep = np.arange(n)
    path = "task.corruption"
    if cfg.kind in ("imbalance", "subsample"):
        if num_classes is None:  # regression subsample (fraction only; checked by the config)
            assert cfg.fraction is not None
            m = round(cfg.fraction * n)
            if m < 1:
                raise ConfigError(
                    f"fraction {cfg.fraction} keeps no training sample of {n}", f"{path}.fraction"
                )
            keep = np.sort(rng.choice(n, size=m, replace=False))
        else:
            counts = np.bincount(y, minlength=num_classes)
            if cfg.kind == "imbalance":
                assert cfg.ratio is not None
                n_max = counts.max()
                expo = np.arange(num_classes) / max(num_classes - 1, 1)
                target = np.round(n_max * cfg.ratio ** (-expo)).astype(int)
                field = f"{path}.ratio"
            elif cfg.fraction is not None:
                target = np.round(cfg.fraction * counts).astype(int)
                field = f"{path}.fraction"
            else:
                assert cfg.per_class is not None
                target = np.full(num_classes, cfg.per_class)
                field = f"{path}.per_class"
            parts = []
            for c in range(num_classes):
                idx = np.flatnonzero(y == c)
                k = min(len(idx), int(target[c]))
                if k < 1:
                    raise ConfigError(
                        f"leaves class {c} without training samples (it has {len(idx)}); "
                        "use a milder setting",
                        field,
                    )
                parts.append(rng.choice(idx, size=k, replace=False))
            keep = np.sort(np.concatenate(parts))
        return keep, y[keep].copy(), np.zeros(len(keep), dtype=bool)

    new_y = y.copy()
    corrupted = np.zeros(n, dtype=bool)
    if cfg.kind == "symmetric":
        assert cfg.rate is not None
        m = round(cfg.rate * n) if n > 1 or num_classes is not None else 0
        rows = rng.choice(n, size=m, replace=False)
        if num_classes is None:
            # Regression: the target of another training sample (an outlier for this input).
            other = rng.integers(0, n - 1, size=m)
            other += other >= rows
            new_y[rows] = y[other]
        else:
            if cfg.rate >= (num_classes - 1) / num_classes:
                raise ConfigError(
                    f"symmetric noise rate {cfg.rate} leaves the true class no more frequent "
                    f"than a wrong one with {num_classes} classes; use a rate below "
                    f"{(num_classes - 1) / num_classes:.3g}",
                    f"{path}.rate",
                )
            new_y[rows] = (y[rows] + rng.integers(1, num_classes, size=m)) % num_classes
        corrupted[rows] = new_y[rows] != y[rows]
    elif cfg.kind == "pairflip":
        assert cfg.rate is not None and num_classes is not None
        for c in range(num_classes):
            idx = np.flatnonzero(y == c)
            rows = rng.choice(idx, size=round(cfg.rate * len(idx)), replace=False)
            new_y[rows] = (c + 1) % num_classes
            corrupted[rows] = True
    return keep, new_y, corrupted


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    # Constant features (e.g. digits' blank border pixels) are centred but not scaled.
    std = np.where(std > 1e-12, std, 1.0)
    return mean, std


@functools.lru_cache(maxsize=64)
def _load(
    dataset: DatasetConfig, corruption: CorruptionConfig, split: SplitConfig, seed: int
) -> tuple[
    RawDataset,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    tuple[np.ndarray, np.ndarray] | None,
]:
    raw = load_raw(dataset)
    rng = np.random.default_rng(derive_seed(seed, "data"))
    # A test part given as a file (the last raw.test_rows rows) replaces the drawn one.
    n = len(raw.y) - raw.test_rows
    n_val, n_test = split.sizes(n)
    if raw.test_rows:
        n_test = 0
    if n_val + n_test >= n:
        raise ConfigError(
            f"val ({n_val}) + test ({n_test}) leave no training data out of {n} samples",
            field="task.split.val",
        )
    order = _split_order(raw, split, rng)
    val_idx, test_idx, train_idx = np.split(order, [n_val, n_val + n_test])
    if raw.test_rows:
        test_idx = np.arange(n, len(raw.y))
    if raw.num_classes is not None:
        present = np.bincount(raw.y[train_idx], minlength=raw.num_classes)
        empty = np.flatnonzero(present == 0)
        if empty.size:
            raise ConfigError(
                f"the split leaves class {int(empty[0])} without training samples "
                f"({len(train_idx)} training rows); make val/test smaller",
                field="task.split",
            )
    keep, new_y, corrupted = _corrupt(raw.y[train_idx], corruption, raw.num_classes, rng)
    dropped = np.setdiff1d(train_idx, train_idx[keep])
    # The validation labels draw from a stream of their own, after the training part is done:
    # the split and the training corruption are those of ``val: clean``.
    val_noise = None
    if corruption.noisy_val:
        val_rng = np.random.default_rng(derive_seed(seed, "val-noise"))
        _, val_y, val_corrupted = _corrupt(raw.y[val_idx], corruption, raw.num_classes, val_rng)
        val_noise = (val_y, val_corrupted)
    return raw, val_idx, test_idx, train_idx[keep], new_y, corrupted, dropped, val_noise


def load_task(config: TaskConfig, seed: int) -> TaskData:
    """Load, split, corrupt and standardise the task's data for ``seed``.

    The same ``(config, seed)`` always gives the same data (cached in-process); different seeds
    give different splits and noise realisations. Label noise also corrupts the validation
    labels when ``config.corruption.noisy_val`` (the default for ``symmetric`` / ``pairflip``);
    the test part is never corrupted. Statistics for standardisation come from the final training
    part only.

    Args:
        config: The task.
        seed: Seed of the split and the corruption.

    Returns:
        The :class:`TaskData` (shared between callers: do not modify its tensors).

    Raises:
        ConfigError: if the split or corruption is impossible for this dataset (e.g. leaves a
            class without training samples).
    """
    given = _PROVIDED.get((config, int(seed)))
    if given is not None:
        return given
    return _task_data(config.dataset, config.corruption, config.split, int(seed), config)


# Data built elsewhere and handed to this process (a Ray worker gets it from the object store).
_PROVIDED: dict[tuple[TaskConfig, int], TaskData] = {}


def provide_task_data(config: TaskConfig, seed: int, data: TaskData) -> None:
    """Make :func:`load_task` return ``data`` for ``(config, seed)`` in this process.

    For executors that ship the loaded data to worker processes once, instead of each worker
    loading, splitting and corrupting it again. ``data`` must be what ``load_task(config, seed)``
    builds (the driver's own copy).
    """
    _PROVIDED[(config, int(seed))] = data


def has_task_data(config: TaskConfig, seed: int) -> bool:
    """Whether :func:`provide_task_data` gave this process the data of ``(config, seed)``."""
    return (config, int(seed)) in _PROVIDED


@functools.lru_cache(maxsize=64)
def _task_data(
    dataset: DatasetConfig,
    corruption: CorruptionConfig,
    split: SplitConfig,
    seed: int,
    config: TaskConfig,
) -> TaskData:
    derive_seed(seed, "data")  # validates the seed
    raw, val_idx, test_idx, train_idx, train_y, corrupted, dropped, val_noise = _load(
        dataset, corruption, split, seed
    )
    val_y = raw.y[val_idx] if val_noise is None else val_noise[0]
    x_train = raw.x[train_idx]
    f_mean, f_std = _standardise(x_train)

    def feats(idx: np.ndarray) -> Tensor:
        return torch.from_numpy(((raw.x[idx] - f_mean) / f_std).astype(np.float32))

    regression = raw.kind is TaskKind.REGRESSION
    t_mean, t_std = 0.0, 1.0
    if regression:
        t_mean = float(train_y.mean())
        t_std = float(train_y.std()) if train_y.std() > 1e-12 else 1.0

    def targets(y: np.ndarray) -> Tensor:
        if regression:
            return torch.from_numpy(((y - t_mean) / t_std).astype(np.float32))
        return torch.from_numpy(y.astype(np.int64))

    return TaskData(
        config=config,
        seed=seed,
        kind=raw.kind,
        train=Split(
            torch.from_numpy(((x_train - f_mean) / f_std).astype(np.float32)), targets(train_y)
        ),
        val=Split(feats(val_idx), targets(val_y)),
        test=Split(feats(test_idx), targets(raw.y[test_idx])),
        num_classes=raw.num_classes,
        num_features=int(raw.x.shape[1]),
        noise=NoiseRecord(
            kind=corruption.kind,
            indices=train_idx,
            clean_y=raw.y[train_idx].copy(),
            corrupted=corrupted,
            dropped=dropped,
        ),
        feature_mean=f_mean,
        feature_std=f_std,
        target_mean=t_mean,
        target_std=t_std,
        rows={"train": train_idx, "val": val_idx, "test": test_idx},
        val_noise=None
        if val_noise is None
        else NoiseRecord(
            kind=corruption.kind,
            indices=val_idx,
            clean_y=raw.y[val_idx].copy(),
            corrupted=val_noise[1],
            dropped=np.empty(0, dtype=val_idx.dtype),
        ),
    )
