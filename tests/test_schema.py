"""The shared config validator: types, shapes, unknown keys, ranges, sections, dotted fields."""

from __future__ import annotations

import doctest
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest

from loss_rl import schema
from loss_rl.errors import ConfigError
from loss_rl.schema import (
    Section,
    anchored,
    build,
    check_choice,
    check_int,
    check_keys,
    check_mapping,
    check_number,
    coerce,
    is_int,
    is_number,
    parse_section,
    to_plain,
    type_name,
)


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    size: int = 1
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outer:
    name: str = "a"
    ratio: float = 0.5
    flag: bool = False
    count: int | None = None
    mode: Literal["x", "y"] = "x"
    colour: Colour = Colour.RED
    widths: tuple[int, ...] = (1,)
    grids: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


def _error(fn: Any, *args: Any, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return info.value


# ---------------------------------------------------------------------------------------------
# coerce


def test_scalars_keep_int_bool_and_float_apart() -> None:
    assert coerce(3, int, "p") == 3
    assert coerce(2, float, "p") == 2 and isinstance(coerce(2, float, "p"), int)  # a count
    assert coerce(0.5, float, "p") == 0.5
    assert coerce(True, bool, "p") is True
    err = _error(coerce, True, int, "a.b")
    assert err.field == "a.b" and str(err) == "a.b: expected an integer, got True"
    assert str(_error(coerce, 1.5, int, "p")) == "p: expected an integer, got 1.5"
    assert str(_error(coerce, False, float, "p")) == "p: expected a number, got False"
    assert str(_error(coerce, "1", float, "p")) == "p: expected a number, got '1'"
    assert str(_error(coerce, 1, bool, "p")) == "p: expected true or false, got 1"
    assert str(_error(coerce, 3, str, "p")) == "p: expected a string, got 3"


def test_literals_enums_and_optionals() -> None:
    assert coerce("y", Literal["x", "y"], "p") == "y"
    assert str(_error(coerce, "z", Literal["x", "y"], "p")) == "p: got 'z'; choose one of 'x', 'y'"
    assert coerce("blue", Colour, "p") is Colour.BLUE
    assert coerce(Colour.RED, Colour, "p") is Colour.RED
    err = _error(coerce, "green", Colour, "cfg.colour")
    assert err.field == "cfg.colour"
    assert str(err) == "cfg.colour: unknown colour 'green'; choose one of red, blue"
    assert coerce(None, int | None, "p") is None
    assert str(_error(coerce, "x", int | None, "p")) == "p: expected an integer, got 'x'"
    assert str(_error(coerce, [], int | str, "p")) == "p: expected an integer or a string, got []"
    err = _error(coerce, [1, "a"], tuple[int, ...] | None, "p")
    assert err.field == "p[1]" and str(err) == "p[1]: expected an integer, got 'a'"


def test_lists_name_the_item_at_fault() -> None:
    assert coerce([1, 2], tuple[int, ...], "p") == (1, 2)
    assert coerce((1, 2), list[int], "p") == [1, 2]
    err = _error(coerce, [64, True], tuple[int, ...], "task.model.widths")
    assert err.field == "task.model.widths[1]"
    assert str(err) == "task.model.widths[1]: expected an integer, got True"
    err = _error(coerce, "64", tuple[int, ...], "w")
    assert err.field == "w" and str(err) == "w: expected a list of integers, got '64'"
    assert str(_error(coerce, 3, tuple[float, ...], "w")) == "w: expected a list of numbers, got 3"


def test_mappings_name_the_key_at_fault() -> None:
    tp = Mapping[str, tuple[float, ...]]
    assert coerce({"q": [0.5, 1]}, tp, "g") == {"q": (0.5, 1)}
    err = _error(coerce, {"q": "high"}, tp, "env.param_grids")
    assert err.field == "env.param_grids.q"
    assert str(err) == "env.param_grids.q: expected a list of numbers, got 'high'"
    assert str(_error(coerce, [1], tp, "g")) == "g: expected a mapping, got [1]"


def test_shape_only_coercion_leaves_scalars_to_the_config() -> None:
    # strict=False: containers and enums are checked and converted, scalars pass as written.
    assert coerce("many", int, "p", strict=False) == "many"
    assert coerce(["a", 1], tuple[str, ...], "p", strict=False) == ("a", 1)
    assert coerce("red", Colour, "p", strict=False) is Colour.RED
    err = _error(coerce, "abc", tuple[float, ...] | None, "env.constants", strict=False)
    assert str(err) == "env.constants: expected a list of numbers, got 'abc'"


def test_type_names() -> None:
    assert type_name(int) == "an integer"
    assert type_name(bool) == "true/false"
    assert type_name(float | None) == "a number"
    assert type_name(tuple[str, ...]) == "a list of strings"
    assert type_name(Literal["a", "b"]) == "'a' | 'b'"
    assert type_name(dict[str, int]) == "a mapping"
    assert type_name(Colour) == "'red' | 'blue'"


# ---------------------------------------------------------------------------------------------
# Mappings, keys, build


def test_check_mapping_and_its_messages() -> None:
    assert check_mapping(None, "p") == {}
    assert check_mapping({"a": 1}, "p") == {"a": 1}
    assert str(_error(check_mapping, [1], "env")) == "env: expected a mapping, got [1]"
    err = _error(check_mapping, [1], "env", "expected a mapping, got {type}")
    assert err.field == "env" and str(err) == "env: expected a mapping, got list"


def test_check_keys_names_the_first_unknown_key_as_written() -> None:
    check_keys({"a": 1}, ["a", "b"], "cfg")
    err = _error(check_keys, {"a": 1, "zz": 2, "c": 3}, ["b", "a"], "cfg")
    assert err.field == "cfg.zz"
    assert str(err) == "cfg.zz: unknown key 'zz'; allowed: b, a"
    err = _error(
        check_keys, {"x": 1}, ["a"], "task.model", "unknown option; {path} accepts {allowed}"
    )
    assert str(err) == "task.model.x: unknown option; task.model accepts a"


def test_build_reads_nested_sections_with_dotted_fields() -> None:
    cfg = build(
        Outer,
        {
            "name": "n",
            "ratio": 1,
            "count": 3,
            "mode": "y",
            "colour": "blue",
            "widths": [4, 5],
            "grids": {"q": [0.1]},
            "inner": {"size": 2, "tags": ["t"]},
        },
        "cfg",
    )
    assert cfg == Outer("n", 1, False, 3, "y", Colour.BLUE, (4, 5), {"q": (0.1,)}, Inner(2, ("t",)))
    assert build(Outer, None, "cfg") == Outer()
    assert build(Outer, {"inner": None}, "cfg").inner == Inner()
    err = _error(build, Outer, {"inner": {"tags": ["a", 3]}}, "cfg")
    assert err.field == "cfg.inner.tags[1]" and str(err).endswith("expected a string, got 3")
    err = _error(build, Outer, {"inner": {"sise": 2}}, "cfg")
    assert err.field == "cfg.inner.sise"
    assert str(err) == "cfg.inner.sise: unknown key 'sise'; allowed: size, tags"
    err = _error(build, Outer, {"inner": 3}, "cfg")
    assert err.field == "cfg.inner" and str(err) == "cfg.inner: expected a mapping, got 3"
    err = _error(build, Outer, {"colour": "green", "nam": 1}, "cfg")  # unknown keys come first
    assert err.field == "cfg.nam"
    err = _error(build, Outer, {"flag": 1, "count": "x"}, "cfg")  # then values, as written
    assert err.field == "cfg.flag"


def test_build_message_templates_and_listed_keys() -> None:
    err = _error(build, Inner, "x", "env", mapping_message="must be a mapping, got {value!r}")
    assert str(err) == "env: must be a mapping, got 'x'"
    err = _error(
        build,
        Inner,
        {"q": 1},
        "env",
        allowed=["tags", "size"],
        unknown_message="bad {key}: {allowed}",
    )
    assert str(err) == "env.q: bad q: tags, size"


# ---------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class Budget(Section):
    _path: ClassVar[str] = "run.budget"
    _optional_keys: ClassVar[tuple[str, ...]] = ("patience",)

    kind: Literal["steps", "time"] = "steps"
    steps: int = 10
    seconds: float = 60.0
    patience: int | None = None

    def _relevant(self) -> tuple[str, ...]:
        return ("kind", "steps" if self.kind == "steps" else "seconds", "patience")

    def _validate(self, path: str, given: frozenset[str]) -> None:
        if self.kind == "steps" and "seconds" in given:
            schema.fail(f"{path}.seconds", "kind 'steps' uses steps; remove 'seconds'")
        check_int(self.steps, f"{path}.steps", 1)


def test_section_reads_checks_and_writes_back() -> None:
    b = Budget.from_dict({"steps": 3, "patience": 2})
    assert b == Budget(steps=3, patience=2)
    assert b.to_dict() == {"kind": "steps", "steps": 3, "patience": 2}
    assert Budget().to_dict() == {"kind": "steps", "steps": 10}  # optional None left out
    assert Budget.from_dict(Budget(kind="time").to_dict()) == Budget(kind="time")
    assert Budget.from_dict(None) == Budget()
    err = _error(Budget.from_dict, {"stepz": 3})
    assert err.field == "run.budget.stepz"
    assert str(err) == (
        "run.budget.stepz: unknown option; run.budget accepts kind, steps, seconds, patience"
    )
    err = _error(Budget.from_dict, [1])
    assert str(err) == "run.budget: expected a mapping of options, got [1]"
    err = _error(Budget.from_dict, {"steps": 0}, "suite.budget")  # another path
    assert str(err) == "suite.budget.steps: expected an integer >= 1, got 0"


def test_section_rejects_written_options_that_do_not_apply_even_at_their_default() -> None:
    err = _error(Budget.from_dict, {"seconds": 60.0})
    assert err.field == "run.budget.seconds"
    assert str(err) == "run.budget.seconds: kind 'steps' uses steps; remove 'seconds'"
    Budget(seconds=60.0)  # built directly, a default value is not "given"
    err = _error(Budget, seconds=5.0)  # but a changed one is
    assert err.field == "run.budget.seconds"


def test_anchored_moves_only_the_errors_under_its_path() -> None:
    with pytest.raises(ConfigError) as info, anchored("env", "suite.space"):
        raise ConfigError("bad", field="env.ops[0]")
    assert info.value.field == "suite.space.ops[0]"
    assert str(info.value) == "suite.space.ops[0]: bad"
    with pytest.raises(ConfigError) as info, anchored("env", "suite.space"):
        raise ConfigError("bad", field="envelope.x")  # another path: left alone
    assert info.value.field == "envelope.x"
    with pytest.raises(ConfigError) as info, anchored("env", "suite.space"):
        raise ConfigError("bad", field="env")
    assert str(info.value) == "suite.space: bad"


def test_module_examples_run() -> None:
    assert doctest.testmod(schema).failed == 0


# ---------------------------------------------------------------------------------------------
# Values in place


def test_predicates() -> None:
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_number(3) and is_number(0.5) and not is_number(False) and not is_number("1")
    assert not is_number(math.nan) and not is_number(math.inf)
    assert is_number(math.inf, finite=False)


def test_range_and_choice_messages() -> None:
    check_int(2, "p", 1)
    check_int(2, "p", 1, 2)
    assert str(_error(check_int, True, "env.max_steps", 1)) == (
        "env.max_steps: expected an integer >= 1, got True"
    )
    assert str(_error(check_int, 3, "p", 1, 2)) == "p: expected an integer in [1, 2], got 3"
    err = _error(
        check_int, 0, "executor.workers", 1, message="must be a positive integer, got {value!r}"
    )
    assert str(err) == "executor.workers: must be a positive integer, got 0"
    check_number(0.5, "p", 0.0, 1.0)
    assert str(_error(check_number, 2.0, "p", 0.0, 1.0)) == (
        "p: expected a finite number [0.0, 1.0], got 2.0"
    )
    assert str(_error(check_number, math.nan, "p", 0.0)) == (
        "p: expected a finite number >= 0.0, got nan"
    )
    check_choice("ray", "p", ("inprocess", "ray"))
    assert str(_error(check_choice, "x", "env.space", ("symbolic", "parametric"))) == (
        "env.space: unknown value 'x'; choose one of symbolic, parametric"
    )
    err = _error(
        check_choice, "spark", "e.name", ("a", "b"), "unknown executor {value!r}; {choices}"
    )
    assert str(err) == "e.name: unknown executor 'spark'; a, b"


def test_to_plain() -> None:
    value = {"c": Colour.RED, "t": (1, (2.0,)), "m": {"q": (0.5,)}, "s": Budget(), "n": None}
    assert to_plain(value) == {
        "c": "red",
        "t": [1, [2.0]],
        "m": {"q": [0.5]},
        "s": {"kind": "steps", "steps": 10},
        "n": None,
    }


# ---------------------------------------------------------------------------------------------
# Preset sections


@dataclass
class Evaluation:
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    data_seed: int = 0


def test_parse_section() -> None:
    assert parse_section({}, "evaluation", Evaluation, "env") == Evaluation()
    assert parse_section({"evaluation": None}, "evaluation", Evaluation, "env") == Evaluation()
    got = parse_section({"evaluation": {"seeds": [3]}}, "evaluation", Evaluation, "env")
    assert got == Evaluation(seeds=[3])
    err = _error(parse_section, {"evaluation": [1]}, "evaluation", Evaluation, "env")
    assert err.field == "env.evaluation" and str(err) == "env.evaluation: must be a mapping"
    err = _error(parse_section, {"evaluation": {"seed": 1}}, "evaluation", Evaluation, "suite")
    assert err.field == "suite.evaluation.seed"
    assert str(err) == "suite.evaluation.seed: unknown key 'seed'; allowed: data_seed, seeds"
    err = _error(
        parse_section, {"evaluation": {"seeds": [1, "a"]}}, "evaluation", Evaluation, "env"
    )
    assert err.field == "env.evaluation.seeds"
    assert str(err) == "env.evaluation.seeds: must be a list of integers"
