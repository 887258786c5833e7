"""ML3-style neural loss: a small network over per-class (prediction, target) features.

For logits :math:`z \\in R^C` and a one-hot (or soft) target :math:`t`, with
:math:`p = \\mathrm{softmax}(z)`, the per-sample loss is

.. math::  L(z, t) = w_{CE}\\,\\Big(-\\sum_c t_c \\log p_c\\Big)
   + \\sum_c g_\\phi\\big(p_c,\\ \\max(\\log p_c, -30),\\ t_c\\big)

where :math:`g_\\phi` is an MLP shared by all classes, so one network serves any number of classes
(multi-class capable) and treats classes symmetrically. With ``base="ce"`` (:math:`w_{CE} = 1`)
and the last layer initialised at zero, meta-training starts from cross-entropy and learns a
correction; ``base="none"`` is the original ML3 form with a random initialisation.

Bechtle et al., "Meta Learning via Learned Loss" (ML3), ICPR 2021.

The learned loss is exported as data only: a JSON spec (architecture + weights as nested lists)
that :func:`load_neural_loss` rebuilds, or a standalone ``.py`` file that imports only ``torch``
and embeds the weights as lists. No pickle and no code is ever read back.

This module sits below both of its users: :mod:`loss_rl.meta` meta-trains the network and
:func:`loss_rl.export.load_loss` loads an exported one back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loss_rl.errors import LossSpecError
from loss_rl.expr import TaskKind

SCHEMA = "loss_rl.neural_loss"
SCHEMA_VERSION = 1
LOG_P_MIN = -30.0
FEATURES: tuple[str, ...] = ("p", "log_p", "t")
ACTIVATIONS: tuple[str, ...] = ("tanh", "relu", "softplus", "elu")
Reduction = Literal["mean", "sum", "none"]

__all__ = [
    "ACTIVATIONS",
    "FEATURES",
    "LOG_P_MIN",
    "SCHEMA",
    "SCHEMA_VERSION",
    "NeuralLoss",
    "export_neural_loss",
    "load_neural_loss",
    "neural_loss_from_dict",
    "neural_loss_source",
    "neural_loss_to_dict",
]


def _act(name: str) -> nn.Module:
    return {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus, "elu": nn.ELU}[name]()


_ACT_FN = {"tanh": torch.tanh, "relu": torch.relu, "softplus": F.softplus, "elu": F.elu}


class NeuralLoss(nn.Module):
    r"""A learned classification loss over per-class features (see the module docstring).

    Args:
        hidden: Hidden widths of the per-class network :math:`g_\phi`.
        activation: One of :data:`ACTIVATIONS`.
        base: ``"ce"`` adds cross-entropy (weight 1) and zero-initialises the last layer, so the
            loss starts as CE; ``"none"`` is pure ML3 with a random start.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` over the batch.
        seed: Initialisation seed.

    Shape:
        - input: logits ``(..., B, C)``; target: ``(..., B)`` int64 or ``(..., B, C)`` soft.
        - output: scalar, or ``(..., B)`` with ``reduction='none'``.
    """

    kind = TaskKind.CLASSIFICATION

    def __init__(
        self,
        hidden: Sequence[int] = (16, 16),
        activation: str = "tanh",
        base: Literal["ce", "none"] = "ce",
        reduction: Reduction = "mean",
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise LossSpecError(
                f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}",
                field="activation",
            )
        if base not in ("ce", "none"):
            raise LossSpecError(f"base must be 'ce' or 'none', got {base!r}", field="base")
        if reduction not in ("mean", "sum", "none"):
            raise LossSpecError(f"unknown reduction {reduction!r}", field="reduction")
        if any(int(h) < 1 for h in hidden):
            raise LossSpecError(
                f"hidden widths must be positive, got {list(hidden)}", field="hidden"
            )
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.base = base
        self.reduction = reduction
        layers: list[nn.Module] = []
        width = len(FEATURES)
        for h in self.hidden:
            layers += [nn.Linear(width, h), _act(activation)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for m in self.net:
                if isinstance(m, nn.Linear):
                    bound = 1.0 / math.sqrt(m.in_features)
                    m.weight.uniform_(-bound, bound, generator=gen)
                    m.bias.uniform_(-bound, bound, generator=gen)
            if base == "ce":
                last = self.net[-1]
                assert isinstance(last, nn.Linear)
                last.weight.zero_()
                last.bias.zero_()

    @property
    def architecture(self) -> dict[str, Any]:
        """Plain-data description (what the JSON spec stores besides the weights)."""
        return {
            "type": "per_class_mlp",
            "features": list(FEATURES),
            "log_p_min": LOG_P_MIN,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "base": self.base,
            "class_reduction": "sum",
        }

    def per_sample(self, input: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss ``(..., B)``."""
        log_p = F.log_softmax(input, dim=-1)
        p = log_p.exp()
        if target.is_floating_point():
            t = target.to(input.dtype)
        else:
            t = F.one_hot(target, input.shape[-1]).to(input.dtype).expand(input.shape)
        h = torch.stack([p, torch.clamp(log_p, min=LOG_P_MIN), t], dim=-1)
        # Layer by layer in the input's dtype: the exported standalone module does exactly this,
        # so both give identical values.
        layers = _layers(self)
        for i, lin in enumerate(layers):
            h = F.linear(h, lin.weight.to(h.dtype), lin.bias.to(h.dtype))
            if i < len(layers) - 1:
                h = _ACT_FN[self.activation](h)
        out = h.squeeze(-1).sum(-1)
        if self.base == "ce":
            out = out - (t * log_p).sum(-1)
        return out

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """The loss with :attr:`reduction` applied."""
        loss = self.per_sample(input, target)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def extra_repr(self) -> str:
        return f"hidden={list(self.hidden)}, base={self.base!r}, reduction={self.reduction!r}"


# ---------------------------------------------------------------------------------------------
# Export / import (data only)


def _layers(loss: NeuralLoss) -> list[nn.Linear]:
    return [m for m in loss.net if isinstance(m, nn.Linear)]


def neural_loss_to_dict(
    loss: NeuralLoss, metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON spec of ``loss``: architecture and weights as nested lists (exact float32)."""
    weights: dict[str, Any] = {}
    for i, lin in enumerate(_layers(loss)):
        # float32 -> Python float is exact, and json writes the shortest round-tripping repr.
        weights[f"layers.{i}.weight"] = lin.weight.detach().float().tolist()
        weights[f"layers.{i}.bias"] = lin.bias.detach().float().tolist()
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": TaskKind.CLASSIFICATION.value,
        "reduction": loss.reduction,
        "architecture": loss.architecture,
        "weights": weights,
        "metadata": dict(metadata or {}),
    }


def _fail(msg: str, field: str) -> LossSpecError:
    return LossSpecError(msg, field=field)


def neural_loss_from_dict(spec: Mapping[str, Any]) -> NeuralLoss:
    """Rebuild a :class:`NeuralLoss` from its JSON spec (validated; data only).

    Raises:
        LossSpecError: naming the field for a wrong schema, version, architecture or weights.
    """
    if not isinstance(spec, Mapping):
        raise _fail("a neural loss spec must be a JSON object", "schema")
    if spec.get("schema") != SCHEMA:
        raise _fail(f"schema must be {SCHEMA!r}, got {spec.get('schema')!r}", "schema")
    version = spec.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise _fail(
            f"unsupported schema_version {version!r} (this loss_rl reads "
            f"{SCHEMA_VERSION}); upgrade loss_rl",
            "schema_version",
        )
    if spec.get("kind", "classification") != "classification":
        raise _fail("neural losses are classification losses", "kind")
    arch = spec.get("architecture")
    if not isinstance(arch, Mapping):
        raise _fail("architecture must be an object", "architecture")
    if arch.get("type", "per_class_mlp") != "per_class_mlp":
        raise _fail(f"unknown architecture type {arch.get('type')!r}", "architecture.type")
    if list(arch.get("features", FEATURES)) != list(FEATURES):
        raise _fail(f"features must be {list(FEATURES)}", "architecture.features")
    if float(arch.get("log_p_min", LOG_P_MIN)) != LOG_P_MIN:
        raise _fail(f"log_p_min must be {LOG_P_MIN}", "architecture.log_p_min")
    hidden = arch.get("hidden", [])
    if not isinstance(hidden, list) or not all(isinstance(h, int) for h in hidden):
        raise _fail("hidden must be a list of integers", "architecture.hidden")
    loss = NeuralLoss(
        hidden,
        str(arch.get("activation", "tanh")),
        arch.get("base", "ce"),
        spec.get("reduction", "mean"),
        seed=None,
    )
    weights = spec.get("weights")
    if not isinstance(weights, Mapping):
        raise _fail("weights must be an object of name -> nested lists", "weights")
    expected = set()
    with torch.no_grad():
        for i, lin in enumerate(_layers(loss)):
            for name, target in (
                (f"layers.{i}.weight", lin.weight),
                (f"layers.{i}.bias", lin.bias),
            ):
                expected.add(name)
                if name not in weights:
                    raise _fail(f"missing weight {name!r}", f"weights.{name}")
                try:
                    value = torch.tensor(weights[name], dtype=torch.float32)
                except (TypeError, ValueError) as err:
                    raise _fail(
                        f"{name} is not a nested list of numbers ({err})", f"weights.{name}"
                    ) from None
                if value.shape != target.shape:
                    raise _fail(
                        f"{name} has shape {list(value.shape)}, expected {list(target.shape)}",
                        f"weights.{name}",
                    )
                if not torch.isfinite(value).all():
                    raise _fail(f"{name} holds non-finite numbers", f"weights.{name}")
                target.copy_(value)
    extra = sorted(set(weights) - expected)
    if extra:
        raise _fail(f"unexpected weights {extra}", f"weights.{extra[0]}")
    return loss


def load_neural_loss(source: str | Path | Mapping[str, Any]) -> NeuralLoss:
    """Load a neural loss from a JSON file path or an already parsed spec.

    Raises:
        LossSpecError: for an invalid file or spec.
    """
    if isinstance(source, Mapping):
        return neural_loss_from_dict(source)
    path = Path(source)
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LossSpecError(f"cannot read neural loss spec {path}: {err}", field="path") from None
    return neural_loss_from_dict(spec)


def export_neural_loss(
    loss: NeuralLoss,
    path: str | Path,
    format: Literal["json", "py"] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``loss`` as a JSON spec or a standalone ``.py`` module.

    Args:
        loss: The neural loss.
        path: Output file.
        format: ``json`` or ``py``; inferred from the suffix when omitted.
        metadata: Free-form plain data stored with the spec (training provenance, scores).

    Returns:
        The path written.
    """
    path = Path(path)
    fmt = format or path.suffix.lstrip(".")
    if fmt not in ("json", "py"):
        raise LossSpecError(f"unknown format {fmt!r}; use 'json' or 'py'", field="format")
    spec = neural_loss_to_dict(loss, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        path.write_text(json.dumps(spec, indent=1) + "\n")
    else:
        path.write_text(neural_loss_source(spec))
    return path


def _lit(value: Any) -> str:
    # Numbers as repr(float) (exact round trip); structures as Python literals of numbers.
    if isinstance(value, list):
        return "[" + ", ".join(_lit(v) for v in value) + "]"
    return repr(float(value))


def neural_loss_source(spec: Mapping[str, Any]) -> str:
    """Standalone Python source of a neural loss spec (imports only ``torch``).

    The generated numbers come from validated weights only (the spec is rebuilt first), so no
    text of the spec reaches the file.
    """
    loss = neural_loss_from_dict(spec)
    arch = loss.architecture
    layer_lines = []
    for lin in _layers(loss):
        w = _lit(lin.weight.detach().float().tolist())
        b = _lit(lin.bias.detach().float().tolist())
        layer_lines.append(f"    ({w},\n     {b}),")
    layers = "\n".join(layer_lines)
    act = {
        "tanh": "torch.tanh(h)",
        "relu": "torch.relu(h)",
        "softplus": "torch.nn.functional.softplus(h)",
        "elu": "torch.nn.functional.elu(h)",
    }[loss.activation]
    base = "out = out - (t * log_p).sum(-1)\n        " if loss.base == "ce" else ""
    hidden = ", ".join(str(h) for h in arch["hidden"])
    formula = (
        "-sum_c t_c log p_c + sum_c g(p_c, max(log p_c, -30), t_c)"
        if loss.base == "ce"
        else "sum_c g(p_c, max(log p_c, -30), t_c)"
    )
    return f'''r"""A meta-learned neural classification loss (ML3-style), exported by loss_rl.

Per sample, with p = softmax(input) and t the one-hot (or soft) target::

    loss = {formula}

where g is an MLP ({len(FEATURES)} -> {hidden} -> 1, {loss.activation}) shared by all classes.
Bechtle et al., "Meta Learning via Learned Loss" (ML3), ICPR 2021. This file imports only torch;
the weights are embedded below as plain lists.

Example::

    import torch
    from loss import DiscoveredLoss
    criterion = DiscoveredLoss()
    loss = criterion(torch.randn(8, 10, requires_grad=True), torch.randint(0, 10, (8,)))
    loss.backward()
"""

import torch

LOG_P_MIN = {LOG_P_MIN!r}

# (weight, bias) of each linear layer of g, as torch.nn.Linear stores them.
_LAYERS = [
{layers}
]


class DiscoveredLoss(torch.nn.Module):
    r"""Meta-learned loss: ``{formula}``.

    Args:
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` over the batch.

    Shape:
        - input: logits ``(..., B, C)``; target: ``(..., B)`` int64 or ``(..., B, C)`` soft.
        - output: scalar, or ``(..., B)`` with ``reduction='none'``.
    """

    def __init__(self, reduction: str = "{loss.reduction}") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"unknown reduction {{reduction!r}}")
        self.reduction = reduction
        self.n_layers = len(_LAYERS)
        for i, (w, b) in enumerate(_LAYERS):
            self.register_buffer(f"w{{i}}", torch.tensor(w, dtype=torch.float32))
            self.register_buffer(f"b{{i}}", torch.tensor(b, dtype=torch.float32))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(input, dim=-1)
        p = log_p.exp()
        if target.is_floating_point():
            t = target.to(input.dtype)
        else:
            t = torch.nn.functional.one_hot(target, input.shape[-1]).to(input.dtype)
            t = t.expand(input.shape)
        h = torch.stack([p, torch.clamp(log_p, min=LOG_P_MIN), t], dim=-1)
        for i in range(self.n_layers):
            w = getattr(self, f"w{{i}}").to(h.dtype)
            b = getattr(self, f"b{{i}}").to(h.dtype)
            h = torch.nn.functional.linear(h, w, b)
            if i < self.n_layers - 1:
                h = {act}
        out = h.squeeze(-1).sum(-1)
        {base}if self.reduction == "mean":
            return out.mean()
        if self.reduction == "sum":
            return out.sum()
        return out
'''
