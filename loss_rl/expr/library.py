"""Known losses written in the loss language (the starting points and references of a search).

Every builder returns the *per-sample* loss expression; see ``REFERENCES`` in each docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from loss_rl.errors import LossSpecError
from loss_rl.expr._nodes import Expr, TaskKind
from loss_rl.expr._parse import parse


def _num(v: float) -> str:
    # Constants are written through the parser so the library reads like the language itself.
    return repr(float(v)) if v >= 0 else f"({float(v)!r})"


def cross_entropy() -> Expr:
    r"""Cross-entropy :math:`-\log p_y` (``torch.nn.functional.cross_entropy``)."""
    return parse("-log_p_y")


def nll() -> Expr:
    r"""Negative log-likelihood of log-softmax outputs, :math:`-\log p_y` (``F.nll_loss``)."""
    return parse("-log(p_y)")


def label_smoothing(alpha: float = 0.1) -> Expr:
    r"""Label smoothing: :math:`(1-\alpha)(-\log p_y) + \alpha\,\frac1C\sum_c(-\log p_c)`.

    Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016
    (torch's ``label_smoothing=`` argument).
    """
    return parse(f"-{_num(1 - alpha)} * log_p_y - {_num(alpha)} * mean_c(log_p)")


def focal(gamma: float = 2.0) -> Expr:
    r"""Focal loss :math:`-(1-p_y)^\gamma \log p_y`.

    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
    """
    return parse(f"-(1 - p_y)^{_num(gamma)} * log_p_y")


def mae() -> Expr:
    r"""MAE on probabilities :math:`\sum_c |p_c - t_c| = 2(1 - p_y)`.

    Ghosh et al., "Robust Loss Functions under Label Noise for Deep Neural Networks", AAAI 2017.
    """
    return parse("sum_c(abs(p - t))")


def gce(q: float = 0.7) -> Expr:
    r"""Generalised cross-entropy :math:`(1 - p_y^q)/q` (q→0: CE; q=1: MAE/2).

    Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy
    Labels", NeurIPS 2018.
    """
    return parse(f"(1 - p_y^{_num(q)}) / {_num(q)}")


def sce(alpha: float = 0.1, beta: float = 1.0) -> Expr:
    r"""Symmetric cross-entropy :math:`\alpha\,CE + \beta\,RCE`, :math:`RCE = -A(1-p_y)`, A = -4.

    Wang et al., "Symmetric Cross Entropy for Robust Learning with Noisy Labels", ICCV 2019.
    """
    return parse(f"-{_num(alpha)} * log_p_y + {_num(4 * beta)} * (1 - p_y)")


def nce_rce(alpha: float = 1.0, beta: float = 1.0) -> Expr:
    r"""Active-passive loss NCE+RCE.

    :math:`\alpha\,\frac{-\log p_y}{\sum_c -\log p_c} + \beta\,RCE`.

    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy Labels", ICML 2020.
    """
    return parse(f"{_num(alpha)} * log_p_y / sum_c(log_p) + {_num(4 * beta)} * (1 - p_y)")


def poly1(epsilon: float = 1.0) -> Expr:
    r"""Poly-1 :math:`-\log p_y + \epsilon(1 - p_y)`.

    Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions",
    ICLR 2022.
    """
    return parse(f"-log_p_y + {_num(epsilon)} * (1 - p_y)")


def baikal() -> Expr:
    r"""Baikal loss :math:`-\frac1C\sum_c(\log p_c - t_c / p_c)`.

    Gonzalez & Miikkulainen, "Improved Training Speed, Accuracy, and Data Utilization Through
    Loss Function Optimization" (GLO), CEC 2020.
    """
    return parse("-mean_c(log_p - t / p)")


def taylor_glo(
    theta: tuple[float, float, float, float, float, float, float, float] = (
        0.0,
        0.0,
        0.0,
        -1.0,
        0.0,
        1.0,
        0.0,
        0.0,
    ),
) -> Expr:
    r"""Third-order TaylorGLO polynomial.

    :math:`-\frac1C\sum_c[\theta_2 u + \tfrac12\theta_3 u^2 + \tfrac16\theta_4 u^3 + \theta_5 uv
    + \tfrac12\theta_6 uv^2 + \tfrac12\theta_7 u^2 v]`, :math:`u = p_c-\theta_0`,
    :math:`v = t_c-\theta_1`. The default θ gives :math:`\frac1C\sum_c(\tfrac12p_c^2 - p_c t_c)`, a
    Brier-like member of the family.

    Gonzalez & Miikkulainen, "Optimizing Loss Functions Through Multivariate Taylor Polynomial
    Parameterization" (TaylorGLO), GECCO 2021.
    """
    t0, t1, t2, t3, t4, t5, t6, t7 = (_num(v) for v in theta)
    u, v = f"(p - {t0})", f"(t - {t1})"
    return parse(
        f"-mean_c({t2} * {u} + 0.5 * {t3} * {u}^2 + {_num(1 / 6)} * {t4} * {u}^3"
        f" + {t5} * {u} * {v} + 0.5 * {t6} * {u} * {v}^2 + 0.5 * {t7} * {u}^2 * {v})"
    )


def mse() -> Expr:
    """Mean squared error :math:`(\\hat y - y)^2` (``F.mse_loss``)."""
    return parse("residual^2")


def l1() -> Expr:
    """Mean absolute error :math:`|\\hat y - y|` (``F.l1_loss``)."""
    return parse("abs(residual)")


def huber(delta: float = 1.0) -> Expr:
    r"""Huber loss (``F.huber_loss``): quadratic within δ, linear outside.

    Written as :math:`\tfrac12 m^2 + \delta(|r| - m)` with :math:`m = \min(|r|, \delta)`.
    Huber, "Robust Estimation of a Location Parameter", Ann. Math. Statist. 1964.
    """
    d = _num(delta)
    m = f"min(abs(residual), {d})"
    return parse(f"0.5 * {m}^2 + {d} * (abs(residual) - {m})")


def log_cosh() -> Expr:
    r"""Log-cosh :math:`\log\cosh r`.

    Written stably as :math:`|r| + \mathrm{softplus}(-2|r|) - \log 2`.
    """
    return parse("abs(residual) + softplus(-2 * abs(residual)) - 0.6931471805599453")


def quantile(tau: float = 0.5) -> Expr:
    r"""Quantile (pinball) loss :math:`\max(\tau(y-\hat y), (\tau-1)(y-\hat y))`.

    Koenker & Bassett, "Regression Quantiles", Econometrica 1978.
    """
    return parse(f"max(-{_num(tau)} * residual, {_num(1 - tau)} * residual)")


@dataclass(frozen=True)
class KnownLoss:
    """A named loss of the library.

    Attributes:
        name: Registry name (``"ce"``, ``"gce"``, ...).
        kind: Task kind.
        build: Builder taking the hyper-parameters as keyword arguments.
        defaults: Default hyper-parameters.
        title: Human-readable name.
        grid: The values each hyper-parameter is tuned over when the loss is a reference of a
            verification (the product of the lists; see :meth:`variants`). Small on purpose:
            each point costs one full training per verification seed.
    """

    name: str
    kind: TaskKind
    build: Callable[..., Expr]
    defaults: dict[str, float] = field(default_factory=dict)
    title: str = ""
    grid: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def expr(self, **params: float) -> Expr:
        """The expression with ``params`` overriding the defaults."""
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise LossSpecError(
                f"{self.name} has no parameter(s) {sorted(unknown)}; "
                f"it takes {sorted(self.defaults)}",
                field="params",
            )
        return self.build(**{**self.defaults, **params})

    def variants(self) -> list[dict[str, float]]:
        """Every hyper-parameter setting of the tuning grid, the defaults first.

        The defaults lead so that a tie in tuning keeps them; a grid point equal to the defaults
        is not repeated. A loss without a grid has one variant, ``{}``.
        """
        points: list[dict[str, float]] = [{}]
        for key, values in self.grid.items():
            points = [{**pt, key: float(v)} for pt in points for v in values]
        full = [{**self.defaults, **pt} for pt in points]
        out = [dict(self.defaults)]
        out += [pt for pt in full if pt != self.defaults]
        return out


_C, _R = TaskKind.CLASSIFICATION, TaskKind.REGRESSION

KNOWN_LOSSES: dict[str, KnownLoss] = {
    k.name: k
    for k in (
        KnownLoss("ce", _C, cross_entropy, {}, "cross-entropy"),
        KnownLoss(
            "label_smoothing",
            _C,
            label_smoothing,
            {"alpha": 0.1},
            "label smoothing",
            {"alpha": (0.05, 0.1, 0.2, 0.4)},
        ),
        KnownLoss(
            "focal", _C, focal, {"gamma": 2.0}, "focal loss", {"gamma": (0.5, 1.0, 2.0, 5.0)}
        ),
        KnownLoss("mae", _C, mae, {}, "MAE on probabilities"),
        KnownLoss(
            "gce", _C, gce, {"q": 0.7}, "generalised cross-entropy", {"q": (0.3, 0.5, 0.7, 0.9)}
        ),
        # SCE: Wang et al. use (0.1, 1.0) on CIFAR-10 and large α with small β on CIFAR-100.
        KnownLoss(
            "sce",
            _C,
            sce,
            {"alpha": 0.1, "beta": 1.0},
            "symmetric cross-entropy",
            {"alpha": (0.1, 1.0), "beta": (0.1, 1.0)},
        ),
        # NCE+RCE: Ma et al. use (1, 1) on CIFAR-10 and (10, 0.1) on CIFAR-100.
        KnownLoss(
            "nce_rce",
            _C,
            nce_rce,
            {"alpha": 1.0, "beta": 1.0},
            "NCE+RCE",
            {"alpha": (1.0, 10.0), "beta": (0.1, 1.0)},
        ),
        # Poly-1: Leng et al. find ε = -1 best on some tasks and ε > 0 on others.
        KnownLoss(
            "poly1", _C, poly1, {"epsilon": 1.0}, "Poly-1", {"epsilon": (-1.0, 1.0, 2.0, 5.0)}
        ),
        KnownLoss("baikal", _C, baikal, {}, "Baikal"),
        KnownLoss("taylor_glo", _C, lambda: taylor_glo(), {}, "TaylorGLO (3rd order)"),
        KnownLoss("mse", _R, mse, {}, "mean squared error"),
        KnownLoss("l1", _R, l1, {}, "mean absolute error"),
        # Huber δ in standardised target units (the trainer standardises regression targets).
        KnownLoss("huber", _R, huber, {"delta": 1.0}, "Huber", {"delta": (0.1, 0.3, 1.0, 3.0)}),
        KnownLoss("log_cosh", _R, log_cosh, {}, "log-cosh"),
        KnownLoss(
            "quantile", _R, quantile, {"tau": 0.5}, "quantile (pinball)", {"tau": (0.3, 0.5, 0.7)}
        ),
    )
}


def format_params(params: dict[str, float]) -> str:
    """Hyper-parameters as ``q=0.5, beta=1`` (empty for none): how tables and verdicts show them."""
    return ", ".join(f"{k}={v:g}" for k, v in params.items())


def known_loss(name: str, **params: float) -> Expr:
    """The library loss ``name`` with optional hyper-parameters, e.g. ``known_loss("gce", q=0.5)``.

    Raises:
        LossSpecError: for an unknown name or parameter.
    """
    spec = KNOWN_LOSSES.get(name)
    if spec is None:
        raise LossSpecError(
            f"unknown known loss {name!r}; choose one of {', '.join(KNOWN_LOSSES)}", field="name"
        )
    return spec.expr(**params)
