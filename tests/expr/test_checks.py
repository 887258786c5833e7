"""Validity checks (one example per rejection code) and numeric fingerprints."""

from __future__ import annotations

import pytest

from loss_rl.expr import KNOWN_LOSSES, CheckResult, check, fingerprint, known_loss, parse


@pytest.mark.parametrize("name", sorted(KNOWN_LOSSES))
def test_every_known_loss_passes(name: str) -> None:
    result = check(known_loss(name), KNOWN_LOSSES[name].kind)
    assert result.ok, str(result)
    assert result.codes == ()
    assert str(result) == "ok"


@pytest.mark.parametrize(
    ("text", "kind", "code"),
    [
        ("mean_c(t)", None, "no_prediction"),
        ("target^2", None, "no_prediction"),
        ("-mean_c(log_p)", None, "no_target"),
        ("pred^2", None, "no_target"),
        ("p_y - p_y + mean_c(log_p)", None, "no_target"),  # the target cancels out numerically
        ("recip(p_y)^64", None, "not_finite"),
        ("1e300 * 1e300 * residual^2", None, "not_finite"),
        ("p_y - p_y", None, "zero_gradient"),
        ("0 * log_p_y", None, "zero_gradient"),
        ("abs(residual) - abs(residual)", None, "zero_gradient"),
        ("log_p_y", None, "wrong_direction"),
        ("p_y", None, "wrong_direction"),
        ("-residual^2", None, "wrong_direction"),
        ("p_y + residual", None, "kind"),
        ("p", None, "kind"),
        ("residual^2", "classification", "kind"),
        ("-log_p_y", "regression", "kind"),
        ("-log_p_y", "ranking", "kind"),
    ],
)
def test_each_rejection_code(text: str, kind: str | None, code: str) -> None:
    result = check(parse(text), kind)
    assert not result.ok
    assert result.codes[0] == code, str(result)
    assert all(message for _, message in result.reasons)
    assert code in str(result)


def test_missing_prediction_and_target_are_both_reported() -> None:
    assert check(parse("2")).codes == ("no_prediction", "no_target")


def test_check_result_is_data() -> None:
    assert CheckResult(True) == CheckResult(True, ())


def test_fingerprint_ignores_constant_offsets_and_rewrites() -> None:
    ce = fingerprint(parse("-log_p_y"))
    assert ce is not None and len(ce) == 16
    assert fingerprint(parse("-log_p_y + 1")) == ce
    assert fingerprint(parse("2 * -log_p_y / 2")) == ce
    assert fingerprint(parse("-log(p_y)")) == ce
    assert fingerprint(known_loss("focal")) != ce
    assert fingerprint(parse("-2 * log_p_y")) != ce
    mse = fingerprint(known_loss("mse"))
    assert mse == fingerprint(parse("residual^2 + 3"))
    assert mse != fingerprint(known_loss("l1"))


@pytest.mark.parametrize(
    ("text", "kind"),
    [("p_y + residual", None), ("p", None), ("recip(p_y)^64", None), ("-log_p_y", "regression")],
)
def test_fingerprint_is_none_when_not_computable(text: str, kind: str | None) -> None:
    assert fingerprint(parse(text), kind) is None
