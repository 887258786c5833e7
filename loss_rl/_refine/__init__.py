"""Application entry points of gradient meta-learning: ``refine`` and ``meta_train``.

They sit beside the search in the application layer: they resolve env presets, read run folders,
verify on the test split with fresh paired seeds, and export. The gradient algorithms they drive
live below, in :mod:`loss_rl.meta`.

- :func:`refine` (``loss-rl refine``): learn a symbolic loss's constants (``_symbolic``), read
  from an expression, a known loss name, a JSON spec or a run folder (``_sources``:
  :func:`resolve_source`, which the CLI's ``show``, ``export`` and ``evaluate`` use too);
- :func:`meta_train` (``loss-rl meta-train``): learn an ML3-style neural loss (``_neural``);
- shared: the inner/outer loop settings (``_settings``), plain-data digests of a verification
  (``_digest``) and the executor wrapper that keeps per-seed scores (``_recorder``); output
  paths are checked before any work with :func:`loss_rl.output_paths.check_writable`.

Raymond et al. 2023 (EvoMAL) refine symbolic constants this way; Bechtle et al. 2021 (ML3) learn
the neural loss; Finn et al. 2017 (MAML) is the outer loop over a task distribution.
"""

from loss_rl._refine._neural import MetaTrainResult, default_meta_folder, meta_train
from loss_rl._refine._settings import MAX_VERIFY_SEEDS, check_verify_seeds
from loss_rl._refine._sources import LossSource, resolve_source
from loss_rl._refine._symbolic import RefineResult, refine
from loss_rl.output_paths import check_writable

__all__ = [
    "MAX_VERIFY_SEEDS",
    "LossSource",
    "MetaTrainResult",
    "RefineResult",
    "check_verify_seeds",
    "check_writable",
    "default_meta_folder",
    "meta_train",
    "refine",
    "resolve_source",
]
