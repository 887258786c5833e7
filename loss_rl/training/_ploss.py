"""Per-model losses and their gradients for a whole population of models in a few tensor ops.

The batched trainer needs, at every step, each model's loss *and* ``dL/dZ`` for the stacked
model outputs ``Z`` (logits ``[N, B, C]`` or predictions ``[N, B]``). Calling each candidate's
compiled loss under autograd costs ~20 µs per node per step (autograd bookkeeping on tiny
tensors dominates). :class:`PopulationLoss` instead

* computes the shared leaves (``log_p``, ``p``, ``log_p_y``, ``p_y``, ``t``) once for all ``N``
  models, and backpropagates into ``Z`` once, with closed forms;
* groups candidates whose trees have the same *structure* (constants may differ, e.g. GCE with
  q = 0.5 and q = 0.7) and evaluates each group in one pass, the constants being ``[G, 1]``
  tensors;
* compiles each group's trees to straight-line Python (forward pass, then a hand-written
  backward pass: no autograd graph, no interpreter loop), folding constant subtrees once and
  sharing repeated subtrees; guards (``exp`` clamp, protected ``log``/``sqrt``/division) take
  their masked path only when a guard is actually active (:mod:`loss_rl.training._program`);
* splices all groups into one generated function per batch size, so a step costs one Python
  call (:mod:`loss_rl.training._fuse`). The generated source is assembled only from fixed
  operator templates and generated local names (``v3``, ``g3_1``, ...); constants enter through
  the namespace as tensors, never as text. No text of a loss spec or of a user ever reaches
  ``exec``: specs are parsed into validated trees by :func:`loss_rl.expr.parse` first.
  If the generated function raises, the groups run one by one and a failing group's models get
  NaN losses (the trainer marks them diverged) while the others are unaffected.

Semantics are those of :func:`loss_rl.expr.compile_loss` (same guards, same special cases for
``log(p)``, ``log(p_y)`` and integer powers — decided by the compiler's own
``integer_exponent`` — and the same gradients, including at clamps and ties);
``tests/training/test_ploss.py`` checks values and gradients against it on the known losses and
on random expressions. Values agree to float rounding (``p`` is ``exp(log_p)`` here, torch's
softmax there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from loss_rl.expr import Expr, TaskKind
from loss_rl.training._fuse import fuse_programs
from loss_rl.training._program import GRAD_LEAVES, Program, ProgramBuilder, structure

logger = logging.getLogger(__name__)


class _Broken(Exception):
    """Internal: skip a group whose evaluation raised before."""


@dataclass(frozen=True)
class LossEval:
    """Result of one population loss evaluation.

    Attributes:
        loss: Per-model mean loss ``[N]`` (may hold NaN/inf for broken models).
        grad: ``dL_i/dZ_i`` for every model, same shape as ``Z``.
    """

    loss: Tensor
    grad: Tensor


class PopulationLoss:
    """Evaluate many loss expressions, each on its own slice of a population, with gradients.

    Models are laid out group by group: :attr:`order` lists the candidate indices in that
    layout; each candidate owns ``reps`` consecutive models (one per seed).

    Args:
        exprs: Candidate loss expressions (already validated for ``kind``).
        reps: Models per candidate (paired seeds).
        kind: Task kind.
        num_classes: Number of classes (classification).
        dtype: Floating type of the model outputs (constants are stored in it).
        device: Device of the model outputs; the compiled programs' constants, the gradient
            seeds and the fillers live there (``None``: the CPU).
    """

    def __init__(
        self,
        exprs: Sequence[Expr],
        reps: int,
        kind: TaskKind,
        num_classes: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | None = None,
    ) -> None:
        self.kind = TaskKind(kind)
        self.device = torch.device("cpu") if device is None else device
        self.reps = reps
        self.num_classes = num_classes or 1
        groups: dict[str, list[int]] = {}
        for idx, e in enumerate(exprs):
            groups.setdefault(structure(e), []).append(idx)
        self.order: list[int] = [i for members in groups.values() for i in members]
        self.programs: list[tuple[int, Program]] = []
        start = 0
        for members in groups.values():
            prog = ProgramBuilder(
                [exprs[i] for i in members], reps, self.num_classes, dtype, self.device
            ).build()
            self.programs.append((start, prog))
            start += prog.size
        self.size = start
        self._sizes = [prog.size for _, prog in self.programs]
        self.leaves: set[str] = set()
        for _, prog in self.programs:
            self.leaves |= set(prog.leaf_names)
        self._inv_b: dict[int, Tensor] = {}
        self.broken: set[int] = set()  # groups whose evaluation raised (their models diverge)
        self._fillers: dict[tuple[object, ...], Tensor] = {}
        self._seeds: dict[tuple[int, int], Tensor] = {}
        self._grad_leaves = sorted(self.leaves & GRAD_LEAVES)
        self._leaf_order = sorted(self.leaves)
        self._fused: dict[int, Callable[..., tuple[Tensor, list[Tensor]]]] = {}
        self.source = ""  # of the last fused function (for inspection)
        self.fused_failures = 0  # calls that fell back to the group-by-group path

    @property
    def num_groups(self) -> int:
        """Number of structure groups (one interpreter pass each per step)."""
        return len(self.programs)

    def _leaf_values(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        need = self.leaves
        out: dict[str, Tensor] = {}
        if self.kind is TaskKind.REGRESSION:
            out["pred"] = z
            out["target"] = y.to(z.dtype)
            if "residual" in need:
                out["residual"] = z - out["target"]
            return out
        out["z"] = z
        if need & {"log_p", "p", "log_p_y", "p_y"}:
            # One kernel: with torch 2.13 it beats the five-op form by hand at every population
            # size measured here on the CPU (N × 128 × 10, one thread: 14 vs 45 µs at N = 2,
            # 375 vs 602 µs at N = 68).
            log_p = torch.log_softmax(z, -1)
            p = log_p.exp()
            out["log_p"], out["p"] = log_p, p
            if need & {"log_p_y", "p_y"}:
                log_p_y = log_p.gather(-1, y.unsqueeze(-1)).squeeze(-1)
                out["log_p_y"], out["p_y"] = log_p_y, log_p_y.exp()
        if "t" in need:
            # One-hot by scatter: half the cost of comparing with ``arange`` (two ops, not four).
            if y.dim() == 2 and y.stride(0) == 0:  # one target row shared by all models
                row = z.new_zeros(*z.shape[1:]).scatter_(-1, y[0].unsqueeze(-1), 1.0)
                out["t"] = row.expand(y.shape[0], *row.shape)
            else:
                out["t"] = torch.zeros_like(z).scatter_(-1, y.unsqueeze(-1), 1.0)
        return out

    def __call__(self, z: Tensor, y: Tensor) -> LossEval:
        """Per-model losses and ``dL/dZ``.

        Args:
            z: Model outputs ``[N, B, C]`` (classification) or ``[N, B]`` (regression), detached.
            y: Targets ``[N, B]`` (int64 classes or float targets), expanded views are fine.
        """
        b = z.shape[1]
        leaves = self._leaf_values(z, y)
        if not self.broken:
            fused = self._fused.get(b)
            if fused is None:
                fused = self._fused[b] = self._fuse(b, z.dtype)
            try:
                loss, grads = fused(*(leaves[name] for name in self._leaf_order))
                return LossEval(
                    loss=loss.mean(-1),
                    grad=self._leaf_backward(
                        z, y, leaves, dict(zip(self._grad_leaves, grads, strict=True))
                    ),
                )
            except Exception:  # find the failing group(s) on the per-group path below
                self.fused_failures += 1
                logger.debug("fused population loss failed; retrying group by group", exc_info=True)
        # One split per leaf hands every group its slice (cheaper than a narrow per group).
        parts = {name: leaf.split(self._sizes) for name, leaf in leaves.items()}
        # Per leaf, each group's gradient slice (zeros where a group does not use the leaf);
        # one cat per leaf assembles the population's gradient.
        grad_parts: dict[str, list[Tensor]] = {}
        roots: list[Tensor] = []
        inv_b = self._inv_b.get(b)
        if inv_b is None:
            # What .mean()'s backward hands out.
            inv_b = torch.ones((), dtype=z.dtype, device=z.device) / b
            self._inv_b[b] = inv_b
        for k, (_, prog) in enumerate(self.programs):
            size = prog.size
            leaf_grads: dict[str, Tensor] = {}
            try:
                if k in self.broken:
                    raise _Broken
                seed = self._seeds.get((k, b))
                if seed is None:
                    seed = self._seeds[(k, b)] = inv_b.expand(size, b)
                root, grads = prog.fn(*(parts[name][k] for name in prog.leaf_names), seed)
                roots.append(root if root.shape[-1] == b else root.expand(size, b))
                for name, g in zip(prog.grad_leaves, grads, strict=True):
                    if g is not None:
                        leaf_grads[name] = g
            except Exception as exc:  # a bad candidate must not take the population down
                if not isinstance(exc, _Broken):
                    logger.exception("loss group %d failed; its models are marked diverged", k)
                    self.broken.add(k)
                del roots[k:]
                roots.append(self._filler(k, "root", (size, b), z, float("nan")))
                leaf_grads = {}
            for name in self._grad_leaves:
                g = leaf_grads.get(name)
                if g is None:
                    g = self._filler(k, name, (size, *leaves[name].shape[1:]), z, 0.0)
                grad_parts.setdefault(name, []).append(g)
        loss = torch.cat(roots).mean(-1)
        leaf_grads_all = {name: torch.cat(gs) for name, gs in grad_parts.items()}
        return LossEval(loss=loss, grad=self._leaf_backward(z, y, leaves, leaf_grads_all))

    def _fuse(self, b: int, dtype: torch.dtype) -> Callable[..., tuple[Tensor, list[Tensor]]]:
        """One generated function evaluating every group for batch size ``b``.

        See :func:`~loss_rl.training._fuse.fuse_programs`; the source is kept in :attr:`source`.
        """
        fn, self.source = fuse_programs(
            self.programs,
            self._leaf_order,
            self._grad_leaves,
            self.num_classes,
            b,
            dtype,
            self.device,
        )
        return fn

    def _filler(
        self, k: int, name: str, shape: tuple[int, ...], like: Tensor, value: float
    ) -> Tensor:
        """A constant block (cached: shapes repeat every step)."""
        key = (k, name, shape, value)
        t = self._fillers.get(key)
        if t is None:
            t = torch.full(shape, value, dtype=like.dtype, device=like.device)
            self._fillers[key] = t
        return t

    def _leaf_backward(
        self, z: Tensor, y: Tensor, leaves: dict[str, Tensor], grads: dict[str, Tensor]
    ) -> Tensor:
        """Chain the leaf gradients into ``dL/dZ`` once for the whole population."""
        if self.kind is TaskKind.REGRESSION:
            dz = torch.zeros_like(z)
            for name in ("pred", "residual"):
                if name in grads:
                    dz = dz + grads[name]
            return dz
        # d/dlog_p collects log_p, p = exp(log_p) and the gathered log_p_y (p_y = exp(log_p_y)).
        acc: Tensor | None = grads.get("log_p")
        if "p" in grads:
            term = grads["p"] * leaves["p"]
            acc = term if acc is None else acc + term
        g_lpy = grads.get("log_p_y")
        if "p_y" in grads:
            term = grads["p_y"] * leaves["p_y"]
            g_lpy = term if g_lpy is None else g_lpy + term
        dz = grads.get("z")
        if g_lpy is not None:
            acc = torch.zeros_like(z) if acc is None else acc.clone()
            acc.scatter_add_(-1, y.unsqueeze(-1), g_lpy.unsqueeze(-1))
        if acc is not None:
            # log_softmax backward: g - softmax * sum(g)
            d_lsm = acc - leaves["p"] * acc.sum(-1, keepdim=True)
            dz = d_lsm if dz is None else dz + d_lsm
        return torch.zeros_like(z) if dz is None else dz
