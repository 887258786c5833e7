"""The novelty check: a library loss in disguise is recognised, a new loss is not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from loss_rl.expr import (
    KNOWN_LOSSES,
    Expr,
    KnownLoss,
    KnownMatch,
    TaskKind,
    known_equivalent,
    known_loss,
    op,
    parse,
)
from loss_rl.expr import _novelty as novelty

C, R = TaskKind.CLASSIFICATION, TaskKind.REGRESSION


@pytest.mark.parametrize(
    ("text", "kind", "name", "scale"),
    [
        ("0.25 * sum_c(abs(p - t))", C, "mae", 0.25),
        ("sum_c(abs(p - t)) / 4", C, "mae", 0.25),
        ("sum_c(abs(p - t)) * 0.25 + 7", C, "mae", 0.25),
        ("-log_p_y", C, "ce", 1.0),
        ("-log(p_y)", C, "ce", 1.0),
        ("-2 * log_p_y + 5", C, "ce", 2.0),
        ("3 * residual^2", R, "mse", 3.0),
        ("abs(residual)", R, "l1", 1.0),
        # GCE's canonical form is -1.429 * p_y^0.7 + 1.429: the same core, another factor.
        ("-p_y^0.7", C, "gce", 0.7),
    ],
)
def test_scaled_library_loss_matches_canonically(
    text: str, kind: TaskKind, name: str, scale: float
) -> None:
    m = known_equivalent(parse(text), kind)
    assert m is not None
    assert (m.name, m.how) == (name, "canonical")
    assert m.scale == pytest.approx(scale, abs=1e-9)


@pytest.mark.parametrize(
    ("text", "name", "scale"),
    [
        # Same gradient, different algebra: the canonical key cannot see these.
        ("2 * (1 - p_y)", "mae", 1.0),
        ("sum_c(t * (1 - p))", "mae", 0.5),
        ("-5 * mean_c(t * log_p)", "ce", 1.0),
        ("1 - exp(0.7 * log_p_y)", "gce", 0.7),
    ],
)
def test_rewritten_library_loss_matches_by_gradient(text: str, name: str, scale: float) -> None:
    m = known_equivalent(parse(text), C)
    assert m is not None
    assert (m.name, m.how) == (name, "gradient")
    assert m.scale == pytest.approx(scale, rel=1e-9)


def test_mae_match_reads_as_rescaled_mae() -> None:
    m = known_equivalent(parse("0.25 * sum_c(abs(p - t))"), "classification")
    assert m is not None
    assert m.params == {}
    assert "mae" in str(m)
    assert "up to scale" in str(m)
    assert str(m) == "mae up to scale (×0.25)"


def test_gce_times_three_is_gce_with_its_parameter() -> None:
    m = known_equivalent(op("mul", 3.0, known_loss("gce", q=0.7)), C)
    assert m is not None
    assert m.name == "gce"
    assert m.params == {"q": 0.7}
    assert m.scale == pytest.approx(3.0, rel=1e-9)
    assert str(m) == "gce (q=0.7) up to scale (×3)"


def test_unit_scale_is_not_announced() -> None:
    m = known_equivalent(known_loss("gce"), C)
    assert m is not None
    assert str(m) == "gce (q=0.7)"


@pytest.mark.parametrize(
    ("expr", "kind"),
    [
        # GCE at q=0.6 is not a point of the library (default 0.7, no grid here or grid without it).
        (parse("(1 - p_y^0.6) / 0.6"), C),
        # A negative scale maximises the loss: log_p_y is not CE.
        (parse("-log_p_y * -1"), C),
        (parse("log_p_y"), C),
        # Constant losses train nothing.
        (parse("p_y * 0 + 1"), C),
        (parse("residual - residual + 2"), R),
        # A loss of the other kind: no match, no raise.
        (parse("abs(residual)"), C),
        (parse("-log_p_y"), R),
        # Mixed leaves compile for neither kind.
        (parse("log_p_y + residual"), C),
        # A per-class vector is not a per-sample loss.
        (parse("abs(p - t)"), C),
        # Something new.
        (parse("-log_p_y * (1 - p_y)^0.25 + sqrt(1 - p_y)"), C),
    ],
)
def test_no_match(expr: Expr, kind: TaskKind) -> None:
    assert known_equivalent(expr, kind) is None


def test_label_smoothing_is_not_ce() -> None:
    # alpha=0.05 is 4e-2 away from CE in gradient; it may be a point of the library's grid.
    m = known_equivalent(known_loss("label_smoothing", alpha=0.05), C)
    assert m is None or (m.name, m.params) == ("label_smoothing", {"alpha": 0.05})
    # Off any grid, it matches nothing at all.
    assert known_equivalent(known_loss("label_smoothing", alpha=0.03), C) is None


def test_tolerance_separates_near_neighbours_but_not_rounding() -> None:
    # The documented margins of GRADIENT_RTOL, checked against the actual probes.
    g = novelty._gradient(known_loss("ce"), C)
    near = novelty._gradient(known_loss("label_smoothing", alpha=0.05), C)
    same = novelty._gradient(parse("2 * (1 - p_y)"), C)
    mae = novelty._gradient(known_loss("mae"), C)
    assert g is not None and near is not None and same is not None and mae is not None
    assert novelty._proportional(near, g) is None
    assert novelty._proportional(same, mae) == pytest.approx(1.0, rel=1e-12)


def test_tiny_multiple_of_a_new_loss_is_still_new() -> None:
    # No absolute tolerance: shrinking a loss must not make it match everything.
    assert known_equivalent(parse("1e-12 * (1 - p_y^0.6)"), C) is None
    m = known_equivalent(parse("1e-12 * (1 - p_y^0.7)"), C)
    assert m is not None and m.name == "gce"
    assert m.scale == pytest.approx(0.7e-12, rel=1e-9)


def test_to_dict_is_json() -> None:
    m = known_equivalent(parse("-2 * log_p_y + 5"), C)
    assert m is not None
    d = json.loads(json.dumps(m.to_dict()))
    assert d == {
        "name": "ce",
        "params": {},
        "scale": pytest.approx(2.0, abs=1e-9),
        "how": "canonical",
        "text": "ce up to scale (×2)",
    }


def test_match_is_hashable_and_comparable() -> None:
    a = KnownMatch("gce", {"q": 0.5}, 2.0, "gradient")
    b = KnownMatch("gce", {"q": 0.5}, 2.0, "gradient")
    assert a == b
    assert len({a, b}) == 1
    assert str(a) == "gce (q=0.5) up to scale (×2)"


def test_invalid_kind_raises() -> None:
    with pytest.raises(ValueError):
        known_equivalent(parse("-log_p_y"), "ranking")


@dataclass(frozen=True)
class _GridLoss(KnownLoss):
    """A library entry with a tuning grid, as the library will have it."""

    grid: dict[str, tuple[float, ...]] = field(default_factory=dict)


@pytest.fixture
def gce_grid(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The library with GCE tuned on q in (0.3, 0.5, 0.7, 0.9) (whatever library.py has now)."""
    spec = KNOWN_LOSSES["gce"]
    gridded = _GridLoss(
        name=spec.name,
        kind=spec.kind,
        build=spec.build,
        defaults=spec.defaults,
        title=spec.title,
        grid={"q": (0.3, 0.5, 0.7, 0.9)},
    )
    monkeypatch.setitem(KNOWN_LOSSES, "gce", gridded)
    novelty._library.cache_clear()
    yield
    novelty._library.cache_clear()  # monkeypatch restores the library after this


@pytest.mark.usefixtures("gce_grid")
@pytest.mark.parametrize(
    ("expr", "q", "scale", "text"),
    [
        (known_loss("gce", q=0.5), 0.5, 1.0, "gce (q=0.5)"),
        (op("mul", 2.0, known_loss("gce", q=0.5)), 0.5, 2.0, "gce (q=0.5) up to scale (×2)"),
        (parse("1 - p_y^0.9"), 0.9, 0.9, "gce (q=0.9) up to scale (×0.9)"),
        # The default point is found first even though the grid repeats it.
        (known_loss("gce", q=0.7), 0.7, 1.0, "gce (q=0.7)"),
    ],
)
def test_grid_points_match(expr: Expr, q: float, scale: float, text: str) -> None:
    m = known_equivalent(expr, C)
    assert m is not None
    assert (m.name, m.params) == ("gce", {"q": q})
    assert m.scale == pytest.approx(scale, rel=1e-9)
    assert str(m) == text


@pytest.mark.usefixtures("gce_grid")
def test_grid_does_not_confuse_neighbouring_points() -> None:
    assert known_equivalent(parse("(1 - p_y^0.6) / 0.6"), C) is None
    m = known_equivalent(parse("(1 - p_y^0.7) / 0.7"), C)
    assert m is not None and m.params == {"q": 0.7}


@pytest.mark.parametrize("name", list(KNOWN_LOSSES))
def test_library_default_points_match_themselves(name: str) -> None:
    spec = KNOWN_LOSSES[name]
    m = known_equivalent(spec.expr(), spec.kind)
    assert m is not None
    assert (m.name, m.params, m.how) == (name, spec.defaults, "canonical")
    assert m.scale == pytest.approx(1.0, rel=1e-12)
