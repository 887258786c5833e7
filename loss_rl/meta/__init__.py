"""Gradient-based meta-learned losses: refine a symbolic loss's constants, or learn a neural loss.

An outer loop updates the loss's parameters φ to minimise the query (validation) loss reached
after ``K`` inner gradient steps on support (training) data, differentiating through those steps:

.. math::  \\mathcal L_{meta}(\\phi) = E_\\tau\\big[\\ell(\\theta_K(\\phi); D'_\\tau)\\big],\\quad
   \\theta_{k+1} = \\theta_k - \\alpha \\nabla_\\theta L_\\phi(\\theta_k; D_\\tau)

Two learnable forms: the constants of any symbolic loss (:class:`SymbolicLoss`, EvoMAL's
refinement, Raymond et al. 2023) and an ML3-style neural loss (:class:`NeuralLoss`, Bechtle et
al. 2021). The outer loop over a task distribution follows MAML (Finn et al. 2017).

This package holds the gradient algorithms only. The neural loss itself lives in
:mod:`loss_rl.neural_loss` (re-exported here; :func:`load_neural_loss` reads an exported one); the
application entry points that resolve presets, read run folders, verify and export,
:func:`loss_rl.refine` (``loss-rl refine``) and :func:`loss_rl.meta_train`
(``loss-rl meta-train``), live above in :mod:`loss_rl._refine`.
"""

from loss_rl.meta._episodes import (
    Episode,
    EpisodeSampler,
    FewShotDigitsEpisodes,
    TaskEpisodes,
)
from loss_rl.meta._evaluate import compare_modules
from loss_rl.meta._fewshot import FewShotResult, few_shot_example
from loss_rl.meta._outer import (
    MetaHistory,
    MetaProgress,
    OuterConfig,
    evaluate_meta_loss,
    meta_optimize,
)
from loss_rl.meta._symbolic import (
    ConstantInfo,
    DeadConstant,
    SymbolicLoss,
    constants_of,
    dead_constants,
)
from loss_rl.meta._unroll import InnerConfig, meta_objective, unrolled_train
from loss_rl.neural_loss import (
    NeuralLoss,
    export_neural_loss,
    load_neural_loss,
    neural_loss_from_dict,
    neural_loss_source,
    neural_loss_to_dict,
)

__all__ = [
    "ConstantInfo",
    "DeadConstant",
    "Episode",
    "EpisodeSampler",
    "FewShotDigitsEpisodes",
    "FewShotResult",
    "InnerConfig",
    "MetaHistory",
    "MetaProgress",
    "NeuralLoss",
    "OuterConfig",
    "SymbolicLoss",
    "TaskEpisodes",
    "compare_modules",
    "constants_of",
    "dead_constants",
    "evaluate_meta_loss",
    "export_neural_loss",
    "few_shot_example",
    "load_neural_loss",
    "meta_objective",
    "meta_optimize",
    "neural_loss_from_dict",
    "neural_loss_source",
    "neural_loss_to_dict",
    "unrolled_train",
]
