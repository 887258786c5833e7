"""The one config validator: plain (YAML) data checked against stdlib dataclasses.

Every configuration of loss_rl (tasks, env spaces, executors, agents, presets) is a dataclass
whose fields are typed; this module turns a parsed YAML mapping into one, or says precisely why
it cannot, with a :class:`~loss_rl.errors.ConfigError` whose ``field`` is the dotted path of the
offending value (``task.corruption.rate``, ``task.model.widths[1]``, ``env.param_grids.q``).

- :func:`build` reads a mapping into a dataclass: :func:`check_mapping`, :func:`check_keys`
  (unknown keys, naming the allowed ones), then :func:`coerce` of every written value against
  its annotation: ``int`` vs ``bool`` vs ``float`` (an integer is a number, ``true`` is neither),
  ``str``, ``Literal[...]``, enums, ``X | None``, ``tuple[X, ...]`` / ``list[X]`` (a YAML list),
  ``Mapping[str, X]`` and nested dataclasses (sections), recursively.
- :class:`Section` is the base of a strict, flat section whose values are checked both when it is
  read (``from_dict``) and when it is built directly (``__post_init__``), and which writes back
  only the options that apply (``to_dict``).
- :func:`check_int`, :func:`check_number` and :func:`check_choice` check ranges and choices of
  values that are already in place (a config's own validation); :func:`is_int` and
  :func:`is_number` are their predicates.
- :func:`parse_section` reads a flat preset section (``evaluation:``, ``verification:``).
- :func:`anchored` re-anchors the errors of a config read where it lives in a larger file.

Messages are templates filled with :meth:`str.format`; each function documents its fields.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import math
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from loss_rl.errors import ConfigError

__all__ = [
    "MAPPING_MESSAGE",
    "UNKNOWN_KEY_MESSAGE",
    "Section",
    "anchored",
    "build",
    "check_choice",
    "check_int",
    "check_keys",
    "check_mapping",
    "check_number",
    "coerce",
    "fail",
    "is_int",
    "is_number",
    "parse_section",
    "to_plain",
    "type_name",
]

T = TypeVar("T")
S = TypeVar("S", bound="Section")

#: Default message of :func:`check_mapping` (fields: ``value``, ``type``).
MAPPING_MESSAGE = "expected a mapping, got {value!r}"
#: Default message of :func:`check_keys` (fields: ``key``, ``allowed``, ``path``).
UNKNOWN_KEY_MESSAGE = "unknown key {key!r}; allowed: {allowed}"

_SINGULAR = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}
_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def fail(path: str, message: str) -> typing.NoReturn:
    """Raise a :class:`~loss_rl.errors.ConfigError` for the value at ``path``.

    Args:
        path: Dotted path of the offending value (the error's ``field``).
        message: What is wrong and how to fix it.

    Raises:
        ConfigError: always.
    """
    raise ConfigError(message, field=path)


@contextlib.contextmanager
def anchored(path: str, at: str) -> Iterator[None]:
    """Report the errors of the block that are under ``path`` under ``at`` instead.

    A config whose checks name fixed fields (``env.space``) can so be read where it lives in a
    larger file (``env.space`` -> ``suite.space.space``).

    Args:
        path: The dotted path the block's errors use.
        at: Where the checked data really lives.

    Raises:
        ConfigError: the block's error, its field re-anchored when it was under ``path``.
    """
    if path == at:
        yield
        return
    try:
        yield
    except ConfigError as err:
        name = err.field
        if name is None or not (name == path or name.startswith((f"{path}.", f"{path}["))):
            raise
        message = str(err)[len(name) + 2 :]
        raise ConfigError(message, field=at + name[len(path) :]) from None


# ---------------------------------------------------------------------------------------------
# Types


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _is_sequence_type(tp: Any) -> bool:
    origin = get_origin(tp)
    return origin in (tuple, list) or (origin is Sequence and bool(get_args(tp)))


def _is_mapping_type(tp: Any) -> bool:
    return get_origin(tp) in (dict, Mapping) or tp in (dict, Mapping)


def _is_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _words(name: str) -> str:
    """``TaskKind`` -> ``task kind``."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def type_name(tp: Any) -> str:
    """How an error message names the annotation ``tp`` (``an integer``, ``a list of numbers``).

    Args:
        tp: A type annotation (evaluated, as :func:`typing.get_type_hints` returns it).

    Returns:
        A short English phrase.
    """
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if _is_union(tp):
        return " or ".join(type_name(a) for a in get_args(tp) if a is not type(None))
    if _is_sequence_type(tp):
        inner = get_args(tp)[0]
        return f"a list of {_PLURAL.get(inner) or type_name(inner)}"
    if _is_mapping_type(tp):
        return "a mapping"
    if _is_enum(tp):
        return " | ".join(repr(m.value) for m in tp)
    return _SINGULAR.get(tp, getattr(tp, "__name__", str(tp)))


def coerce(value: Any, tp: Any, path: str, *, strict: bool = True) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form.

    Canonical form: a YAML list becomes a tuple for ``tuple[X, ...]`` (a list for ``list[X]``),
    a value becomes its member for an enum, a mapping becomes a plain ``dict`` with ``str`` keys
    for ``Mapping[str, X]`` and a dataclass (built by :meth:`Section.from_dict` or :func:`build`)
    for a dataclass annotation. Integers stay integers where a ``float`` is expected (a split
    size uses ``int`` = count, ``float`` = fraction); ``true``/``false`` is never a number.

    Args:
        value: Plain data (from YAML).
        tp: The annotation (evaluated).
        path: Dotted path of ``value``; items of a list are ``path[i]``, values of a mapping
            ``path.key``, fields of a section ``path.field``.
        strict: ``False`` checks and converts only the *shape* (lists, mappings, enums,
            sections) and passes scalars through unchecked, for a config whose own validation
            checks them on every construction path.

    Returns:
        The value in canonical form.

    Raises:
        ConfigError: naming ``path`` (or the item / key below it) and what was expected.
    """
    origin = get_origin(tp)
    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if issubclass(tp, Section):
            return tp.from_dict(value, path)
        return build(tp, value, path, strict=strict)
    if _is_union(tp):
        alts = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(alts) < len(get_args(tp)):
            return None
        if len(alts) == 1:  # ``X | None``: X's own error, which names an item at fault
            return coerce(value, alts[0], path, strict=strict)
        for alt in alts:
            try:
                return coerce(value, alt, path, strict=strict)
            except ConfigError:
                continue
        fail(path, f"expected {type_name(tp)}, got {value!r}")
    if _is_enum(tp):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in tp)
            fail(path, f"unknown {_words(tp.__name__)} {value!r}; choose one of {choices}")
    if _is_sequence_type(tp):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            fail(path, f"expected {type_name(tp)}, got {value!r}")
        inner = get_args(tp)[0]
        items = (coerce(v, inner, f"{path}[{i}]", strict=strict) for i, v in enumerate(value))
        return list(items) if origin is list else tuple(items)
    if _is_mapping_type(tp):
        if not isinstance(value, Mapping):
            fail(path, f"expected {type_name(tp)}, got {value!r}")
        args = get_args(tp)
        inner = args[1] if args else Any
        return {str(k): coerce(v, inner, f"{path}.{k}", strict=strict) for k, v in value.items()}
    if not strict:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            fail(path, f"got {value!r}; choose one of {', '.join(map(repr, get_args(tp)))}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            fail(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if not is_int(value):
            fail(path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if not is_number(value, finite=False):
            fail(path, f"expected a number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            fail(path, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {path}")  # pragma: no cover - a bug


# ---------------------------------------------------------------------------------------------
# Mappings and dataclasses


def check_mapping(data: Any, path: str, message: str = MAPPING_MESSAGE) -> Mapping[str, Any]:
    """``data`` as a mapping (``None`` reads as an empty one).

    Args:
        data: Plain data that should be a mapping.
        path: Dotted path of ``data``.
        message: Template of the error (fields: ``value``, ``type`` = its type's name).

    Returns:
        ``data``, or ``{}`` for ``None``.

    Raises:
        ConfigError: naming ``path`` when ``data`` is neither ``None`` nor a mapping.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        fail(path, message.format(value=data, type=type(data).__name__))
    return data


def check_keys(
    data: Mapping[str, Any],
    allowed: Sequence[str],
    path: str,
    message: str = UNKNOWN_KEY_MESSAGE,
) -> None:
    """Reject the first key of ``data`` (as written) that is not in ``allowed``.

    Args:
        data: The mapping to check.
        allowed: Accepted keys, in the order the message lists them.
        path: Dotted path of ``data``; the error names ``path.key``.
        message: Template of the error (fields: ``key``, ``allowed`` = the keys joined with
            ``", "``, ``path``).

    Raises:
        ConfigError: for an unknown key.
    """
    accepted = set(allowed)
    for key in data:
        if key not in accepted:
            text = message.format(key=key, allowed=", ".join(allowed), path=path)
            fail(f"{path}.{key}", text)


def _init_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Evaluating string annotations costs a millisecond; a config class's never change.
    return typing.get_type_hints(cls)


def build(
    cls: type[T],
    data: Any,
    path: str,
    *,
    strict: bool = True,
    allowed: Sequence[str] | None = None,
    mapping_message: str = MAPPING_MESSAGE,
    unknown_message: str = UNKNOWN_KEY_MESSAGE,
) -> T:
    """Read plain data into the dataclass ``cls``; missing fields take their defaults.

    The checks run in this order: ``data`` is a mapping (``None``: empty), no unknown key, then
    every written value against its field's annotation (see :func:`coerce`), as written; the
    dataclass's own ``__post_init__`` runs last.

    Args:
        cls: A dataclass.
        data: Plain data (a mapping, or ``None``).
        path: Dotted path of ``data``; errors name ``path.field``.
        strict: See :func:`coerce`.
        allowed: Accepted keys in the order messages list them (default: the fields of ``cls``,
            in order).
        mapping_message: Template of the error when ``data`` is not a mapping (see
            :func:`check_mapping`).
        unknown_message: Template of the error for an unknown key (see :func:`check_keys`).

    Returns:
        The dataclass instance.

    Raises:
        ConfigError: naming the dotted field at fault.
    """
    mapping = check_mapping(data, path, mapping_message)
    check_keys(mapping, _init_fields(cls) if allowed is None else allowed, path, unknown_message)
    hints = _hints(cls)
    kwargs = {k: coerce(v, hints[k], f"{path}.{k}", strict=strict) for k, v in mapping.items()}
    return cls(**kwargs)


def to_plain(value: Any) -> Any:
    """``value`` as plain YAML-able data (lists, dicts, strings, numbers, booleans, ``None``).

    Enums become their values, tuples lists, mappings dicts, and objects with a ``to_dict``
    method (sections) what it returns.
    """
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return value.to_dict()
    return value


class Section:
    """Base of a strict, flat, frozen dataclass section of a config.

    A subclass is a ``@dataclass(frozen=True)`` whose fields are its options. Its values are
    checked when it is read (:meth:`from_dict`: types, then :meth:`_validate` of the written
    options) and when it is built directly (``__post_init__``: :meth:`_validate` of the options
    that differ from their defaults); :meth:`to_dict` writes the options that apply.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Budget(Section):
        ...     _path: ClassVar[str] = "run.budget"
        ...     steps: int = 10
        >>> Budget.from_dict({"steps": 3})
        Budget(steps=3)
        >>> Budget.from_dict({"step": 3})
        Traceback (most recent call last):
        ...
        loss_rl.errors.ConfigError: run.budget.step: unknown option; run.budget accepts steps
    """

    #: Dotted path of the section in error fields (e.g. ``task.dataset``).
    _path: ClassVar[str] = ""

    #: Options that :meth:`to_dict` writes only when they are not ``None``.
    _optional_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls: type[S], data: Any, path: str | None = None) -> S:
        """Read the section from plain data (``None``: all defaults).

        Args:
            data: Mapping of options.
            path: Dotted path of the section in error fields (default: ``_path``).

        Raises:
            ConfigError: naming ``path.option`` for an unknown option, a wrong type or a bad
                value.
        """
        with anchored(cls._path, path or cls._path):
            obj = build(
                cls,
                data,
                cls._path,
                mapping_message="expected a mapping of options, got {value!r}",
                unknown_message="unknown option; {path} accepts {allowed}",
            )
            # Written options that do not apply are errors even when they equal the default.
            obj._validate(cls._path, frozenset(data or ()))
        return obj

    def __post_init__(self) -> None:
        given = frozenset(
            f.name
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if getattr(self, f.name) != f.default
        )
        self._validate(self._path, given)

    def _validate(self, path: str, given: frozenset[str]) -> None:
        """Check the values (subclasses override it).

        Args:
            path: Dotted path of the section.
            given: The options that were written (or differ from their defaults).

        Raises:
            ConfigError: naming ``path.option``.
        """

    def _relevant(self) -> tuple[str, ...]:
        """The options that apply, in the order :meth:`to_dict` writes them (default: all)."""
        return tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able data that :meth:`from_dict` reads back (only the options that apply)."""
        out: dict[str, Any] = {}
        for name in self._relevant():
            v = getattr(self, name)
            if v is None and name in self._optional_keys:
                continue
            out[name] = to_plain(v)
        return out


def parse_section(
    data: Mapping[str, Any],
    key: str,
    cls: type[T],
    field_prefix: str,
    *,
    int_lists: tuple[str, ...] = ("seeds",),
) -> T:
    """Read the flat section ``data[key]`` of a preset into the dataclass ``cls``.

    A missing or empty section takes the defaults. Values are passed to ``cls`` as written (its
    own checks, and the caller's, apply), except that a field named in ``int_lists`` and given
    as a list must hold integers only.

    Args:
        data: The preset mapping.
        key: The section's key in ``data`` (e.g. ``"evaluation"``).
        cls: A dataclass whose fields all have defaults.
        field_prefix: Dotted path of ``data`` (e.g. ``"env"``); errors name
            ``field_prefix.key[.option]``.
        int_lists: Fields that, given as a list, must be a list of integers (``isinstance`` of
            ``int``, so ``true`` passes as it always has).

    Returns:
        The dataclass instance.

    Raises:
        ConfigError: when the section is not a mapping, has an unknown key, or a list of
            integers holds something else.
    """
    path = f"{field_prefix}.{key}"
    raw = check_mapping(data.get(key) or {}, path, "must be a mapping")
    check_keys(raw, sorted(_init_fields(cls)), path)
    obj = cls(**raw)
    for name in int_lists:
        v = getattr(obj, name, None)
        if isinstance(v, list) and not all(isinstance(s, int) for s in v):
            fail(f"{path}.{name}", "must be a list of integers")
    return obj


# ---------------------------------------------------------------------------------------------
# Values in place: ranges and choices


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (``True`` / ``False`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any, *, finite: bool = True) -> bool:
    """Whether ``value`` is an integer or a float (not a boolean), finite unless told otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) or not finite


def check_int(
    value: Any, path: str, lo: int, hi: int | None = None, message: str | None = None
) -> None:
    """Check that ``value`` is an integer in ``[lo, hi]`` (``hi=None``: no upper bound).

    Args:
        value: The value.
        path: Its dotted path.
        lo: Smallest allowed value.
        hi: Largest allowed value.
        message: Template of the error (fields: ``value``, ``lo``, ``hi``); by default
            ``expected an integer >= {lo}, got {value!r}`` (or ``in [lo, hi]``).

    Raises:
        ConfigError: naming ``path``.
    """
    if is_int(value) and lo <= value and (hi is None or value <= hi):
        return
    if message is None:
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        message = f"expected an integer {bounds}, got {{value!r}}"
    fail(path, message.format(value=value, lo=lo, hi=hi))


def check_number(
    value: Any, path: str, lo: float, hi: float = math.inf, message: str | None = None
) -> None:
    """Check that ``value`` is a finite number in ``[lo, hi]``.

    Args:
        value: The value.
        path: Its dotted path.
        lo: Smallest allowed value.
        hi: Largest allowed value (``inf``: no upper bound).
        message: Template of the error (fields: ``value``, ``lo``, ``hi``); by default
            ``expected a finite number [lo, hi], got {value!r}`` (or ``>= lo``).

    Raises:
        ConfigError: naming ``path``.
    """
    if is_number(value) and lo <= value <= hi:
        return
    if message is None:
        bounds = f"[{lo}, {hi}]" if hi != math.inf else f">= {lo}"
        message = f"expected a finite number {bounds}, got {{value!r}}"
    fail(path, message.format(value=value, lo=lo, hi=hi))


def check_choice(value: Any, path: str, choices: Sequence[Any], message: str | None = None) -> None:
    """Check that ``value`` is one of ``choices``.

    Args:
        value: The value.
        path: Its dotted path.
        choices: The allowed values, in the order the message lists them.
        message: Template of the error (fields: ``value``, ``choices`` = joined with ``", "``);
            by default ``unknown value {value!r}; choose one of {choices}``.

    Raises:
        ConfigError: naming ``path``.
    """
    if value in choices:
        return
    template = message or "unknown value {value!r}; choose one of {choices}"
    fail(path, template.format(value=value, choices=", ".join(map(str, choices))))
