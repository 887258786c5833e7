"""The JSON loss spec: :class:`LossSpec`, its schema, and parsing and validating its text.

A spec is data only::

    {"schema": "loss_rl.loss", "schema_version": 1, "expression": "-(1 - p_y)^2 * log_p_y",
     "kind": "classification", "reduction": "mean", "metadata": {"score": 0.83}}

Its expression is read by the loss language's own parser, never executed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from loss_rl._version import __version__
from loss_rl.errors import LossSpecError, LossSyntaxError
from loss_rl.expr import Expr, ExprLoss, Reduction, TaskKind, compile_loss, parse

SCHEMA = "loss_rl.loss"
SCHEMA_VERSION = 1
REDUCTIONS: tuple[str, ...] = get_args(Reduction)
_KINDS: tuple[str, ...] = tuple(k.value for k in TaskKind)

_REQUIRED = ("schema", "schema_version", "expression")
_OPTIONAL = ("kind", "reduction", "metadata")
_EXAMPLE = (
    '{"schema": "loss_rl.loss", "schema_version": 1, "expression": "-log_p_y", '
    '"kind": "classification", "reduction": "mean", "metadata": {}}'
)


@dataclass(frozen=True)
class LossSpec:
    """A validated loss, as stored in a JSON spec.

    Build one with :meth:`of` (which validates) or read one with :func:`read_spec`.

    Attributes:
        expression: The per-sample loss expression.
        kind: Task kind.
        reduction: Batch reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        metadata: JSON-serialisable facts about the loss (e.g. its search score).
    """

    expression: Expr
    kind: TaskKind
    reduction: Reduction = "mean"
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        expression: Expr,
        kind: TaskKind | str | None = None,
        reduction: str = "mean",
        metadata: Mapping[str, Any] | None = None,
    ) -> LossSpec:
        """Validate and build a spec; the kind is inferred from the leaves when omitted.

        Raises:
            LossSpecError: if the expression does not compile for ``kind`` (mixed leaves, a
                per-class vector root), or ``reduction``/``metadata`` are invalid.
        """
        if not isinstance(expression, Expr):
            raise LossSpecError(
                f"expected a loss expression, got {type(expression).__name__}", field="expression"
            )
        if kind is not None and not (isinstance(kind, str) and kind in _KINDS):
            raise LossSpecError(
                f"unknown kind {kind!r}; use 'classification' or 'regression'", field="kind"
            )
        if reduction not in REDUCTIONS:
            raise LossSpecError(
                f"unknown reduction {reduction!r}; use 'mean', 'sum' or 'none'", field="reduction"
            )
        resolved = compile_loss(expression, kind).kind
        return cls(expression, resolved, reduction, _json_metadata(metadata))  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (see the module docstring)."""
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "expression": str(self.expression),
            "kind": self.kind.value,
            "reduction": self.reduction,
            "metadata": self.metadata,
        }

    def module(self) -> ExprLoss:
        """The loss as a ``torch.nn.Module`` computed by the library."""
        return ExprLoss(self.expression, self.kind, self.reduction)


def _json_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise LossSpecError(
            f"metadata must be a mapping, got {type(metadata).__name__}", field="metadata"
        )
    if not all(isinstance(k, str) for k in metadata):
        raise LossSpecError("metadata keys must be strings", field="metadata")
    try:
        # A JSON round trip makes a plain, finite copy (or says what is wrong).
        return json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError, RecursionError) as err:
        raise LossSpecError(
            f"metadata must be JSON-serialisable with finite numbers ({err})", field="metadata"
        ) from None


def _field_error(source: str, name: str, problem: str, fix: str) -> LossSpecError:
    return LossSpecError(f"{source}: field {name!r} {problem}; {fix}", field=name)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def spec_from_text(text: str, source: str = "spec") -> LossSpec:
    """Parse and validate the text of a JSON spec.

    Raises:
        LossSpecError: for invalid JSON or an invalid spec (see :func:`spec_from_json`).
    """
    try:
        data = json.loads(text, parse_float=_finite_float, parse_constant=_no_constants)
    except json.JSONDecodeError as err:
        raise LossSpecError(
            f"{source}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            f"a spec looks like {_EXAMPLE}",
            field="json",
        ) from None
    except (ValueError, RecursionError) as err:
        raise LossSpecError(f"{source}: not a usable JSON spec ({err})", field="json") from None
    return spec_from_json(data, source)


def spec_from_json(data: Any, source: str = "spec") -> LossSpec:
    """Validate decoded JSON as a loss spec.

    Args:
        data: The decoded JSON value.
        source: Where it came from, for messages (e.g. the file path).

    Raises:
        LossSpecError: naming the field at fault and the fix: not an object, a missing or unknown
            field, an unknown schema or version, an expression that does not parse or compile,
            an unknown kind or reduction, metadata that is not an object.
    """
    if not isinstance(data, dict):
        raise LossSpecError(
            f"{source}: a loss spec is a JSON object, got {type(data).__name__}; "
            f"write it like {_EXAMPLE}",
            field="spec",
        )
    for name in _REQUIRED:
        if name not in data:
            raise _field_error(source, name, "is missing", f"a spec looks like {_EXAMPLE}")
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise _field_error(
            source,
            unknown[0],
            "is unknown",
            f"remove it (fields are {', '.join(_REQUIRED + _OPTIONAL)}); "
            "put extra facts under 'metadata'",
        )
    if data["schema"] != SCHEMA:
        raise _field_error(
            source,
            "schema",
            f"is {data['schema']!r}, so this is not a loss_rl loss spec",
            f"expected {SCHEMA!r}",
        )
    version = data["schema_version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        newer = type(version) is int and version > SCHEMA_VERSION
        raise _field_error(
            source,
            "schema_version",
            f"is {version!r}, which this loss_rl ({__version__}) cannot read",
            "upgrade loss_rl" if newer else f"re-export the loss (version {SCHEMA_VERSION})",
        )
    text = data["expression"]
    if not isinstance(text, str):
        raise _field_error(
            source, "expression", f"is a {type(text).__name__}", 'write it as a string: "-log_p_y"'
        )
    try:
        expr = parse(text)
    except LossSyntaxError as err:
        raise _field_error(
            source, "expression", "is not a valid loss expression", str(err)
        ) from None
    kind = data.get("kind")
    if kind is not None and not (isinstance(kind, str) and kind in _KINDS):
        raise _field_error(
            source, "kind", f"is {kind!r}", "use 'classification', 'regression' or null"
        )
    reduction = data.get("reduction", "mean")
    if reduction not in REDUCTIONS:
        raise _field_error(source, "reduction", f"is {reduction!r}", "use 'mean', 'sum' or 'none'")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _field_error(
            source, "metadata", f"is a {type(metadata).__name__}", "make it a JSON object"
        )
    try:
        return LossSpec.of(expr, kind, reduction, metadata)
    except LossSpecError as err:
        raise LossSpecError(f"{source}: {err}", field=err.field) from None
