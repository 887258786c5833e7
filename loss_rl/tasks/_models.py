"""Model specs as plain single-model ``torch.nn`` modules.

These modules are the reference semantics: the batched trainer stacks the parameters of exactly
these modules (built with the same seed) and must reproduce their training.

Initialisation follows PyTorch's defaults for ``nn.Linear`` / ``nn.Conv1d`` (weights and biases
uniform in ``±1/sqrt(fan_in)``) but draws from a private generator seeded by ``seed``, so building
a model never touches the global RNG.

A ``module`` model is whatever its factory (``task.model.factory``) builds: :func:`load_factory`
imports it — here, and only when a model is built, never when a config is read (see
:attr:`ModelConfig.runs_code`) — and :func:`build_model` calls it under a forked, seeded CPU RNG
and checks what comes back.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from loss_rl.errors import ConfigError
from loss_rl.tasks._config import MAX_MODEL_PARAMS, ModelConfig, split_factory

_FACTORY = "task.model.factory"
#: ``.py`` factory files already run in this process: (resolved path, mtime) -> module. Each
#: model of a population is built by its own factory call; the file runs once.
_FILE_MODULES: dict[tuple[str, int], ModuleType] = {}

#: Activation name -> module factory (``leaky_relu`` uses torch's default slope 0.01).
ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}


class _ToSequence(nn.Module):
    """``[B, L]`` features -> ``[B, 1, L]`` one-channel sequence."""

    def forward(self, x: Tensor) -> Tensor:
        return x.unsqueeze(-2)


class _Squeeze(nn.Module):
    """``[B, 1]`` regression output -> ``[B]`` prediction."""

    def forward(self, x: Tensor) -> Tensor:
        return x.squeeze(-1)


def conv_lengths(spec: ModelConfig, length: int) -> list[int]:
    """Sequence length after each convolution of a ``cnn1d`` spec, starting with ``length``.

    Raises:
        ConfigError: if a convolution would produce an empty sequence.
    """
    out = [length]
    for i, k in enumerate(spec.kernel_sizes):
        nxt = (out[-1] + 2 * spec.padding - k) // spec.stride + 1
        if nxt < 1:
            raise ConfigError(
                f"convolution {i} (kernel {k}, stride {spec.stride}, padding {spec.padding}) "
                f"gets a sequence of length {out[-1]} and leaves nothing; use fewer or smaller "
                "convolutions",
                field=f"task.model.kernel_sizes[{i}]",
            )
        out.append(nxt)
    return out


def build_model(
    spec: ModelConfig, num_features: int, num_outputs: int, seed: int | None = None
) -> nn.Module:
    """Build the single model described by ``spec``.

    A ``module`` model is built by ``spec.factory(num_features, num_outputs, **spec.kwargs)``
    (imported by :func:`load_factory`): with a ``seed``, under :func:`torch.random.fork_rng`
    with the CPU generator seeded, so the caller's random stream is left untouched and the same
    seed gives the same initialisation. The result is checked: an ``nn.Module`` with float32
    CPU parameters, at most :data:`~loss_rl.tasks._config.MAX_MODEL_PARAMS` of them, whose
    output on a probe batch of two rows of zeros (run on its own mode, without gradients; its
    state is restored after) is a float32 ``[2, num_outputs]`` (regression: ``[2, 1]`` or
    ``[2]``). The module itself is returned, so its ``state_dict`` keys are the factory's; a
    ``[B, 1]`` regression output is squeezed to ``[B]`` by a forward hook.

    Args:
        spec: Model configuration.
        num_features: Input features (the sequence length for ``cnn1d``).
        num_outputs: Classes, or 1 for regression (the output is then squeezed to ``[B]``).
        seed: Initialisation seed; ``None`` draws from the global torch RNG.

    Returns:
        A module mapping ``[B, num_features]`` to logits ``[B, num_outputs]`` (or predictions
        ``[B]`` when ``num_outputs == 1``): an ``nn.Sequential`` for the built-in kinds.

    Raises:
        ConfigError: for impossible sizes; for a ``module``, naming ``task.model.factory``, when
            the factory cannot be imported (see :func:`load_factory`), raises, returns something
            else than a module, builds too many parameters or parameters that are not float32
            on the CPU, or when the module fails on the probe batch or returns the wrong shape.
    """
    if num_features < 1 or num_outputs < 1:
        raise ConfigError(
            f"a model needs at least one input and one output (got {num_features}, {num_outputs})",
            field="task.model",
        )
    if spec.kind == "module":
        return _build_module(spec, num_features, num_outputs, seed)
    # nn.Linear / nn.Conv1d initialise themselves from the global RNG on construction: build
    # inside a fork so that building a model never moves the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        model = _layers(spec, num_features, num_outputs)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                m.weight.uniform_(-bound, bound, generator=generator)
                m.bias.uniform_(-bound, bound, generator=generator)
    return model


def _layers(spec: ModelConfig, num_features: int, num_outputs: int) -> nn.Sequential:
    act = ACTIVATION_MODULES[spec.activation]
    layers: list[nn.Module] = []
    if spec.kind == "cnn1d":
        lengths = conv_lengths(spec, num_features)
        layers.append(_ToSequence())
        c_in = 1
        for c_out, k in zip(spec.channels, spec.kernel_sizes, strict=True):
            layers += [nn.Conv1d(c_in, c_out, k, stride=spec.stride, padding=spec.padding), act()]
            c_in = c_out
        layers += [nn.Flatten(), nn.Linear(c_in * lengths[-1], num_outputs)]
    else:
        width = num_features
        for h in spec.hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        layers.append(nn.Linear(width, num_outputs))
    if num_outputs == 1:
        layers.append(_Squeeze())
    return nn.Sequential(*layers)


def load_factory(factory: str) -> Callable[..., Any]:
    """Import the callable that ``factory`` names (the ``factory`` of a ``module`` model).

    This runs the code of the module or file: call it only for a config the user trusts (see
    :attr:`ModelConfig.runs_code`).

    Args:
        factory: ``"package.module:function"`` (imported with :func:`importlib.import_module`)
            or ``"path/to/file.py:function"`` (a path relative to the current directory, or
            absolute; the file runs once per process and modification time, as a module of
            its own). The function may be a dotted attribute (``Class.method``).

    Returns:
        The callable.

    Raises:
        ConfigError: naming ``task.model.factory`` for a malformed name, a module that is not
            found, a file that does not exist, a module or file that raises when run, a
            missing attribute, or an attribute that is not callable.
    """
    parts = split_factory(factory)
    if parts is None:
        raise ConfigError(
            f"expected 'package.module:function' or 'path/to/file.py:function', got {factory!r}",
            field=_FACTORY,
        )
    target, attr = parts
    module = _run_file(target) if target.endswith(".py") else _import(target)
    obj: Any = module
    for i, name in enumerate(attr.split(".")):
        if not hasattr(obj, name):
            where = target if i == 0 else f"{target}:{'.'.join(attr.split('.')[:i])}"
            raise ConfigError(f"{where} has no attribute {name!r}", field=_FACTORY)
        obj = getattr(obj, name)
    if not callable(obj):
        raise ConfigError(
            f"{factory} is not callable (it is {type(obj).__name__!r}); name the function that "
            "builds the model",
            field=_FACTORY,
        )
    return obj


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or name
        what = (
            f"module {name!r} not found"
            if name == missing or name.startswith(f"{missing}.")
            else f"module {name!r} imports {missing!r}, which is not found"
        )
        raise ConfigError(
            f"{what}; is it installed, or on the path (PYTHONPATH)? A file is named "
            "'path/to/file.py:function'",
            field=_FACTORY,
        ) from exc
    except Exception as exc:
        raise ConfigError(
            f"importing module {name!r} raised {type(exc).__name__}: {exc}", field=_FACTORY
        ) from exc


def _run_file(target: str) -> ModuleType:
    path = Path(target)
    if not path.is_file():
        raise ConfigError(
            f"file not found: {target} (a relative path is taken from the current directory, "
            f"{Path.cwd()})",
            field=_FACTORY,
        )
    resolved = path.resolve()
    key = (str(resolved), resolved.stat().st_mtime_ns)
    if key in _FILE_MODULES:
        return _FILE_MODULES[key]
    # A name of its own per file, registered in sys.modules while it runs, so that the file's
    # classes and dataclasses find their module, and two files called model.py do not collide.
    name = f"_loss_rl_factory_{hashlib.sha1(key[0].encode()).hexdigest()[:16]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise ConfigError(f"cannot load {target} as Python source", field=_FACTORY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(
            f"running {target} raised {type(exc).__name__}: {exc}", field=_FACTORY
        ) from exc
    _FILE_MODULES[key] = module
    return module


def _squeeze_output(module: nn.Module, args: Any, output: Tensor) -> Tensor:
    """Forward hook: a ``[B, 1]`` regression output -> ``[B]`` predictions."""
    return output.squeeze(-1)


def _build_module(
    spec: ModelConfig, num_features: int, num_outputs: int, seed: int | None
) -> nn.Module:
    assert spec.factory is not None  # ModelConfig requires it for kind 'module'
    factory = load_factory(spec.factory)
    kwargs = copy.deepcopy(spec.kwargs)  # the factory must not change the config's values
    call = f"{spec.factory}({num_features}, {num_outputs}{f', **{kwargs!r}' if kwargs else ''})"

    def make() -> Any:
        try:
            return factory(num_features, num_outputs, **kwargs)
        except Exception as exc:
            raise ConfigError(f"{call} raised {type(exc).__name__}: {exc}", field=_FACTORY) from exc

    if seed is None:
        model = make()
    else:
        # Only the CPU generator is seeded (torch.manual_seed would also reseed CUDA's, outside
        # the fork): the models are float32 CPU modules.
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            model = make()
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{call} returned a {type(model).__name__}, not a torch.nn.Module", field=_FACTORY
        )
    for name, p in model.named_parameters():
        if nn.parameter.is_lazy(p):
            raise ConfigError(
                f"parameter {name!r} is lazy (an nn.Lazy* module): give its sizes when building "
                "it (the factory receives num_features and num_outputs)",
                field=_FACTORY,
            )
        if p.dtype != torch.float32 or p.device.type != "cpu":
            raise ConfigError(
                f"parameter {name!r} is {p.dtype} on {p.device}; the trainer needs float32 "
                "parameters on the CPU (do not call .double() / .to(device) in the factory)",
                field=_FACTORY,
            )
    size = sum(p.numel() for p in model.parameters())
    if size > MAX_MODEL_PARAMS:
        raise ConfigError(
            f"{call} built {size:,} parameters; the cap is {MAX_MODEL_PARAMS:,} "
            "(MAX_MODEL_PARAMS): build a smaller model",
            field=_FACTORY,
        )
    if _probe(model, call, num_features, num_outputs) == (2, 1):
        model.register_forward_hook(_squeeze_output)
    return model


def _probe(model: nn.Module, call: str, num_features: int, num_outputs: int) -> tuple[int, ...]:
    """Check once, on two rows of zeros, that the model maps inputs to outputs of the task.

    The probe leaves no trace: its random draws (dropout) happen in a fork, and what a forward
    pass changes in place (batch-norm statistics) is put back. Returns the output's shape.
    """
    state = {
        k: v.clone() if isinstance(v, Tensor) else copy.deepcopy(v)
        for k, v in model.state_dict().items()
    }
    batch = f"a probe batch [2, {num_features}] of zeros"
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            out = model(torch.zeros(2, num_features))
    except Exception as exc:
        raise ConfigError(
            f"the model of {call} raised {type(exc).__name__} on {batch}: {exc}", field=_FACTORY
        ) from exc
    finally:
        model.load_state_dict(state)
    where = f"the model of {call} maps {batch} to"
    if not isinstance(out, Tensor):
        raise ConfigError(f"{where} a {type(out).__name__}, not a tensor", field=_FACTORY)
    if out.dtype != torch.float32:
        raise ConfigError(f"{where} a {out.dtype} tensor; expected float32", field=_FACTORY)
    wanted = [(2, num_outputs)] + ([(2,)] if num_outputs == 1 else [])
    shape = tuple(out.shape)
    if shape not in wanted:
        expected = " or ".join(str(list(w)) for w in wanted)
        raise ConfigError(
            f"{where} {list(shape)}; expected {expected} ({num_outputs} output(s) per row)",
            field=_FACTORY,
        )
    return shape
