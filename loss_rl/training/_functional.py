"""A population of ``N`` copies of any ``torch.nn.Module``, trained together with ``torch.func``.

The ``module`` model kind (``task.model.factory``) trains whatever module a factory builds. Its
copies cannot be differentiated by hand like the built-in kinds
(:class:`~loss_rl.training._population.StackedModel`); instead they follow PyTorch's
model-ensembling recipe: the parameters of the ``N`` copies are stacked along a leading model
dimension (:func:`torch.func.stack_module_state`) and one stateless copy of the module is run
by :func:`torch.func.functional_call` under :func:`torch.func.vmap`, so that a step is still one
batched forward and one ``torch.autograd.grad`` for the whole population. The class has the
interface of :class:`~loss_rl.training._population.StackedModel` (:class:`PopulationModel`), so
the trainer's optimiser, divergence checks, freezing and checkpoint selection work unchanged.

What works under ``vmap`` here (torch 2.13; ``tests/training/test_functional.py`` checks it):

* **Parameters** are trained: each copy exactly as the plain module under its own
  ``torch.optim`` optimiser (float rounding aside). Parameters with ``requires_grad=False``
  are constants, as they are for ``torch.optim``. A parameter that does not reach the output
  gets a zero gradient (``torch.optim`` skips it; they differ only with ``weight_decay``).
* **Buffers** are passed to ``functional_call`` read-only, one stacked copy per model. A module
  that changes a buffer in place during its training forward pass is refused.
* **BatchNorm in training mode is refused** (a :class:`~loss_rl.errors.ConfigError` naming
  ``task.model.factory``). Under ``vmap`` its in-place running-statistics update does in fact
  run on the stacked buffers, but the trainer checkpoints, freezes and restores parameters only,
  so the statistics would escape checkpoint selection and divergence freezing; and with
  ``track_running_stats=False`` a row's output depends on the rows evaluated with it (the
  evaluation chunks), which makes a validation score depend on the population size. Use
  ``nn.LayerNorm`` or ``nn.GroupNorm`` (per-sample statistics; both work under ``vmap``), or
  put the BatchNorm in eval mode in the factory (fixed statistics: a read-only affine map).
  ``InstanceNorm`` works, except with ``track_running_stats=True`` in training mode (refused).
* **Dropout** (and any random op) runs with ``vmap(..., randomness="different")``: every copy
  draws its own mask, from a private generator seeded by ``rng_seed`` (the global torch RNG is
  left untouched). The masks depend on the population (its size and the copy's position), so a
  copy trained here does not reproduce a single-model run draw for draw: exact equivalence
  with :func:`~loss_rl.training.train_reference` holds only for modules without randomness.
* **Modes**: training runs the module in the modes the factory left it in (``train()`` by
  default); evaluation (:meth:`FunctionalModel.forward`) runs a copy in ``eval()`` mode under
  ``torch.no_grad()`` (dropout off). The plain reference loop evaluates in training mode, which
  is the same for modules whose two modes agree (those without dropout).

Everything is float32, like the rest of the trainer, on the trainer's device: the copies are
built on the CPU by the factory, stacked there, then moved. On a GPU, random ops draw from a
private CUDA generator state instead (seeded by ``rng_seed`` too, but a different stream from
the CPU's, so dropout masks differ between devices).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from loss_rl.errors import ConfigError
from loss_rl.tasks import ModelConfig, build_model
from loss_rl.training._device import host_copy
from loss_rl.training._population import PopulationModel, StackedModel

_FACTORY = "task.model.factory"
#: Activations (model outputs of every layer, summed over the ``N`` copies) per evaluation
#: chunk: the budget of the trainer's own chunking, applied with the module's measured widest
#: layer instead of the spec's widths.
_EVAL_CHUNK_ELEMENTS = 1 << 22
_NORMS = nn.modules.batchnorm


def _refuse_unsupported(module: nn.Module, num_features: int) -> None:
    """Raise a ConfigError for what the batched module path cannot train (see the module doc)."""
    for name, m in module.named_modules():
        what = f"{type(m).__name__} {name!r}" if name else type(m).__name__
        if isinstance(m, _NORMS._BatchNorm) and m.training:
            raise ConfigError(
                f"{what} is in training mode: batch normalisation cannot be trained in the "
                "batched trainer (its running statistics would escape checkpoint selection; "
                "without them, outputs depend on the rows evaluated together). Use "
                "nn.LayerNorm or nn.GroupNorm, or call .eval() on it in the factory (fixed "
                "statistics)",
                field=_FACTORY,
            )
        if isinstance(m, _NORMS._NormBase) and m.track_running_stats and m.training:
            raise ConfigError(
                f"{what} tracks running statistics in training mode, which the batched trainer "
                "cannot update per model; use track_running_stats=False",
                field=_FACTORY,
            )
    # Anything else that writes a buffer during the forward pass (a custom counter, a
    # running average): the stacked buffers are read-only here.
    probe = copy.deepcopy(module)
    before = {k: v.clone() for k, v in probe.named_buffers()}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        probe(torch.zeros(2, num_features))
    for k, v in probe.named_buffers():
        if k not in before or not torch.equal(before[k], v):
            raise ConfigError(
                f"the module changes its buffer {k!r} during the forward pass; the batched "
                "trainer passes buffers read-only (register it as a parameter, or compute it "
                "outside the module)",
                field=_FACTORY,
            )


def _widest(module: nn.Module, num_features: int) -> int:
    """Largest number of values any submodule outputs per input row (for eval chunking)."""
    probe = copy.deepcopy(module).eval()
    widest = [num_features]

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, Tensor) and out.dim() > 0:
            widest.append(out.numel() // 2)

    handles = [m.register_forward_hook(hook) for m in probe.modules()]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            probe(torch.zeros(2, num_features))
    finally:
        for h in handles:
            h.remove()
    return max(widest)


class FunctionalModel:
    """``N`` copies of a ``module`` model trained together (``vmap`` over ``functional_call``).

    Parameter ``k`` of model ``i`` is ``params[k][i]``: the ``k``-th trainable parameter of the
    plain module (order of ``named_parameters``), with the plain module's shape.

    Args:
        spec: The model spec (``kind: module``).
        num_features: Inputs per sample.
        num_outputs: Classes, or 1 for regression (outputs are then ``[N, B]``).
        inits: Initialised plain modules (see :func:`loss_rl.tasks.build_model`), one factory.
        init_of_model: For each of the ``N`` models, the index of its module in ``inits``.
        rng_seed: Seed of the private generator of random ops (dropout) in training.
        device: Where the stacked parameters, constants and gradients live (``None``: the CPU);
            inputs must be there too.

    Raises:
        ConfigError: naming ``task.model.factory`` for a module the batched path cannot train
            (batch normalisation in training mode, a buffer written by the forward pass, no
            trainable parameter) or copies that differ in structure.
    """

    def __init__(
        self,
        spec: ModelConfig,
        num_features: int,
        num_outputs: int,
        inits: Sequence[nn.Module],
        init_of_model: Sequence[int],
        rng_seed: int = 0,
        device: torch.device | None = None,
    ) -> None:
        self.spec = spec
        self.device = torch.device("cpu") if device is None else device
        self.num_features = num_features
        self.num_outputs = num_outputs
        self.n = len(init_of_model)
        first = inits[0]
        _refuse_unsupported(first, num_features)
        shapes = [(k, v.shape) for k, v in first.state_dict().items() if isinstance(v, Tensor)]
        for m in inits[1:]:
            other = [(k, v.shape) for k, v in m.state_dict().items() if isinstance(v, Tensor)]
            if type(m) is not type(first) or other != shapes:
                raise ConfigError(
                    "the factory built modules of different structure for different seeds; "
                    "the batched trainer needs one architecture (draw only the values at "
                    "random)",
                    field=_FACTORY,
                )
        try:
            stacked, buffers = stack_module_state(list(inits))
        except RuntimeError as exc:  # e.g. copies left in different train/eval modes
            raise ConfigError(f"cannot stack the copies: {exc}", field=_FACTORY) from exc
        index = torch.as_tensor(list(init_of_model), dtype=torch.long)

        def per_model(t: Tensor) -> Tensor:
            # Selected on the CPU, where the factory built the copies, then moved (a no-op on
            # the CPU); parameters are moved before requires_grad_ so they stay autograd leaves.
            return t.detach().index_select(0, index).contiguous().to(self.device)

        trainable = {k for k, p in first.named_parameters() if p.requires_grad}
        #: Names of the trained parameters, in the order of :attr:`params`.
        self.names = [k for k in stacked if k in trainable]
        if not self.names:
            raise ConfigError(
                "the module has no trainable parameters (none with requires_grad=True)",
                field=_FACTORY,
            )
        self.params: list[Tensor] = [per_model(stacked[k]).requires_grad_(True) for k in self.names]
        # Frozen parameters and buffers: constants of every copy, passed read-only.
        self.constants: dict[str, Tensor] = {
            k: per_model(v) for k, v in {**stacked, **buffers}.items() if k not in trainable
        }
        self.grads: list[Tensor] = [torch.zeros_like(p) for p in self.params]
        self.num_params = sum(p[0].numel() for p in self.params)
        # Stateless copies of the module (parameters on the meta device: functional_call
        # supplies them): one in the factory's modes for training, one in eval mode.
        self._train_module = copy.deepcopy(first).to("meta")
        self._eval_module = copy.deepcopy(self._train_module).eval()
        self._state_keys = [k for k, v in first.state_dict().items() if isinstance(v, Tensor)]
        # state_dict keys of tied parameters -> the name named_parameters gives them
        self._alias: dict[str, str] = {}
        for named in (first.named_parameters, first.named_buffers):
            canonical = {id(t): k for k, t in named()}
            self._alias.update({k: canonical[id(t)] for k, t in named(remove_duplicate=False)})
        self._eval_rows = max(1, _EVAL_CHUNK_ELEMENTS // (self.n * _widest(first, num_features)))
        # Random ops run on the device of their tensors, so the private stream is that device's
        # generator state: the CPU's, or the GPU's (its own format, restored there).
        self._rng_index: int | None = None
        if self.device.type == "cuda":
            self._rng_index = (
                torch.cuda.current_device() if self.device.index is None else self.device.index
            )
        gen_device = self.device if self._rng_index is None else f"cuda:{self._rng_index}"
        self._rng = torch.Generator(device=gen_device).manual_seed(rng_seed).get_state()
        self._z: Tensor | None = None

    # ------------------------------------------------------------------ calls
    @contextmanager
    def _private_rng(self) -> Iterator[None]:
        """Run random ops on this population's own stream; the global RNG is left untouched."""
        if self._rng_index is None:
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(self._rng)
                yield
                self._rng = torch.get_rng_state()
            return
        # On a GPU, fork (save and restore) that GPU's generator as well as the CPU's.
        with torch.random.fork_rng(devices=[self._rng_index], device_type="cuda"):
            torch.cuda.set_rng_state(self._rng, self._rng_index)
            yield
            self._rng = torch.cuda.get_rng_state(self._rng_index)

    def _call(self, module: nn.Module, params: Sequence[Tensor], x: Tensor) -> Tensor:
        def one(p: dict[str, Tensor], c: dict[str, Tensor], xi: Tensor) -> Tensor:
            return functional_call(module, (p, c), (xi,))

        # Inputs shared by every model (an expanded view) are passed once, unbatched.
        shared = x.shape[0] > 1 and x.stride(0) == 0
        run = vmap(one, in_dims=(0, 0, None if shared else 0), randomness="different")
        return run(
            dict(zip(self.names, params, strict=True)), self.constants, x[0] if shared else x
        )

    def forward(self, x: Tensor, params: Sequence[Tensor] | None = None) -> Tensor:
        """Evaluation outputs of all models: eval mode, no gradients, chunked over rows.

        Args:
            x: Inputs ``[N, B, F]`` (an expanded view is fine when all models share them).
            params: Parameter tensors to use instead of the live ones.

        Returns:
            Logits ``[N, B, C]``, or predictions ``[N, B]`` for one output.
        """
        ps = self.params if params is None else params
        rows = self._eval_rows
        with torch.no_grad(), self._private_rng():
            outs = [
                self._call(self._eval_module, ps, x[:, i : i + rows])
                for i in range(0, x.shape[1], rows)
            ]
        return torch.cat(outs, 1)

    def train_forward(self, x: Tensor) -> Tensor:
        """Training-mode forward pass of all models; keeps the graph for :meth:`train_backward`.

        Args:
            x: Each model's minibatch ``[N, B, F]``.

        Returns:
            Detached outputs ``[N, B, C]`` (``[N, B]`` for one output).
        """
        with torch.enable_grad(), self._private_rng():
            z = self._call(self._train_module, self.params, x)
        self._z = z
        return z.detach()

    def train_backward(self, dz: Tensor) -> list[Tensor]:
        """Gradients of every parameter for output gradient ``dz`` (written to :attr:`grads`).

        Args:
            dz: ``dL/dZ`` of every model, shape of the last :meth:`train_forward` output.

        Returns:
            :attr:`grads`: one ``[N, ...]`` tensor per parameter, in the order of :attr:`params`.
        """
        assert self._z is not None
        grads = torch.autograd.grad(self._z, self.params, dz, allow_unused=True)
        for buf, g in zip(self.grads, grads, strict=True):
            if g is None:  # the parameter does not reach the output
                buf.zero_()
            else:
                buf.copy_(g)
        self._z = None
        return self.grads

    # ------------------------------------------------------------------ single models
    def state_dict(self, i: int) -> dict[str, Tensor]:
        """Parameters and buffers of model ``i`` in the layout of the plain module's
        ``state_dict`` (copies, on the CPU whatever the population's device)."""
        live = dict(zip(self.names, self.params, strict=True))
        out: dict[str, Tensor] = {}
        for k in self._state_keys:
            name = self._alias.get(k, k)
            t = live[name] if name in live else self.constants[name]
            out[k] = host_copy(t.detach()[i])
        return out

    def module(self, i: int) -> nn.Module:
        """Model ``i`` as a plain module (e.g. to export or inspect it); runs the factory."""
        m = build_model(self.spec, self.num_features, self.num_outputs, seed=0)
        m.load_state_dict(self.state_dict(i))
        return m


def build_population(
    spec: ModelConfig,
    num_features: int,
    num_outputs: int,
    inits: Sequence[nn.Module],
    init_of_model: Sequence[int],
    rng_seed: int = 0,
    device: torch.device | None = None,
) -> PopulationModel:
    """The population of ``N`` models of ``spec`` that the trainer trains.

    Built-in kinds get the hand-differentiated :class:`StackedModel`; ``module`` models a
    :class:`FunctionalModel`.

    Args:
        spec: The model spec.
        num_features: Inputs per sample.
        num_outputs: Classes, or 1 for regression.
        inits: Initialised plain modules (see :func:`loss_rl.tasks.build_model`).
        init_of_model: For each of the ``N`` models, the index of its module in ``inits``.
        rng_seed: Seed of the random ops (dropout) of a ``module`` model.
        device: Where the population lives (``None``: the CPU). The ``inits`` are CPU modules;
            their parameters are stacked there and moved.

    Raises:
        ConfigError: for a module the batched path cannot train (see :class:`FunctionalModel`).
    """
    if spec.kind == "module":
        return FunctionalModel(
            spec, num_features, num_outputs, inits, init_of_model, rng_seed, device
        )
    return StackedModel(spec, num_features, num_outputs, inits, init_of_model, device)
