"""Task configuration: a small, validated, YAML-able description of one inner-training task.

A task is ``dataset × corruption × split × model × training budget × metric``. Every section is
a frozen dataclass; :meth:`TaskConfig.from_dict` rejects unknown keys, wrong types and bad values
with a :class:`~loss_rl.errors.ConfigError` naming the dotted field and the fix, and
:meth:`TaskConfig.to_dict` returns plain data that ``from_dict`` reads back unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from loss_rl.expr import TaskKind
from loss_rl.schema import Section, build, fail

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
}

#: Input features and model outputs of the datasets whose shape is fixed (the generated ones
#: take theirs from their options: :meth:`DatasetConfig.shape`), for the parameter cap
#: (:data:`MAX_MODEL_PARAMS`); ``tests/test_cli_inputs.py`` keeps them equal to the data.
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
:class:`~loss_rl.errors.ConfigError` naming ``task.model.widths`` (or ``channels``).
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
    """Which dataset, and the options of generated ones.

    Attributes:
        name: One of :data:`DATASET_KINDS` (``digits``, ``breast_cancer``, ``wine``, ``iris``,
            ``diabetes``, ``mnist1d``, ``synthetic_classification``, ``synthetic_regression``).
        num_samples: Size of a generated dataset (MNIST-1D: 5000, synthetic: 2000 by default).
        num_features: Features of a synthetic dataset (default 20).
        num_informative: Informative features of a synthetic dataset (default 10).
        num_classes: Classes of ``synthetic_classification`` (default 4).
        class_sep: Class separation of ``synthetic_classification`` (default 1.0).
        noise: Target noise std of ``synthetic_regression`` (default 10.0).
        seed: Generator seed of a generated dataset (MNIST-1D: 42 = the published dataset;
            synthetic: 0). The dataset itself does not change with the training seed.
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

    _optional_keys: ClassVar[tuple[str, ...]] = (
        "num_samples",
        "num_features",
        "num_informative",
        "num_classes",
        "class_sep",
        "noise",
        "seed",
    )

    def _validate(self, path: str, given: frozenset[str]) -> None:
        if self.name not in DATASET_KINDS:
            fail(
                f"{path}.name",
                f"unknown dataset {self.name!r}; choose one of {', '.join(DATASET_KINDS)}",
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

    @property
    def kind(self) -> TaskKind:
        """Classification or regression."""
        return DATASET_KINDS[self.name]

    def shape(self) -> tuple[int, int]:
        """``(input features, model outputs)``: classes, or 1 for regression."""
        if self.name in DATASET_SHAPES:
            return DATASET_SHAPES[self.name]
        features = self.num_features or 20
        if self.kind is _R:
            return features, 1
        return features, self.num_classes or 4


CorruptionKind = Literal["none", "symmetric", "pairflip", "imbalance", "subsample"]
_CORRUPTION_FIELDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "symmetric": ("rate",),
    "pairflip": ("rate",),
    "imbalance": ("ratio",),
    "subsample": ("fraction", "per_class"),
}


@dataclass(frozen=True)
class CorruptionConfig(Section):
    """Corruption of the *training* part (val and test are never corrupted).

    Attributes:
        kind: ``none``; ``symmetric`` label noise (exactly ``round(rate·n)`` training labels move
            to a uniformly chosen *other* class; regression: their targets are replaced by targets
            drawn from other training samples); ``pairflip`` (``round(rate·n_c)`` samples of each
            class ``c`` get label ``(c+1) mod C``); ``imbalance`` (long tail: class ``i`` keeps
            ``n_max·ratio^(-i/(C-1))`` samples); ``subsample`` (few data: a ``fraction`` of each
            class, or at most ``per_class`` samples per class).
        rate: Noise rate for ``symmetric`` / ``pairflip``, in ``[0, 1)``.
        ratio: Imbalance ratio ``n_max / n_min >= 1`` for ``imbalance`` (e.g. 10 or 100).
        fraction: Kept fraction in ``(0, 1]`` for ``subsample``.
        per_class: Kept samples per class for ``subsample`` (classification only).
    """

    _path: ClassVar[str] = "task.corruption"

    kind: CorruptionKind = "none"
    rate: float | None = None
    ratio: float | None = None
    fraction: float | None = None
    per_class: int | None = None

    _optional_keys: ClassVar[tuple[str, ...]] = ("rate", "ratio", "fraction", "per_class")

    def _relevant(self) -> tuple[str, ...]:
        return ("kind", *_CORRUPTION_FIELDS[self.kind])

    def _validate(self, path: str, given: frozenset[str]) -> None:
        wanted = _CORRUPTION_FIELDS[self.kind]
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


ModelKind = Literal["mlp", "linear", "cnn1d"]
_MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "mlp": ("widths", "activation"),
    "linear": (),
    "cnn1d": ("channels", "kernel_sizes", "stride", "padding", "activation"),
}


@dataclass(frozen=True)
class ModelConfig(Section):
    """The trained model.

    Attributes:
        kind: ``mlp`` (hidden ``widths``), ``linear`` (no hidden layer) or ``cnn1d`` (1-D
            convolutions over the features read as a sequence, then a linear head; the default
            is the MNIST-1D reference ConvNet).
        widths: Hidden widths of the MLP (default 64-64).
        activation: One of :data:`ACTIVATIONS`.
        channels: Channels of each ``cnn1d`` convolution.
        kernel_sizes: Kernel size of each convolution (same length as ``channels``).
        stride: Stride of every convolution.
        padding: Zero padding of every convolution.
    """

    _path: ClassVar[str] = "task.model"

    kind: ModelKind = "mlp"
    widths: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    channels: tuple[int, ...] = (25, 25, 25)
    kernel_sizes: tuple[int, ...] = (5, 3, 3)
    stride: int = 2
    padding: int = 1

    def _relevant(self) -> tuple[str, ...]:
        return ("kind", *_MODEL_FIELDS[self.kind])

    def _validate(self, path: str, given: frozenset[str]) -> None:
        wanted = _MODEL_FIELDS[self.kind]
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

    @property
    def hidden(self) -> tuple[int, ...]:
        """Hidden widths of the dense part (empty for ``linear`` and ``cnn1d``)."""
        return self.widths if self.kind == "mlp" else ()

    def num_parameters(self, num_features: int, num_outputs: int) -> int:
        """Trainable parameters (weights and biases) of this model on data of this shape.

        Counted from the spec, without building the model, so a huge spec is refused before
        any memory is spent on it; equal to the parameter count of :func:`loss_rl.tasks.
        build_model`. A ``cnn1d`` whose convolutions leave no sequence counts a length of 1 (it
        is refused when built).
        """
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
        patience: Early stopping: stop a model after this many validation checks without
            improvement and keep its best parameters; ``None`` trains every step.
        eval_every: Steps between validation checks when ``patience`` is set.
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
