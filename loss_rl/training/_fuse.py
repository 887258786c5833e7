"""Splicing the structure groups' programs into one generated function per batch size.

A training step then costs one Python call however many structure groups the population has:
each group's body (see :mod:`loss_rl.training._program`) is spliced in with its variables renamed
``k<group>_<name>``; backward lines that read only build-time values (the whole backward pass of
label smoothing, say) run once, here, instead of at every step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from loss_rl.training._program import NAMESPACE, Program

# Local variables of generated code: v3, m3, t3, u3_1, d3, a3, e3, g3 (see ProgramBuilder).
_LOCAL = re.compile(r"\b([vmtudaeg]\d+(?:_\d+)?)\b")
_SEED = re.compile(r"\bgrad_seed\b")
_FUSED_NAME = re.compile(r"\b(k\d+_[vmtudaeg]\d+(?:_\d+)?|SEED\d+)\b")


def _split_static(lines: list[str], static_names: set[str]) -> tuple[list[str], list[str]]:
    """Split single-statement backward lines into those computable once and the rest.

    A line is static when everything it reads is a build-time value (constants, folded
    subtrees, the gradient seed) or a static line's result, e.g. the whole backward pass of
    label smoothing, whose gradients do not depend on the data. A variable assigned by any
    dynamic line stays dynamic everywhere (Python would make it a local of the function).
    """
    forced: set[str] = set()
    while True:
        known = set(static_names)
        static: list[str] = []
        dynamic: list[str] = []
        by_static: set[str] = set()
        by_dynamic: set[str] = set()
        previous = False
        for line in lines:
            head, _, rhs = line.partition(" = ")
            cond = ""
            if head.startswith("if "):
                cond, _, head = head.partition(": ")
            elif head.startswith("else: "):
                head = head[len("else: ") :]
            target = head.strip()
            reads = _FUSED_NAME.findall(cond + " " + rhs)
            if line.startswith("else:"):
                is_static = previous
            else:
                is_static = target not in forced and all(r in known for r in reads)
            if is_static:
                static.append(line)
                known.add(target)
                by_static.add(target)
            else:
                dynamic.append(line)
                known.discard(target)
                by_dynamic.add(target)
            previous = is_static
        clash = by_static & by_dynamic
        if not clash:
            return static, dynamic
        forced |= clash


def fuse_programs(
    programs: Sequence[tuple[int, Program]],
    leaf_order: Sequence[str],
    grad_leaves: Sequence[str],
    num_classes: int,
    b: int,
    dtype: torch.dtype,
    device: torch.device | None = None,
) -> tuple[Callable[..., tuple[Tensor, list[Tensor]]], str]:
    """One generated function evaluating every group for batch size ``b``.

    The groups' bodies are spliced with their variables renamed ``k<group>_<name>``; leaves are
    narrowed to each group's rows and the results concatenated, so a training step makes one
    Python call however many groups there are.

    Args:
        programs: ``(first model row, program)`` of each structure group, in population order.
        leaf_order: Leaf names, in the order the function takes them.
        grad_leaves: Differentiable leaves whose gradients the function returns, in this order.
        num_classes: Number of classes (1 for regression).
        b: Batch size.
        dtype: Floating type of the model outputs.
        device: Device of the model outputs (and of the programs' constants): the gradient
            seeds and zero fillers made here live there too (``None``: torch's default device).

    Returns:
        The function, ``fn(*leaves) -> (per-sample losses [N, b], leaf gradients)``, and its
        source.
    """
    ns: dict[str, object] = dict(NAMESPACE)
    lines: list[str] = []
    roots: list[str] = []
    grads: dict[str, list[str]] = {name: [] for name in grad_leaves}
    # A leaf that several groups read is split once (one op, every group's rows as a view);
    # a narrow per group costs an op each: ~90 a step for the descent check of 50 grammar
    # losses. The views are the same either way.
    users: dict[str, int] = {}
    for _, prog in programs:
        for name in prog.leaf_vars:
            users[name] = users.get(name, 0) + 1
    split = sorted(name for name, n in users.items() if n > 1)
    if split:
        ns["SIZES"] = [prog.size for _, prog in programs]
        lines += [f"S_{name} = {name}.split(SIZES)" for name in split]
    total = sum(prog.size for _, prog in programs)
    for k, (start, prog) in enumerate(programs):

        def rename(text: str, k: int = k) -> str:
            return _LOCAL.sub(lambda m: f"k{k}_{m.group(1)}", text)

        ns.update({rename(name): value for name, value in prog.statics.items()})
        ns[f"SEED{k}"] = torch.full((prog.size, b), 1.0, dtype=dtype, device=device) / b
        for name, var in prog.leaf_vars.items():
            if name in split:
                lines.append(f"{rename(var)} = S_{name}[{k}]")
            elif prog.size == total:  # the only group: the whole leaf
                lines.append(f"{rename(var)} = {name}")
            else:
                lines.append(f"{rename(var)} = {name}.narrow(0, {start}, {prog.size})")
        body = [_SEED.sub(f"SEED{k}", rename(line)) for line in prog.body]
        lines += body[: prog.backward_start]
        static, dynamic = _split_static(
            body[prog.backward_start :],
            {rename(name) for name in prog.statics} | {f"SEED{k}"},
        )
        if static:  # gradients that do not depend on the data: computed once, here
            exec("\n".join(static), ns)
        lines += dynamic
        root = rename(prog.root_var)
        roots.append(f"{root}.expand({prog.size}, {b})" if prog.root_static else root)
        for name in grad_leaves:
            var = prog.grad_vars.get(name)
            if var is None:
                shape = (
                    (prog.size, b, num_classes) if name in ("z", "p", "log_p") else (prog.size, b)
                )
                ns[f"FILL{k}_{name}"] = torch.zeros(shape, dtype=dtype, device=device)
                grads[name].append(f"FILL{k}_{name}")
            else:
                grads[name].append(rename(var))

    def cat(parts: list[str]) -> str:
        # Always a fresh tensor: a part may be a constant shared by every step.
        return f"torch.cat([{', '.join(parts)}])"

    out = ", ".join(cat(parts) for parts in grads.values())
    source = "\n".join(
        [
            f"def _population({', '.join(leaf_order)}):",
            *(f"    {line}" for line in lines),
            f"    return {cat(roots)}, [{out}]",
        ]
    )
    exec(source, ns)
    return ns["_population"], source  # type: ignore[return-value]
