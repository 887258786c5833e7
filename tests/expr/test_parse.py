"""Parsing and formatting: round trips, error positions, and a fuzzer for the parser."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loss_rl.errors import LossSpecError, LossSyntaxError
from loss_rl.expr import KNOWN_LOSSES, OPS, Const, Expr, Leaf, known_loss, op, parse
from loss_rl.expr._parse import MAX_DEPTH
from tests.expr.strategies import exprs

_FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=600, deadline=None)
@given(exprs())
def test_format_parse_round_trip(e: Expr) -> None:
    text = str(e)
    assert parse(text) == e, text
    assert str(parse(text)) == text


@pytest.mark.parametrize(
    ("tree", "text"),
    [
        (op("neg", Const(2.0)), "-(2)"),
        (Const(-2.0), "-2"),
        (op("neg", op("pow", 2.0, Leaf("p_y"))), "-2^p_y"),
        (op("pow", -2.0, Leaf("p_y")), "(-2)^p_y"),
        (op("pow", Leaf("p_y"), -2.0), "p_y^-2"),
        (op("pow", op("pow", Leaf("p_y"), 2.0), 3.0), "(p_y^2)^3"),
        (op("pow", Leaf("p_y"), op("pow", 2.0, 3.0)), "p_y^2^3"),
        (op("sub", Leaf("p_y"), op("sub", Leaf("p_y"), 1.0)), "p_y - (p_y - 1)"),
        (op("sub", Leaf("p_y"), -1.0), "p_y - -1"),
        (op("mul", Leaf("p_y"), op("neg", Leaf("log_p_y"))), "p_y * -log_p_y"),
        (op("min", -0.5, Leaf("residual")), "min(-0.5, residual)"),
        (Const(1e-300), "1e-300"),
        (Const(1e20), "1e+20"),
    ],
)
def test_format_is_readable_and_round_trips(tree: Expr, text: str) -> None:
    assert str(tree) == text
    assert parse(text) == tree


@pytest.mark.parametrize("name", sorted(KNOWN_LOSSES))
def test_known_losses_round_trip(name: str) -> None:
    e = known_loss(name)
    assert parse(str(e)) == e


def test_whitespace_and_function_form_of_neg() -> None:
    assert parse("  -  log_p_y\n") == parse("-log_p_y")
    assert parse("neg(log_p_y)") == parse("-log_p_y")


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("", 0, "expected an expression"),
        ("p_y +", 5, "expected a number"),
        ("p_y p_y", 4, "expected an operator"),
        ("log(p_y", 7, "',' or ')'"),
        ("lg(p_y)", 0, "unknown name 'lg'"),
        ("add(p_y, 1)", 0, "unknown name 'add'"),
        ("min(p_y)", 7, "takes 2 argument"),
        ("log p_y", 4, "'(' after function 'log'"),
        ("p_y # 2", 4, "unexpected character '#'"),
        ("1e999 * p_y", 0, "number is too large"),
        ("-1e999 * p_y", 1, "number is too large"),
        ("٣ * p_y", 0, "unexpected character"),
        ("(p_y", 4, "expected ')'"),
        ("p_y)", 3, "expected an operator"),
    ],
)
def test_syntax_errors_name_position_and_expectation(text: str, position: int, words: str) -> None:
    with pytest.raises(LossSyntaxError) as info:
        parse(text)
    assert info.value.position == position
    assert words in str(info.value)
    assert f"at position {position}" in str(info.value)


def test_depth_limits_fail_cleanly() -> None:
    ok = "(" * (MAX_DEPTH - 1) + "p_y" + ")" * (MAX_DEPTH - 1)
    assert parse(ok) == Leaf("p_y")
    for text in (
        "(" * 4000 + "p_y" + ")" * 4000,
        "-" * 5000 + "p_y",
        "exp(" * 1500 + "p_y" + ")" * 1500,
        "p_y^" * 2000 + "2",
        "+".join(["p_y"] * 2000),  # flat text, but a left-leaning tree 2000 deep
    ):
        with pytest.raises(LossSyntaxError, match="deeper than"):
            parse(text)


def test_non_string_input() -> None:
    with pytest.raises(LossSyntaxError):
        parse(3.0)  # type: ignore[arg-type]


def _assert_only_typed_errors(text: str) -> None:
    try:
        e = parse(text)
    except LossSyntaxError as err:
        assert re.search(r"at position \d+", str(err)), str(err)
        assert 0 <= err.position <= len(text)
        return
    except LossSpecError as err:  # pragma: no cover - the parser reports positions itself
        pytest.fail(f"LossSpecError without a position escaped the parser: {err}")
    assert parse(str(e)) == e


_ALPHABET = "p_ylogtzexsqrumnaicdb0123456789.eE+-*/^(), \t"
_TOKENS = [
    *OPS,
    "p_y",
    "log_p_y",
    "p",
    "log_p",
    "t",
    "z",
    "pred",
    "target",
    "residual",
    "(",
    ")",
    ",",
    "+",
    "-",
    "*",
    "/",
    "^",
    "1",
    "0.5",
    "-2",
    "1e3",
    "1e-9",
    ".5",
    "1e999",
    "nan",
    "inf",
    " ",
    "2.",
    "٣",
    "#",
    "**",
]


@_FUZZ
@given(st.text(max_size=60))
def test_fuzz_arbitrary_text(text: str) -> None:
    _assert_only_typed_errors(text)


@_FUZZ
@given(st.text(alphabet=_ALPHABET, max_size=60))
def test_fuzz_near_valid_characters(text: str) -> None:
    _assert_only_typed_errors(text)


@_FUZZ
@given(st.lists(st.sampled_from(_TOKENS), max_size=40))
def test_fuzz_token_soup(tokens: list[str]) -> None:
    _assert_only_typed_errors(" ".join(tokens))
    _assert_only_typed_errors("".join(tokens))


@settings(max_examples=300, deadline=None)
@given(exprs(), st.data())
def test_fuzz_mutated_valid_text(e: Expr, data: st.DataObject) -> None:
    # Delete or insert one character of a valid expression: near misses must fail cleanly.
    text = str(e)
    i = data.draw(st.integers(0, len(text)))
    if data.draw(st.booleans()) and text:
        text = text[: max(i - 1, 0)] + text[i:]
    else:
        text = text[:i] + data.draw(st.sampled_from("()-^*,x1")) + text[i:]
    _assert_only_typed_errors(text)
