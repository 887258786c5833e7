"""Export discovered losses, and load them back.

Three formats:

- ``json``: a versioned spec, data only::

      {"schema": "loss_rl.loss", "schema_version": 1, "expression": "-(1 - p_y)^2 * log_p_y",
       "kind": "classification", "reduction": "mean", "metadata": {"score": 0.83}}

- ``py``: a standalone Python module that imports only torch and defines
  ``class DiscoveredLoss(torch.nn.Module)``, documented like the losses of ``torch.nn``; its code is
  generated from the expression tree with the library's numeric guards, so it matches the
  library's loss in values and gradients, and it compiles with ``torch.jit.script``;
- ``torchscript``: that module scripted and saved with ``torch.jit.save`` (the JSON spec rides along
  as the extra file ``loss_rl.json``).

:func:`load_loss` reads a JSON spec (parsed by the loss language's own parser into an
:class:`~loss_rl.expr.ExprLoss`, never executing anything) or a TorchScript file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args

import torch

from loss_rl._version import __version__
from loss_rl.errors import LossSpecError, LossSyntaxError
from loss_rl.expr import Expr, ExprLoss, TaskKind, compile_loss, parse
from loss_rl.expr._codegen import GUARD_NOTES, HELPERS, latex, torch_code
from loss_rl.expr._compile import Reduction

SCHEMA = "loss_rl.loss"
SCHEMA_VERSION = 1
ExportFormat = Literal["json", "py", "torchscript"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
REDUCTIONS: tuple[str, ...] = get_args(Reduction)
_KINDS: tuple[str, ...] = tuple(k.value for k in TaskKind)
EXTRA_FILE = "loss_rl.json"

_REQUIRED = ("schema", "schema_version", "expression")
_OPTIONAL = ("kind", "reduction", "metadata")
_MAX_SPEC_BYTES = 1 << 20
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


# ---------------------------------------------------------------------------------------------
# Reading specs (data only)


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


def read_spec(path: str | Path) -> LossSpec:
    """Read and validate a JSON spec file.

    Raises:
        LossSpecError: if the file is missing, too large, not UTF-8 JSON, or not a valid spec.
    """
    path = Path(path)
    if not path.is_file():
        raise LossSpecError(f"no loss spec file at {path}", field="path")
    if path.stat().st_size > _MAX_SPEC_BYTES:
        raise LossSpecError(
            f"{path} is larger than {_MAX_SPEC_BYTES} bytes; a loss spec is a small JSON file",
            field="path",
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise LossSpecError(f"{path}: not UTF-8 text; a loss spec is JSON", field="json") from None
    return spec_from_text(text, str(path))


def load_loss(path: str | Path) -> torch.nn.Module:
    """Load an exported loss as a ``torch.nn.Module`` (``forward(input, target)``).

    Args:
        path: A JSON spec (read as data and compiled by the library into an
            :class:`~loss_rl.expr.ExprLoss`), a neural-loss JSON spec (``"schema":
            "loss_rl.neural_loss"``, weights as data, rebuilt by
            :func:`loss_rl.meta.load_neural_loss`) or a TorchScript file (``torch.jit.load``).

    Raises:
        LossSpecError: if the file is missing, is Python source (never executed: import it
            yourself), or is not a valid spec or TorchScript archive.
    """
    path = Path(path)
    if not path.is_file():
        raise LossSpecError(f"no loss file at {path}", field="path")
    if path.suffix == ".py":
        raise LossSpecError(
            f"{path} is Python source, and load_loss never executes code; import it yourself "
            "(it defines DiscoveredLoss) or load the .json/TorchScript export instead",
            field="path",
        )
    if zipfile.is_zipfile(path):
        try:
            return torch.jit.load(str(path))
        except (RuntimeError, ValueError, OSError) as err:
            raise LossSpecError(
                f"{path} is not a TorchScript module saved by torch.jit.save ({err})", field="path"
            ) from None
    if _is_neural_spec(path):
        from loss_rl.meta import load_neural_loss

        return load_neural_loss(path)
    return read_spec(path).module()


def _is_neural_spec(path: Path) -> bool:
    """Whether ``path`` is a JSON neural-loss spec (``loss_rl.meta``), judged by its schema."""
    # Weights make neural specs larger than expression specs; still bounded, still data only.
    if path.stat().st_size > 64 * _MAX_SPEC_BYTES:
        return False
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("schema") == "loss_rl.neural_loss"


# ---------------------------------------------------------------------------------------------
# Writing


def export(
    expr: Expr | str,
    path: str | Path,
    format: ExportFormat = "json",
    *,
    kind: TaskKind | str | None = None,
    reduction: Reduction = "mean",
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Export a loss as a JSON spec, a standalone ``.py`` module, or TorchScript.

    Args:
        expr: The per-sample loss expression (or its text in the loss language).
        path: File to write; parent folders are created.
        format: ``"json"``, ``"py"`` or ``"torchscript"`` (see the module docstring).
        kind: ``"classification"`` or ``"regression"``; inferred from the leaves when omitted.
        reduction: Default batch reduction of the exported loss.
        metadata: JSON-serialisable facts to keep with the loss (e.g. ``{"score": 0.83}``).

    Returns:
        The path written.

    Raises:
        LossSpecError: for an unknown format, an expression that does not compile for ``kind``,
            or invalid ``reduction``/``metadata``.

    Example:
        >>> from loss_rl import export, load_loss, known_loss
        >>> path = export(known_loss("gce"), "gce.json")  # doctest: +SKIP
        >>> criterion = load_loss(path)  # doctest: +SKIP
    """
    if format not in FORMATS:
        raise LossSpecError(
            f"unknown export format {format!r}; use one of {', '.join(FORMATS)}", field="format"
        )
    spec = LossSpec.of(parse(expr) if isinstance(expr, str) else expr, kind, reduction, metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "json":
        path.write_text(json.dumps(spec.to_json(), indent=2) + "\n", encoding="utf-8")
    elif format == "py":
        path.write_text(module_source(spec), encoding="utf-8")
    else:
        scripted = script_module(spec)
        extra = {EXTRA_FILE: json.dumps(spec.to_json())}
        torch.jit.save(scripted, str(path), _extra_files=extra)
    return path


def script_module(spec: LossSpec) -> torch.jit.ScriptModule:
    """The generated ``DiscoveredLoss`` of ``spec``, compiled with ``torch.jit.script``."""
    with _generated_module(module_source(spec)) as module:
        return torch.jit.script(module.DiscoveredLoss(spec.reduction))


@contextmanager
def _generated_module(source: str) -> Iterator[ModuleType]:
    """Import generated module source while its file exists.

    TorchScript reads a class's source through ``inspect``, which needs the file and the module
    in ``sys.modules``, so the source goes to a temporary file imported with :mod:`importlib`.
    The source is generated from a parsed tree, never taken from user text.
    """
    name = "_loss_rl_generated_" + hashlib.sha1(source.encode()).hexdigest()[:16]
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / f"{name}.py"
        file.write_text(source, encoding="utf-8")
        found = importlib.util.spec_from_file_location(name, file)
        assert found is not None and found.loader is not None
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        try:
            found.loader.exec_module(module)
            yield module
        finally:
            del sys.modules[name]


# ---------------------------------------------------------------------------------------------
# The standalone module

_SAFE_KEY = re.compile(r"\w{1,40}")
_SAFE_TEXT = re.compile(r"[\w .,:;+\-/()=%<>\[\]]{0,100}")

_SYMBOLS = {
    TaskKind.CLASSIFICATION: (
        r"where :math:`x` are the logits, :math:`p_c = \mathrm{softmax}(x)_c` the predicted"
        "\n    probabilities, :math:`p_y` the probability of the target class, :math:`t_c` the"
        "\n    one-hot (or soft) target and :math:`C` the number of classes."
    ),
    TaskKind.REGRESSION: r"where :math:`x` is the prediction and :math:`y` the target.",
}

_SHAPES = {
    TaskKind.CLASSIFICATION: """\
        - Input: :math:`(B, C)` logits, where :math:`B` is the batch size and :math:`C` the
          number of classes; leading dimensions :math:`(*, B, C)` (e.g. a population of models
          sharing one target) are allowed.
        - Target: :math:`(B)` int64 class indices in :math:`[0, C)`, or :math:`(B, C)` class
          probabilities (soft targets).
        - Output: scalar. If :attr:`reduction` is ``'none'``, then :math:`(B)` (or
          :math:`(*, B)`).""",
    TaskKind.REGRESSION: """\
        - Input: :math:`(*)`, the prediction, where :math:`*` means any number of dimensions.
        - Target: :math:`(*)`, same shape as the input (or broadcastable to it).
        - Output: scalar. If :attr:`reduction` is ``'none'``, then :math:`(*)`, the shape of the
          input.""",
}

_EXAMPLES = {
    TaskKind.CLASSIFICATION: """\
        >>> loss = DiscoveredLoss()
        >>> input = torch.randn(3, 5, requires_grad=True)
        >>> target = torch.randint(5, (3,), dtype=torch.int64)
        >>> output = loss(input, target)
        >>> output.backward()
        >>>
        >>> # Example of target with class probabilities
        >>> target = torch.randn(3, 5).softmax(dim=1)
        >>> output = loss(input, target)
        >>> output.backward()""",
    TaskKind.REGRESSION: """\
        >>> loss = DiscoveredLoss()
        >>> input = torch.randn(3, 5, requires_grad=True)
        >>> target = torch.randn(3, 5)
        >>> output = loss(input, target)
        >>> output.backward()""",
}


def _metadata_lines(metadata: Mapping[str, Any]) -> list[str]:
    # Only plain facts go into the docstring; everything is kept verbatim in METADATA.
    out = []
    for key, value in metadata.items():
        if not _SAFE_KEY.fullmatch(key):
            continue
        if isinstance(value, bool | int | float) or value is None:
            text = repr(value)
        elif isinstance(value, str) and _SAFE_TEXT.fullmatch(value):
            text = value
        else:
            continue
        out.append(f"        - {key}: {text}")
    return out


def module_source(spec: LossSpec) -> str:
    """Source of a standalone Python module defining ``DiscoveredLoss`` for ``spec``.

    The module imports only ``torch`` and ``torch.nn.functional``, documents the loss like
    ``torch.nn`` does (formula, Args, Shape, Examples) and compiles with ``torch.jit.script``.
    """
    code = torch_code(spec.expression, spec.kind)
    guards = [GUARD_NOTES[g] for g in GUARD_NOTES if g in code.guards]
    guard_text = ""
    if guards:
        sentence = (
            "Undefined values are guarded exactly as in loss_rl, so the loss and its gradient "
            f"stay finite: {'; '.join(guards)}."
        )
        guard_text = "\n\n" + textwrap.fill(
            sentence, 96, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False
        )
    meta = _metadata_lines(spec.metadata)
    meta_text = "\n\n    Recorded by loss_rl:\n\n" + "\n".join(meta) if meta else ""
    title = spec.metadata.get("title")
    if not (isinstance(title, str) and _SAFE_TEXT.fullmatch(title) and title):
        title = "A loss function discovered by loss_rl"
    body = "\n".join("        " + line for line in code.body)
    helper_block = "".join(f"\n\n{h}" for h in (HELPERS[n] for n in sorted(code.helpers)))
    return f'''r"""{title}.

Generated by loss_rl {__version__} from the loss expression::

    {spec.expression}

This file needs only PyTorch. ``DiscoveredLoss`` is used like the losses of ``torch.nn`` and
compiles with ``torch.jit.script``.
"""

import torch
import torch.nn.functional as F

#: The loss in loss_rl's loss language (``loss_rl.parse`` reads it back).
EXPRESSION = {json.dumps(str(spec.expression))}
#: The task kind the loss was written for.
KIND = {json.dumps(spec.kind.value)}
#: What loss_rl recorded about the loss (e.g. its search score).
METADATA = {spec.metadata!r}
{helper_block}

class DiscoveredLoss(torch.nn.Module):
    r"""{title}.

    The unreduced (per-sample) loss is

    .. math::
        \\ell(x, y) = {latex(spec.expression)}

    {_SYMBOLS[spec.kind]}

    In loss_rl's loss language: ``{spec.expression}``.{guard_text}{meta_text}

    Args:
        reduction (str, optional): Specifies the reduction to apply to the output:
            ``'none'`` | ``'mean'`` | ``'sum'``. ``'none'``: no reduction will be applied,
            ``'mean'``: the sum of the output will be divided by the number of
            elements in the output, ``'sum'``: the output will be summed.
            Default: ``{spec.reduction!r}``

    Shape:
{_SHAPES[spec.kind]}

    Examples::

{_EXAMPLES[spec.kind]}
    """

    __constants__ = ["reduction"]

    def __init__(self, reduction: str = {json.dumps(spec.reduction)}) -> None:
        super().__init__()
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"{{reduction}} is not a valid value for reduction")
        self.reduction = reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss; see the class docstring for shapes."""
{body}
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss
'''
