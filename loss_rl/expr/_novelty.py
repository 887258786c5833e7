"""Novelty check: a known loss is not a discovery.

A search may rediscover a library loss in disguise (``0.25 * sum_c(abs(p - t))`` is MAE,
``-2 * log_p_y + 5`` is cross-entropy). :func:`known_equivalent` says which library loss, if any,
an expression is equivalent to, so that reports do not announce it as new.

Equivalence means: on the fixed probes of :func:`loss_rl.expr.probes`, the per-sample gradient of
the loss with respect to the model output is ``s`` times the library loss's gradient, for one
constant ``s > 0``. Training sees a loss only through that gradient; a positive factor leaves the
ranking of predictions and the minimisers unchanged under any optimiser, and Adam's update
``m / (sqrt(v) + eps)`` is invariant to it but for ``eps``. A negative factor maximises the loss,
and a zero gradient (a constant loss) trains nothing, so neither is a match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch

from loss_rl.expr._canonical import canonical
from loss_rl.expr._compile import compile_loss
from loss_rl.expr._nodes import Const, Expr, Op, TaskKind, task_kind
from loss_rl.expr._probes import probes
from loss_rl.expr.library import KNOWN_LOSSES, format_params

#: Relative tolerance of the gradient comparison: a loss matches ``s * L`` when
#: ``max|g - s * g_L| <= GRADIENT_RTOL * max|g|`` (``s`` fitted by least squares).
#:
#: Equal losses written differently agree to ~1e-15 relative in float64 on the probes (e.g.
#: ``2 * (1 - p_y)`` against MAE: 4e-16), so 1e-6 leaves a wide margin for rounding. Distinct
#: losses differ by far more: CE against label smoothing with alpha=0.05 by 4e-2 relative
#: (alpha=0.01: 8e-3), GCE q=0.6 against q=0.7 by 8e-2 (q=0.69: 8e-3). The tolerance has no absolute
#: term on purpose: the check is invariant to the scale, and an absolute floor would let a tiny
#: multiple of any loss (``1e-12 * L``) match every library loss.
GRADIENT_RTOL = 1e-6

How = Literal["canonical", "gradient"]


@dataclass(frozen=True)
class KnownMatch:
    """The library loss an expression is equivalent to.

    Attributes:
        name: Library name (a key of :data:`loss_rl.expr.KNOWN_LOSSES`, e.g. ``"mae"``).
        params: The library loss's hyper-parameters at the match, all of them (``{}`` if it has
            none).
        scale: The positive factor ``s`` with ``expr ≈ s * library loss`` (in gradient).
        how: ``"canonical"`` when the canonical forms agree once a top-level constant factor and
            additive constants are dropped, ``"gradient"`` when only the gradient fingerprints
            on the probes are proportional.
    """

    name: str
    # A dict is not hashable; leaving it out of the hash keeps matches usable as set members
    # (equal matches still have equal names, scales and routes, so hash and == agree).
    params: dict[str, float] = field(hash=False)
    scale: float
    how: How

    def __str__(self) -> str:
        """Readable form, e.g. ``"mae up to scale (×0.25)"`` or ``"gce (q=0.5)"``."""
        text = self.name
        if self.params:
            text += f" ({format_params(self.params)})"
        # Within the match tolerance a scale of 1 is the loss itself, not a rescaled copy.
        if abs(self.scale - 1.0) > GRADIENT_RTOL:
            text += f" up to scale (×{self.scale:.6g})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``name``, ``params``, ``scale``, ``how`` and ``text`` (``str(self)``)."""
        return {
            "name": self.name,
            "params": {k: float(v) for k, v in self.params.items()},
            "scale": float(self.scale),
            "how": self.how,
            "text": str(self),
        }


@dataclass(frozen=True)
class _Variant:
    """One library loss at one hyper-parameter point, prepared for comparison."""

    name: str
    params: tuple[tuple[str, float], ...]
    factor: float
    core: str | None
    grad: np.ndarray


def _terms(name: str, e: Expr) -> list[Expr]:
    # Canonical chains of + and * are left-associative binary trees; this lists their operands.
    if isinstance(e, Op) and e.op == name:
        return _terms(name, e.args[0]) + _terms(name, e.args[1])
    return [e]


def _chain(name: str, terms: list[Expr]) -> Expr:
    out = terms[0]
    for t in terms[1:]:
        out = Op(name, (out, t))
    return out


def _split(expr: Expr) -> tuple[float, str | None]:
    """Write ``canonical(expr)`` as ``factor * core + constant``.

    Additive constants and a constant factor are peeled off the top until neither is left, so
    ``3 * (2 * (1 - p_y) + 5)`` gives ``(-6, "p_y")``.

    Returns:
        The factor and the canonical key of the core; ``(0.0, None)`` for a constant.
    """
    e = canonical(expr)
    factor = 1.0
    while True:
        if isinstance(e, Const):
            return 0.0, None
        if isinstance(e, Op) and e.op == "add":
            rest = [t for t in _terms("add", e) if not isinstance(t, Const)]
            if not rest:
                return 0.0, None
            e = _chain("add", rest)
        if isinstance(e, Op) and e.op == "mul":
            terms = _terms("mul", e)
            consts = [t.value for t in terms if isinstance(t, Const)]
            rest = [t for t in terms if not isinstance(t, Const)]
            if consts and rest:
                factor *= math.prod(consts)
                e = _chain("mul", rest)
                continue  # the core may be a sum with constants again
        # Re-canonicalise: a rebuilt chain of canonical operands may differ in its constants'
        # placement from what canonical() itself would build, and the keys must be comparable.
        return factor, str(canonical(e))


def _gradient(expr: Expr, kind: TaskKind) -> np.ndarray | None:
    """Gradient of the summed per-sample loss w.r.t. the model output on the probes.

    The same quantity as :func:`loss_rl.expr.fingerprint` hashes, kept unrounded here because the
    comparison fits a scale.

    Returns:
        A float64 array of the probe input's shape, or ``None`` if the loss does not compile for
        ``kind`` or is not finite on the probes.
    """
    try:
        fn = compile_loss(expr, kind)
    except ValueError:  # LossSpecError too: mixed leaves, wrong kind, vector root
        return None
    x, y = probes(kind)
    x = x.clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            loss = fn(x, y)
            if not torch.isfinite(loss).all():
                return None
            (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
    except ValueError:
        return None
    g = np.zeros(tuple(x.shape)) if grad is None else grad.detach().numpy().copy()
    return g if np.isfinite(g).all() else None


@lru_cache(maxsize=len(TaskKind))
def _library(kind: TaskKind) -> tuple[_Variant, ...]:
    """Every library loss of ``kind`` at its defaults, then at its grid points, in that order.

    Defaults come first for all losses, so that a loss equal to one library loss's default and
    another's grid point is reported as the default (the more familiar name). Computed once per
    kind: the library is fixed at import time.
    """
    specs = [s for s in KNOWN_LOSSES.values() if s.kind is kind]
    candidates = [(s, dict(s.defaults)) for s in specs]
    # variants(): the defaults first, then every other grid point (the verification's tuning).
    candidates += [(s, p) for s in specs for p in s.variants()[1:]]
    out: list[_Variant] = []
    seen: set[tuple[str, tuple[tuple[str, float], ...]]] = set()
    for spec, params in candidates:
        ident = (spec.name, tuple(sorted(params.items())))
        if ident in seen:  # a grid point repeated in the grid
            continue
        seen.add(ident)
        try:
            e = spec.expr(**params)
        except ValueError:  # a grid naming a parameter the loss lacks: nothing to compare
            continue
        g = _gradient(e, kind)
        if g is None or not np.any(g):
            continue  # no gradient to fit a scale against
        g.flags.writeable = False  # cached and shared between calls
        factor, core = _split(e)
        out.append(
            _Variant(spec.name, tuple((k, float(v)) for k, v in params.items()), factor, core, g)
        )
    return tuple(out)


def _fit_scale(g: np.ndarray, ref: np.ndarray) -> float:
    """Least-squares ``s`` minimising ``||g - s * ref||``."""
    return float(np.vdot(g, ref) / np.vdot(ref, ref))


def _proportional(g: np.ndarray, ref: np.ndarray) -> float | None:
    """The positive scale with ``g ≈ s * ref`` within :data:`GRADIENT_RTOL`, else ``None``."""
    s = _fit_scale(g, ref)
    if not s > 0:
        return None
    if np.max(np.abs(g - s * ref)) <= GRADIENT_RTOL * np.max(np.abs(g)):
        return s
    return None


def known_equivalent(expr: Expr, kind: TaskKind | str) -> KnownMatch | None:
    """The library loss of task ``kind`` that ``expr`` equals up to a positive scale, if any.

    Library losses are compared at their defaults and at every point of their tuning grids
    (``KnownLoss.grid``, where present); the default points of all losses come first, and the
    first match wins. The cheap route runs first: the canonical form of ``expr`` without its
    additive constants and top-level constant factor against the library's. Otherwise the
    gradients on the probes are compared (see :data:`GRADIENT_RTOL`). In both routes the reported
    scale is the least-squares ratio of the gradients.

    Args:
        expr: The per-sample loss expression.
        kind: The task kind ``expr`` is meant for; only library losses of this kind are compared.

    Returns:
        The match, or ``None`` if ``expr`` is of another kind, does not compile, has non-finite
        or zero gradients on the probes, or equals no library loss up to a positive scale.

    Raises:
        ValueError: if ``kind`` is not a task kind.
    """
    kind = TaskKind(kind)
    try:
        inferred = task_kind(expr)
    except ValueError:  # leaves of both kinds: not a loss of either
        return None
    if inferred is not kind:  # another kind's loss, or a constant
        return None
    g = _gradient(expr, kind)
    if g is None or not np.any(g):
        return None
    library = _library(kind)

    factor, core = _split(expr)
    if core is not None:
        for v in library:
            # The sign of the ratio of factors tells a loss from its negation before any
            # arithmetic on gradients; the fitted scale must agree.
            if v.core == core and factor * v.factor > 0:
                s = _fit_scale(g, v.grad)
                if s > 0:
                    return KnownMatch(v.name, dict(v.params), s, "canonical")

    for v in library:
        s = _proportional(g, v.grad)
        if s is not None:
            return KnownMatch(v.name, dict(v.params), s, "gradient")
    return None
