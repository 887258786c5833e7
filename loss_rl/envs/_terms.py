"""Terms of the parametric search space: ``L = Σ_k w_k · term_k(θ_k)``.

Every known loss of :data:`loss_rl.expr.KNOWN_LOSSES` whose hyper-parameters are plain floats is a
term; two extra classification terms isolate the pieces that composite losses are made of:

- ``smooth``: ``-mean_c(log_p)``, the uniform-target part of label smoothing (Szegedy et al.
  2016); it does not see the target, so it is only valid next to a term that does;
- ``one_minus_p_y``: ``1 - p_y``, the bounded MAE-like part of Poly-1 / RCE (Leng et al. 2022,
  Wang et al. 2019).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from loss_rl.expr import KNOWN_LOSSES, LEAVES, Expr, TaskKind, parse


@dataclass(frozen=True)
class Term:
    """One term of the parametric space.

    Attributes:
        name: Registry name (``"ce"``, ``"gce"``, ...).
        kind: Task kind.
        build: Builder taking the hyper-parameters as keyword arguments.
        defaults: Default hyper-parameters (their names are the tunable θ of the term).
        uses_prediction: Some leaf depends on the model output.
        uses_target: Some leaf depends on the target.
    """

    name: str
    kind: TaskKind
    build: Callable[..., Expr]
    defaults: Mapping[str, float] = field(default_factory=dict)
    uses_prediction: bool = True
    uses_target: bool = True

    @property
    def params(self) -> tuple[str, ...]:
        """Names of the hyper-parameters, in a fixed order."""
        return tuple(self.defaults)


def _term(
    name: str, kind: TaskKind, build: Callable[..., Expr], defaults: Mapping[str, float]
) -> Term:
    leaves = [LEAVES[n] for n in build(**defaults).leaves()]
    return Term(
        name,
        kind,
        build,
        dict(defaults),
        uses_prediction=any(s.uses_prediction for s in leaves),
        uses_target=any(s.uses_target for s in leaves),
    )


def _registry() -> dict[str, Term]:
    out: dict[str, Term] = {}
    for spec in KNOWN_LOSSES.values():
        if spec.name == "taylor_glo":  # 8 coupled coefficients: a search space of its own
            continue
        out[spec.name] = _term(spec.name, spec.kind, spec.build, spec.defaults)
    c = TaskKind.CLASSIFICATION
    out["smooth"] = _term("smooth", c, lambda: parse("-mean_c(log_p)"), {})
    out["one_minus_p_y"] = _term("one_minus_p_y", c, lambda: parse("1 - p_y"), {})
    return out


TERMS: dict[str, Term] = _registry()
"""All terms, by name."""

DEFAULT_TERMS: dict[TaskKind, tuple[str, ...]] = {
    # The prototype's space (REFERENCES.md): CE, a bounded MAE-like term, GCE(q), focal(γ) and the
    # label-smoothing term.
    TaskKind.CLASSIFICATION: ("ce", "mae", "gce", "focal", "smooth"),
    TaskKind.REGRESSION: ("mse", "l1", "huber", "log_cosh", "quantile"),
}

DEFAULT_WEIGHT_GRID: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)

DEFAULT_PARAM_GRIDS: dict[str, tuple[float, ...]] = {
    "q": (0.1, 0.3, 0.5, 0.7, 0.9, 1.0),
    "gamma": (0.5, 1.0, 2.0, 3.0, 5.0),
    "alpha": (0.05, 0.1, 0.2, 0.3),
    "beta": (0.5, 1.0, 2.0),
    "epsilon": (-1.0, 0.5, 1.0, 2.0),
    "delta": (0.1, 0.3, 1.0, 3.0),
    "tau": (0.1, 0.25, 0.5, 0.75, 0.9),
}

# Open/closed bounds a hyper-parameter value must respect: (low, high, low_inclusive).
PARAM_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "q": (0.0, 1.0, False),  # GCE divides by q
    "gamma": (0.0, 10.0, True),
    "alpha": (0.0, 1.0, True),
    "beta": (0.0, 10.0, False),
    "epsilon": (-10.0, 10.0, True),
    "delta": (0.0, 100.0, False),
    "tau": (0.0, 1.0, False),
}


def terms_for(kind: TaskKind) -> list[str]:
    """Names of the terms available for ``kind`` tasks."""
    return [n for n, t in TERMS.items() if t.kind is kind]
