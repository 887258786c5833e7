"""Task configuration: a small, validated, YAML-able description of one inner-training task.

A task is ``dataset × corruption × split × model × training budget × metric``. Every section is
a frozen dataclass; :meth:`TaskConfig.from_dict` rejects unknown keys, wrong types and bad values
with a :class:`~loss_rl.errors.ConfigError` naming the dotted field and the fix, and
:meth:`TaskConfig.to_dict` returns plain data that ``from_dict`` reads back unchanged.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from loss_rl.expr import TaskKind
from loss_rl.schema import Section, build, fail
from loss_rl.tasks._files import FILE_FORMATS, TABLE_FORMATS, file_format, read_file_data

_C, _R = TaskKind.CLASSIFICATION, TaskKind.REGRESSION

#: Dataset name -> task kind. Everything is bundled with scikit-learn or generated offline.
DATASET_KINDS: dict[str, TaskKind] = {
    "digits": _C,
    "breast_cancer": _C,
    "wine": _C,
    "iris": _C,
    "mnist1d": _C,
    "synthetic_classification": _C,
    "diabetes": _R,
    "synthetic_regression": _R,
}

#: The dataset read from a user's file (``path``): its kind is ``task_kind`` or inferred from
#: the target column, its shape read from the file (see :class:`DatasetConfig`).
FILE_DATASET = "file"

#: Options each dataset accepts besides ``name`` (the others are rejected).
DATASET_OPTIONS: dict[str, tuple[str, ...]] = {
    "digits": (),
    "breast_cancer": (),
    "wine": (),
    "iris": (),
    "diabetes": (),
    "mnist1d": ("num_samples", "seed"),
    "synthetic_classification": (
        "num_samples",
        "num_features",
        "num_informative",
        "num_classes",
        "class_sep",
        "seed",
    ),
    "synthetic_regression": ("num_samples", "num_features", "num_informative", "noise", "seed"),
    FILE_DATASET: (
        "path",
        "target",
        "features",
        "task_kind",
        "test_path",
        "drop_missing",
        "sha256",
    ),
}

#: Input features and model outputs of the datasets whose shape is fixed (the generated ones
#: take theirs from their options, ``file`` from its file: :meth:`DatasetConfig.shape`), for the
#: parameter cap (:data:`MAX_MODEL_PARAMS`); ``tests/test_cli_inputs.py`` keeps them equal to
#: the data.
DATASET_SHAPES: dict[str, tuple[int, int]] = {
    "digits": (64, 10),
    "breast_cancer": (30, 2),
    "wine": (13, 3),
    "iris": (4, 3),
    "diabetes": (10, 1),
    "mnist1d": (40, 10),
}

MAX_MODEL_PARAMS = 1_000_000
"""Cap on the trainable parameters of a task's model (weights and biases, on its dataset).

The batched trainer holds one copy per (loss, seed) pair, with Adam's two moment buffers, so a
population of 68 models at the cap already needs about 1 GB; the shipped presets use at most
~15,000 parameters (MNIST-1D, MLP 100-100). A larger model is refused with a
:class:`~loss_rl.errors.ConfigError` naming ``task.model.widths`` (or ``channels``); a ``module``
model's size is known only once its factory has built it, so :func:`loss_rl.tasks.build_model`
counts and refuses it there (naming ``task.model.factory``).
"""

ACTIVATIONS: tuple[str, ...] = ("relu", "tanh", "gelu", "silu", "elu", "leaky_relu", "sigmoid")

#: Scores the search can maximise, per task kind (``neg_*`` are negated so higher is better).
METRICS: dict[TaskKind, tuple[str, ...]] = {
    _C: ("accuracy", "balanced_accuracy", "macro_f1", "neg_nll"),
    _R: ("r2", "neg_mse", "neg_mae"),
}
DEFAULT_METRIC: dict[TaskKind, str] = {_C: "accuracy", _R: "r2"}


def _positive(value: float | int | None, path: str, what: str = "a positive number") -> None:
    if value is not None and not value > 0:
        fail(path, f"must be {what}, got {value!r}")


@dataclass(frozen=True)
class DatasetConfig(Section):
    """Which dataset, and the options of generated ones or of a user's data file.

    Attributes:
        name: One of :data:`DATASET_KINDS` (``digits``, ``breast_cancer``, ``wine``, ``iris``,
            ``diabetes``, ``mnist1d``, ``synthetic_classification``, ``synthetic_regression``)
            or ``file`` (:data:`FILE_DATASET`: the data of ``path``).
        num_samples: Size of a generated dataset (MNIST-1D: 5000, synthetic: 2000 by default).
        num_features: Features of a synthetic dataset (default 20).
        num_informative: Informative features of a synthetic dataset (default 10).
        num_classes: Classes of ``synthetic_classification`` (default 4).
        class_sep: Class separation of ``synthetic_classification`` (default 1.0).
        noise: Target noise std of ``synthetic_regression`` (default 10.0).
        seed: Generator seed of a generated dataset (MNIST-1D: 42 = the published dataset;
            synthetic: 0). The dataset itself does not change with the training seed.
        path: The data file of ``file`` (required): ``.csv``, ``.parquet`` (needs pyarrow:
            ``pip install "loss-rl[parquet]"``), ``.npz`` (arrays ``x`` [samples, features]
            and ``y`` [samples]) or ``.npy`` (one 2-D numeric array, the target one of its
            columns). Kept as given: a relative path is read relative to the current directory
            (a preset loader makes the paths of a YAML file absolute, relative to its folder).
        target: The label / target column of a CSV or Parquet file (required there); for an
            ``.npy`` file a column index (``3``, ``"-1"``; default the last column); ``.npz``
            files take ``y``.
        features: The feature columns of a CSV or Parquet file (default: every other column).
            Numeric columns are used as they are, text and categorical ones one-hot encoded.
        task_kind: ``classification`` or ``regression``; ``None`` infers it from the target
            (text, true/false, or at most 50 distinct whole numbers, fewer than half the rows:
            classification; other numbers: regression).
        test_path: A separate test file with the same columns (same format as ``path``): its
            rows are the test part, and the val / train parts are split from ``path``.
        drop_missing: Leave out rows with missing or infinite values in the columns used
            (``False``: such rows are an error).
        sha256: The SHA-256 of ``path`` recorded when a run started (:func:`~loss_rl.tasks.
            file_sha256`); reading a file whose hash differs is an error.
    """

    _path: ClassVar[str] = "task.dataset"

    name: str = "digits"
    num_samples: int | None = None
    num_features: int | None = None
    num_informative: int | None = None
    num_classes: int | None = None
    class_sep: float | None = None
    noise: float | None = None
    seed: int | None = None
    path: str | None = None
    target: str | int | None = None
    features: tuple[str, ...] | None = None
    task_kind: Literal["classification", "regression"] | None = None
    test_path: str | None = None
    drop_missing: bool = False
    sha256: str | None = None

    _optional_keys: ClassVar[tuple[str, ...]] = (
        "num_samples",
        "num_features",
        "num_informative",
        "num_classes",
        "class_sep",
        "noise",
        "seed",
        "path",
        "target",
        "features",
        "task_kind",
        "test_path",
        "sha256",
    )

    def __post_init__(self) -> None:
        if isinstance(self.features, list):  # from Python; a tuple keeps the config hashable
            object.__setattr__(self, "features", tuple(self.features))
        super().__post_init__()

    def _relevant(self) -> tuple[str, ...]:
        # Only the dataset's own options: ``drop_missing: false`` would be refused elsewhere.
        return ("name", *DATASET_OPTIONS.get(self.name, ()))

    def _validate(self, path: str, given: frozenset[str]) -> None:
        if self.name not in DATASET_OPTIONS:
            fail(
                f"{path}.name",
                f"unknown dataset {self.name!r}; choose one of {', '.join(DATASET_OPTIONS)}",
            )
        allowed = DATASET_OPTIONS[self.name]
        for key in sorted(given - {"name"} - set(allowed)):
            if getattr(self, key) is not None:
                takes = f"takes only {', '.join(allowed)}" if allowed else "takes no options"
                fail(f"{path}.{key}", f"dataset {self.name!r} {takes}; remove {key!r}")
        if self.num_samples is not None and self.num_samples < 10:
            fail(f"{path}.num_samples", f"must be at least 10, got {self.num_samples}")
        for key in ("num_features", "num_informative"):
            _positive(getattr(self, key), f"{path}.{key}", "a positive integer")
        if (
            self.num_features is not None
            and self.num_informative is not None
            and self.num_informative > self.num_features
        ):
            fail(f"{path}.num_informative", "cannot exceed num_features")
        if self.num_classes is not None and self.num_classes < 2:
            fail(f"{path}.num_classes", f"must be at least 2, got {self.num_classes}")
        _positive(self.class_sep, f"{path}.class_sep")
        if self.noise is not None and self.noise < 0:
            fail(f"{path}.noise", f"must be >= 0, got {self.noise}")
        if self.seed is not None and self.seed < 0:
            fail(f"{path}.seed", f"must be >= 0, got {self.seed}")
        if self.name == FILE_DATASET:
            self._validate_file(path)

    def _validate_file(self, path: str) -> None:
        """The checks of a ``file`` dataset that need no reading (the rest: on first read)."""
        formats = ", ".join(FILE_FORMATS)
        if not self.path:
            fail(f"{path}.path", f"dataset 'file' needs path: the data file ({formats})")
        fmt = file_format(self.path)
        if fmt is None:
            fail(
                f"{path}.path",
                f"{self.path}: unsupported file type {Path(self.path).suffix or '(none)'!r}; "
                f"use one of {formats}",
            )
        if self.test_path is not None and file_format(self.test_path) != fmt:
            fail(
                f"{path}.test_path",
                f"{self.test_path}: the test file must be a {fmt} file like path ({self.path})",
            )
        if fmt in TABLE_FORMATS:
            if self.target is None or self.target == "":
                fail(f"{path}.target", f"required for a {fmt} file: the label column, e.g. label")
        elif fmt == "npz":
            for key in ("target", "features"):
                if getattr(self, key) is not None:
                    fail(
                        f"{path}.{key}",
                        "an .npz file holds the arrays x (features) and y (target); remove "
                        f"{key!r}",
                    )
        else:
            if self.features is not None:
                fail(
                    f"{path}.features",
                    "an .npy file uses every column but the target as a feature; remove "
                    "'features' (or save a CSV / Parquet file with named columns)",
                )
            if self.target is not None and not str(self.target).strip().lstrip("-").isdigit():
                fail(
                    f"{path}.target",
                    "for an .npy file target is a column index (e.g. 0 or -1), got "
                    f"{self.target!r}",
                )
        if self.features is not None:
            if not self.features:
                fail(f"{path}.features", "lists no column; give at least one, or remove it")
            repeated = sorted({c for c in self.features if self.features.count(c) > 1})
            if repeated:
                fail(f"{path}.features", f"lists {', '.join(map(repr, repeated))} twice")
            if self.target is not None and str(self.target) in self.features:
                fail(
                    f"{path}.features",
                    f"the target {str(self.target)!r} cannot also be a feature; remove it",
                )
        if self.task_kind is not None and self.task_kind not in (_C.value, _R.value):
            fail(
                f"{path}.task_kind",
                f"got {self.task_kind!r}; choose classification or regression (or remove it to "
                "infer it from the target)",
            )
        if self.sha256 is not None and not _is_sha256(self.sha256):
            fail(
                f"{path}.sha256",
                f"expected the file's SHA-256 as 64 hex digits (loss_rl.tasks.file_sha256), got "
                f"{self.sha256!r}",
            )

    @property
    def kind(self) -> TaskKind:
        """Classification or regression (a ``file`` without ``task_kind``: read from the file).

        Raises:
            ConfigError: for a ``file`` dataset whose file cannot be used (see
                :func:`~loss_rl.tasks.read_file_data`).
        """
        if self.name != FILE_DATASET:
            return DATASET_KINDS[self.name]
        if self.task_kind is not None:
            return TaskKind(self.task_kind)
        return read_file_data(self).kind

    def shape(self) -> tuple[int, int]:
        """``(input features, model outputs)``: classes, or 1 for regression.

        A ``file`` dataset is read for it (features after one-hot encoding).
        """
        if self.name in DATASET_SHAPES:
            return DATASET_SHAPES[self.name]
        if self.name == FILE_DATASET:
            data = read_file_data(self)
            return int(data.x.shape[1]), data.num_classes or 1
        features = self.num_features or 20
        if self.kind is _R:
            return features, 1
        return features, self.num_classes or 4


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


CorruptionKind = Literal["none", "symmetric", "pairflip", "imbalance", "subsample"]
#: What the validation labels of a label-noise task are (``task.corruption.val``).
ValLabels = Literal["noisy", "clean"]
VAL_LABELS: tuple[str, ...] = ("noisy", "clean")
#: Label-noise kinds -> whether their validation labels are noisy when ``val`` is not given.
_NOISY_VAL_DEFAULT: dict[str, bool] = {"symmetric": True, "pairflip": True}
_CORRUPTION_FIELDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "symmetric": ("rate", "val"),
    "pairflip": ("rate", "val"),
    "imbalance": ("ratio",),
    "subsample": ("fraction", "per_class"),
}


@dataclass(frozen=True)
class CorruptionConfig(Section):
    """Corruption of the *training* part and, for label noise, of the validation part.

    The test part is never corrupted. Imbalance and subsampling change only the training part;
    label noise (``symmetric``, ``pairflip``) also corrupts the validation labels, with the same
    kind and rate, unless ``val: clean`` (a practitioner with noisy labels has noisy validation
    labels too; ``clean`` models a small trusted validation set).

    Attributes:
        kind: ``none``; ``symmetric`` label noise (exactly ``round(rate·n)`` labels of the part
            move to a uniformly chosen *other* class; regression: their targets are replaced by
            targets drawn from other samples of the same part); ``pairflip``
            (``round(rate·n_c)`` samples of each class ``c`` get label ``(c+1) mod C``);
            ``imbalance`` (long tail: class ``i`` keeps ``n_max·ratio^(-i/(C-1))`` training
            samples); ``subsample`` (few data: a ``fraction`` of each class, or at most
            ``per_class`` training samples per class).
        rate: Noise rate for ``symmetric`` / ``pairflip``, in ``[0, 1)``.
        ratio: Imbalance ratio ``n_max / n_min >= 1`` for ``imbalance`` (e.g. 10 or 100).
        fraction: Kept fraction in ``(0, 1]`` for ``subsample``.
        per_class: Kept samples per class for ``subsample`` (classification only).
        val: Validation labels of a label-noise kind: ``noisy`` (corrupted like the training
            part, with an independent random stream) or ``clean``; ``None`` (not written) is the
            kind's default, ``noisy`` (see :attr:`noisy_val`). Other kinds reject it.
    """

    _path: ClassVar[str] = "task.corruption"

    kind: CorruptionKind = "none"
    rate: float | None = None
    ratio: float | None = None
    fraction: float | None = None
    per_class: int | None = None
    val: ValLabels | None = None

    _optional_keys: ClassVar[tuple[str, ...]] = ("rate", "ratio", "fraction", "per_class", "val")

    def _relevant(self) -> tuple[str, ...]:
        return ("kind", *_CORRUPTION_FIELDS[self.kind])

    def _validate(self, path: str, given: frozenset[str]) -> None:
        wanted = _CORRUPTION_FIELDS[self.kind]
        if "val" in given and "val" not in wanted:
            fail(
                f"{path}.val",
                f"corruption kind {self.kind!r} leaves the validation labels clean; only label "
                f"noise ({', '.join(_NOISY_VAL_DEFAULT)}) can corrupt them: remove 'val'",
            )
        if self.val is not None and self.val not in VAL_LABELS:
            fail(
                f"{path}.val",
                f"got {self.val!r}; choose one of {', '.join(map(repr, VAL_LABELS))}",
            )
        for key in sorted(given - {"kind"} - set(wanted)):
            uses = ", ".join(wanted) if wanted else "no options"
            fail(f"{path}.{key}", f"corruption kind {self.kind!r} uses {uses}; remove {key!r}")
        if self.kind in ("symmetric", "pairflip"):
            if self.rate is None:
                fail(
                    f"{path}.rate",
                    f"required for kind {self.kind!r}: a fraction in [0, 1), e.g. 0.4",
                )
            if not 0 <= self.rate < 1:
                fail(
                    f"{path}.rate", f"impossible noise rate {self.rate!r}; use a fraction in [0, 1)"
                )
            if self.kind == "pairflip" and self.rate >= 0.5:
                fail(
                    f"{path}.rate",
                    f"pair-flip rate {self.rate!r} makes the flipped label the majority of its "
                    "class; use a rate below 0.5",
                )
        elif self.kind == "imbalance":
            if self.ratio is None:
                fail(f"{path}.ratio", "required for kind 'imbalance': n_max / n_min >= 1, e.g. 10")
            if not self.ratio >= 1:
                fail(
                    f"{path}.ratio",
                    f"imbalance ratio n_max / n_min must be >= 1, got {self.ratio!r}",
                )
        elif self.kind == "subsample":
            if (self.fraction is None) == (self.per_class is None):
                fail(
                    f"{path}.fraction",
                    "kind 'subsample' needs exactly one of fraction (in (0, 1]) or per_class (a "
                    "positive integer)",
                )
            if self.fraction is not None and not 0 < self.fraction <= 1:
                fail(f"{path}.fraction", f"must be in (0, 1], got {self.fraction!r}")
            if self.per_class is not None and self.per_class < 1:
                fail(f"{path}.per_class", f"must be a positive integer, got {self.per_class!r}")

    @property
    def noisy_val(self) -> bool:
        """Whether the validation labels are corrupted (``val``, or the kind's default)."""
        if self.kind not in _NOISY_VAL_DEFAULT:
            return False
        return _NOISY_VAL_DEFAULT[self.kind] if self.val is None else self.val == "noisy"


@dataclass(frozen=True)
class SplitConfig(Section):
    """Held-out parts: an integer is a count, a float in ``(0, 1)`` a fraction of the dataset.

    Attributes:
        val: Validation part (the search reward), default 0.2.
        test: Test part (reports only), default 0.2.
        stratify: Keep class proportions in every part (classification).
    """

    _path: ClassVar[str] = "task.split"

    val: float = 0.2
    test: float = 0.2
    stratify: bool = True

    def _validate(self, path: str, given: frozenset[str]) -> None:
        for key in ("val", "test"):
            v = getattr(self, key)
            if isinstance(v, int):
                if v < 1:
                    fail(f"{path}.{key}", f"a count must be >= 1, got {v}")
            elif not 0 < v < 1:
                fail(
                    f"{path}.{key}",
                    f"a fraction must be in (0, 1), got {v!r}; write an integer for a count",
                )
        if (
            not isinstance(self.val, int)
            and not isinstance(self.test, int)
            and self.val + self.test >= 1
        ):
            fail(f"{path}.val", "val + test leave no training data; make them sum to less than 1")

    def sizes(self, n: int) -> tuple[int, int]:
        """``(n_val, n_test)`` for a dataset of ``n`` samples."""

        def size(v: float) -> int:
            return int(v) if isinstance(v, int) else max(1, round(v * n))

        return size(self.val), size(self.test)


ModelKind = Literal["mlp", "linear", "cnn1d", "module"]
_MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "mlp": ("widths", "activation"),
    "linear": (),
    "cnn1d": ("channels", "kernel_sizes", "stride", "padding", "activation"),
    "module": ("factory", "kwargs"),
}
_FACTORY_FORM = "'package.module:function' or 'path/to/file.py:function'"


def split_factory(factory: str) -> tuple[str, str] | None:
    """``(module or .py path, attribute)`` of a ``module`` model's factory, ``None`` if malformed.

    The form is checked only: nothing is imported. The attribute may be dotted
    (``Class.method``); the module is a dotted name, or a path ending in ``.py``.
    """
    target, sep, attr = factory.rpartition(":")
    if not (sep and target and attr) or not all(a.isidentifier() for a in attr.split(".")):
        return None
    if not target.endswith(".py") and not all(m.isidentifier() for m in target.split(".")):
        return None
    return target, attr


def _plain(value: Any, path: str) -> Any:
    """A copy of ``value`` as plain YAML data (tuples become lists), or a ConfigError."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                fail(f"{path}.{k}", f"mapping keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{path}.{k}")
        return out
    fail(
        path,
        f"must be plain YAML data (strings, numbers, booleans, null, lists, mappings), got "
        f"{value!r} of type {type(value).__name__}",
    )


@dataclass(frozen=True)
class ModelConfig(Section):
    """The trained model.

    Attributes:
        kind: ``mlp`` (hidden ``widths``), ``linear`` (no hidden layer), ``cnn1d`` (1-D
            convolutions over the features read as a sequence, then a linear head; the default
            is the MNIST-1D reference ConvNet) or ``module`` (any ``torch.nn.Module`` that
            ``factory`` builds: see :attr:`runs_code`).
        widths: Hidden widths of the MLP (default 64-64).
        activation: One of :data:`ACTIVATIONS`.
        channels: Channels of each ``cnn1d`` convolution.
        kernel_sizes: Kernel size of each convolution (same length as ``channels``).
        stride: Stride of every convolution.
        padding: Zero padding of every convolution.
        factory: For ``module``: ``"package.module:function"`` or ``"path/to/file.py:function"``
            (a path relative to the current directory, or absolute; see :meth:`resolved`).
            :func:`loss_rl.tasks.build_model` calls ``function(num_features, num_outputs,
            **kwargs)``, which returns a fresh module mapping ``[B, num_features]`` float32
            inputs to logits ``[B, num_outputs]`` (regression: ``[B, 1]`` or ``[B]``). Only
            its form is checked here: reading a config never imports it.
        kwargs: For ``module``: keyword arguments of the factory, plain YAML data (they are
            left out of the config's hash; treat them as read-only).
    """

    _path: ClassVar[str] = "task.model"

    kind: ModelKind = "mlp"
    widths: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    channels: tuple[int, ...] = (25, 25, 25)
    kernel_sizes: tuple[int, ...] = (5, 3, 3)
    stride: int = 2
    padding: int = 1
    factory: str | None = None
    # A dict cannot be hashed, and configs key caches (``load_task``): equal configs still
    # compare their kwargs, they merely share a hash bucket.
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    _optional_keys: ClassVar[tuple[str, ...]] = ("factory",)

    def __post_init__(self) -> None:
        # Plain copies (tuples as lists, like YAML) so that to_dict / from_dict round-trip and
        # the caller's objects are not shared.
        object.__setattr__(self, "kwargs", _plain(self.kwargs, f"{self._path}.kwargs"))
        super().__post_init__()

    def _relevant(self) -> tuple[str, ...]:
        if self.kind == "module" and not self.kwargs:
            return ("kind", "factory")
        return ("kind", *_MODEL_FIELDS[self.kind])

    def _validate(self, path: str, given: frozenset[str]) -> None:
        wanted = _MODEL_FIELDS[self.kind]
        if not self.kwargs:  # an empty mapping is the default, written or not
            given -= {"kwargs"}
        for key in sorted(given - {"kind"} - set(wanted)):
            uses = ", ".join(wanted) if wanted else "no options"
            fail(f"{path}.{key}", f"model kind {self.kind!r} uses {uses}; remove {key!r}")
        for i, w in enumerate(self.widths):
            if w <= 0:
                fail(f"{path}.widths[{i}]", f"layer widths must be positive, got {w}")
        if self.activation not in ACTIVATIONS:
            fail(
                f"{path}.activation",
                f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}",
            )
        if self.kind == "cnn1d":
            if not self.channels:
                fail(f"{path}.channels", "a cnn1d needs at least one convolution")
            for i, c in enumerate(self.channels):
                if c <= 0:
                    fail(f"{path}.channels[{i}]", f"channels must be positive, got {c}")
            if len(self.kernel_sizes) != len(self.channels):
                fail(
                    f"{path}.kernel_sizes",
                    f"give one kernel size per convolution ({len(self.channels)}), got "
                    f"{len(self.kernel_sizes)}",
                )
            for i, k in enumerate(self.kernel_sizes):
                if k <= 0:
                    fail(f"{path}.kernel_sizes[{i}]", f"kernel sizes must be positive, got {k}")
            if self.stride <= 0:
                fail(f"{path}.stride", f"must be positive, got {self.stride}")
            if self.padding < 0:
                fail(f"{path}.padding", f"must be >= 0, got {self.padding}")
        if self.kind == "module":
            if self.factory is None:
                fail(f"{path}.factory", f"required for kind 'module': {_FACTORY_FORM}")
            if not isinstance(self.factory, str) or split_factory(self.factory) is None:
                fail(f"{path}.factory", f"expected {_FACTORY_FORM}, got {self.factory!r}")

    @property
    def runs_code(self) -> bool:
        """Whether building this model imports and runs user code (``kind: module``).

        A config read from a shared run folder must not run code without the user's consent:
        check this before building (or training) the model. Reading, validating and hashing
        the config never imports the factory.
        """
        return self.kind == "module"

    def resolved(self, base_dir: str | os.PathLike[str]) -> ModelConfig:
        """A copy whose relative ``.py`` factory path is taken relative to ``base_dir``.

        A preset loader calls it with the YAML file's folder, so that
        ``factory: "model.py:make"`` finds the file next to the preset. Other configs (and an
        importable ``package.module:function``) come back unchanged. Nothing is imported.
        """
        parts = split_factory(self.factory) if self.factory is not None else None
        if parts is None or not parts[0].endswith(".py") or Path(parts[0]).is_absolute():
            return self
        return dataclasses.replace(self, factory=f"{Path(base_dir) / parts[0]}:{parts[1]}")

    @property
    def hidden(self) -> tuple[int, ...]:
        """Hidden widths of the dense part (empty for ``linear``, ``cnn1d`` and ``module``)."""
        return self.widths if self.kind == "mlp" else ()

    def num_parameters(self, num_features: int, num_outputs: int) -> int:
        """Trainable parameters (weights and biases) of this model on data of this shape.

        Counted from the spec, without building the model, so a huge spec is refused before
        any memory is spent on it; equal to the parameter count of :func:`loss_rl.tasks.
        build_model`. A ``cnn1d`` whose convolutions leave no sequence counts a length of 1 (it
        is refused when built). A ``module`` counts 0 here: its size is known only once its
        factory has run, and :func:`loss_rl.tasks.build_model` applies the cap then.
        """
        if self.kind == "module":
            return 0
        if self.kind == "cnn1d":
            total, c_in, length = 0, 1, num_features
            for c_out, k in zip(self.channels, self.kernel_sizes, strict=False):
                total += c_in * c_out * k + c_out
                length = max(1, (length + 2 * self.padding - k) // self.stride + 1)
                c_in = c_out
            return total + c_in * length * num_outputs + num_outputs
        total, width = 0, num_features
        for h in self.hidden:
            total += width * h + h
            width = h
        return total + width * num_outputs + num_outputs


@dataclass(frozen=True)
class TrainingConfig(Section):
    """Inner-training budget and optimiser.

    Attributes:
        optimizer: ``adam`` or ``sgd`` (each batched model behaves exactly as its own
            ``torch.optim`` optimiser would).
        lr: Learning rate.
        batch_size: Minibatch size (capped at the training-set size).
        steps: Steps of the short *search* fidelity.
        full_steps: Steps of full training, used to verify the best losses (>= steps).
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        beta1: Adam β1.
        beta2: Adam β2.
        eps: Adam ε.
        weight_decay: L2 penalty added to the gradient (torch's ``weight_decay``).
        select: Which parameters a training ends with (and is scored with). ``best``
            (default): checkpoint selection — the parameters with the best validation score
            among the checks every ``eval_every`` steps and the last step, what a practitioner
            does with a validation set (every loss alike, CE included); ``last``: the last
            step's parameters.
        patience: Early stopping: stop a model after this many validation checks without
            improvement (needs ``select: best``, whose best parameters it keeps); ``None``
            trains every step.
        eval_every: Steps between validation checks (``select: best`` or ``patience``).
    """

    _path: ClassVar[str] = "task.training"

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-2
    batch_size: int = 128
    steps: int = 200
    full_steps: int = 1000
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    select: Literal["best", "last"] = "best"
    patience: int | None = None
    eval_every: int = 50

    _optional_keys: ClassVar[tuple[str, ...]] = ("patience",)

    def _relevant(self) -> tuple[str, ...]:
        common = (
            "optimizer",
            "lr",
            "batch_size",
            "steps",
            "full_steps",
            "weight_decay",
            "select",
            "patience",
            "eval_every",
        )
        extra = ("beta1", "beta2", "eps") if self.optimizer == "adam" else ("momentum", "nesterov")
        return common[:5] + extra + common[5:]

    def _validate(self, path: str, given: frozenset[str]) -> None:
        other = ("momentum", "nesterov") if self.optimizer == "adam" else ("beta1", "beta2", "eps")
        for key in sorted(given & set(other)):
            fail(f"{path}.{key}", f"not an option of optimizer {self.optimizer!r}; remove it")
        _positive(self.lr, f"{path}.lr")
        for key in ("batch_size", "steps", "full_steps", "eval_every"):
            _positive(getattr(self, key), f"{path}.{key}", "a positive integer")
        if self.full_steps < self.steps:
            fail(
                f"{path}.full_steps",
                f"full training ({self.full_steps}) must be at least the search fidelity steps "
                f"({self.steps})",
            )
        if not 0 <= self.momentum < 1:
            fail(f"{path}.momentum", f"must be in [0, 1), got {self.momentum!r}")
        if self.nesterov and self.momentum == 0:
            fail(f"{path}.nesterov", "Nesterov momentum needs momentum > 0")
        for key in ("beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                fail(f"{path}.{key}", f"must be in [0, 1), got {getattr(self, key)!r}")
        _positive(self.eps, f"{path}.eps")
        if self.weight_decay < 0:
            fail(f"{path}.weight_decay", f"must be >= 0, got {self.weight_decay!r}")
        _positive(self.patience, f"{path}.patience", "a positive integer")
        if self.patience is not None and self.select != "best":
            fail(
                f"{path}.patience",
                "early stopping keeps the best checkpoint; use select: best, or remove patience",
            )


@dataclass(frozen=True)
class TaskConfig:
    """A task: dataset × corruption × split × model × training budget × score.

    Build it with :meth:`from_dict` (what YAML presets in ``envs/`` hold); every section may be
    omitted and takes its defaults (digits, clean, 20 %/20 % split, MLP 64-64, Adam 1e-2,
    batch 128, 200 steps).

    Attributes:
        dataset: See :class:`DatasetConfig`.
        corruption: See :class:`CorruptionConfig`.
        split: See :class:`SplitConfig`.
        model: See :class:`ModelConfig`.
        training: See :class:`TrainingConfig`.
        metric: Score the search maximises (higher is better): ``accuracy``,
            ``balanced_accuracy``, ``macro_f1``, ``neg_nll`` (classification) or ``r2``,
            ``neg_mse``, ``neg_mae`` (regression). ``None`` picks ``accuracy`` / ``r2``.

    Example:
        >>> cfg = TaskConfig.from_dict({"dataset": {"name": "digits"},
        ...                             "corruption": {"kind": "symmetric", "rate": 0.4}})
        >>> cfg.score_metric
        'accuracy'
    """

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    metric: str | None = None

    def __post_init__(self) -> None:
        if self.metric is not None and self.metric not in METRICS[self.kind]:
            fail(
                "task.metric",
                f"{self.metric!r} is not a {self.kind.value} score; choose one of "
                f"{', '.join(METRICS[self.kind])}",
            )
        if self.kind is _R and self.corruption.kind in ("pairflip", "imbalance"):
            fail(
                "task.corruption.kind",
                f"{self.corruption.kind!r} needs classes; dataset {self.dataset.name!r} is a "
                "regression task (use symmetric or subsample)",
            )
        if self.kind is _R and self.corruption.per_class is not None:
            fail("task.corruption.per_class", "regression has no classes; use fraction")
        features, outputs = self.dataset.shape()
        size = self.model.num_parameters(features, outputs)
        if size > MAX_MODEL_PARAMS:
            layers = "channels" if self.model.kind == "cnn1d" else "widths"
            fail(
                f"task.model.{layers}",
                f"the model would have {size:,} parameters on {self.dataset.name} ({features} "
                f"features, {outputs} outputs); the cap is {MAX_MODEL_PARAMS:,} "
                "(MAX_MODEL_PARAMS): use smaller layers",
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TaskConfig:
        """Validate plain data (e.g. a YAML preset's ``task:`` block).

        Args:
            data: Mapping with optional keys ``dataset``, ``corruption``, ``split``, ``model``,
                ``training``, ``metric``. A bare string for ``dataset`` is its name.

        Raises:
            ConfigError: naming the dotted field (e.g. ``task.corruption.rate``) and the fix.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        if isinstance(data, Mapping) and isinstance(data.get("dataset"), str):
            data = {**data, "dataset": {"name": data["dataset"]}}
        return build(
            cls,
            data,
            "task",
            mapping_message=f"expected a mapping with {', '.join(names)}, got {{value!r}}",
            unknown_message="unknown section; a task has {allowed}",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able data; ``TaskConfig.from_dict(cfg.to_dict()) == cfg``."""
        out: dict[str, Any] = {
            name: getattr(self, name).to_dict()
            for name in ("dataset", "corruption", "split", "model", "training")
        }
        if self.metric is not None:
            out["metric"] = self.metric
        return out

    def replace(self, **changes: Any) -> TaskConfig:
        """A copy with whole sections replaced (``cfg.replace(training=...)``)."""
        return dataclasses.replace(self, **changes)

    @property
    def kind(self) -> TaskKind:
        """Classification or regression (from the dataset)."""
        return self.dataset.kind

    @property
    def score_metric(self) -> str:
        """The metric the search maximises (``metric`` or the kind's default)."""
        return self.metric or DEFAULT_METRIC[self.kind]
