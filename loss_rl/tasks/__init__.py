"""Tasks: datasets (bundled, generated offline, or a user's file) × corruptions × splits × models.

A :class:`TaskConfig` describes a task in a few YAML-able lines; :func:`load_task` turns it and a
seed into tensors (train for inner training, val for the reward, test for reports only);
:func:`build_model` builds the single model a task trains (a built-in one, or any
``torch.nn.Module`` a factory builds: :func:`load_factory`). Nothing here knows about RL.
"""

from loss_rl.tasks._config import (
    ACTIVATIONS,
    DATASET_KINDS,
    DEFAULT_METRIC,
    FILE_DATASET,
    METRICS,
    CorruptionConfig,
    DatasetConfig,
    ModelConfig,
    SplitConfig,
    TaskConfig,
    TrainingConfig,
)
from loss_rl.tasks._data import (
    NoiseRecord,
    Split,
    TaskData,
    derive_seed,
    has_task_data,
    load_task,
    provide_task_data,
)
from loss_rl.tasks._datasets import CACHE_ENV, RawDataset, cache_dir, describe_file_data, load_raw
from loss_rl.tasks._files import FILE_FORMATS, file_sha256
from loss_rl.tasks._models import ACTIVATION_MODULES, build_model, conv_lengths, load_factory

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_MODULES",
    "CACHE_ENV",
    "DATASET_KINDS",
    "DEFAULT_METRIC",
    "FILE_DATASET",
    "FILE_FORMATS",
    "METRICS",
    "CorruptionConfig",
    "DatasetConfig",
    "ModelConfig",
    "NoiseRecord",
    "RawDataset",
    "Split",
    "SplitConfig",
    "TaskConfig",
    "TaskData",
    "TrainingConfig",
    "build_model",
    "cache_dir",
    "conv_lengths",
    "derive_seed",
    "describe_file_data",
    "file_sha256",
    "has_task_data",
    "load_factory",
    "load_raw",
    "load_task",
    "provide_task_data",
]
