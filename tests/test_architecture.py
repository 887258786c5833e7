"""The import contract of ``../shared/DESIGN.md``: one-way layers, no cycles, no private reaches.

The graph is read from the source with :mod:`ast`: every ``import`` that runs, function-level
ones included; only ``if TYPE_CHECKING:`` blocks are left out (they never run). A new module
must be placed in :data:`LAYERS` before it can land, which is the point: its place in the house
is a decision, not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "loss_rl"

# Top to bottom. A module may import modules of its own layer or of layers below it, never
# above; inside a layer the imports must not form a cycle. A module belongs to the layer of the
# longest prefix listed here. The root package (``loss_rl/__init__.py``) is the public facade
# above everything and may import anything; nothing imports it.
LAYERS: list[tuple[str, ...]] = [
    ("loss_rl.cli",),
    ("loss_rl._search", "loss_rl.pretrain", "loss_rl._refine", "loss_rl.inspect"),
    ("loss_rl.presets", "loss_rl.suites"),
    ("loss_rl.agents",),
    ("loss_rl.envs",),
    ("loss_rl.evaluation", "loss_rl.verify", "loss_rl.executors", "loss_rl.descriptors"),
    ("loss_rl.training", "loss_rl.meta"),
    ("loss_rl.tasks",),
    ("loss_rl.store", "loss_rl.export", "loss_rl.neural_loss"),
    (
        "loss_rl.expr",
        "loss_rl.errors",
        "loss_rl._version",
        "loss_rl.schema",
        "loss_rl.results",
        "loss_rl.stats",
        "loss_rl.output_paths",
    ),
]


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            if (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
                isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
            ):
                for sub in node.body:
                    skip.update(id(n) for n in ast.walk(sub))
    return skip


def _edges() -> dict[str, dict[str, int]]:
    """importer -> {imported module: line}, runtime imports of ``loss_rl`` modules only."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, dict[str, int]] = {m: {} for m in mods}
    for m, f in mods.items():
        tree = ast.parse(f.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = m if f.name == "__init__.py" else m.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        here = here.rpartition(".")[0]
                    base = f"{here}.{base}" if base else here
                for a in node.names:
                    full = f"{base}.{a.name}"
                    targets.append(full if full in mods else base)
            for t in targets:
                if t.split(".")[0] != "loss_rl":
                    continue
                r = resolve(t)
                if r and r != m:
                    edges[m].setdefault(r, node.lineno)
    return edges


def _layer(module: str) -> int | None:
    best, where = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, where = len(p), i
    return where


EDGES = _edges()


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in EDGES if m != "loss_rl" and _layer(m) is None)
    assert not unplaced, f"place these modules in LAYERS (tests/test_architecture.py): {unplaced}"


def test_no_import_runs_against_the_layers() -> None:
    bad = []
    for m, targets in EDGES.items():
        if m == "loss_rl":
            continue
        for t, line in targets.items():
            if t == "loss_rl":
                bad.append(f"{m}:{line} imports the root package (import the defining module)")
                continue
            lm, lt = _layer(m), _layer(t)
            if lm is not None and lt is not None and lt < lm:
                bad.append(f"{m}:{line} -> {t} (layer {lm + 1} imports layer {lt + 1}, above it)")
    assert not bad, "imports against the flow:\n" + "\n".join(sorted(bad))


def _cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle() -> None:
    assert _cycles(EDGES) == []


def test_cycle_detector_sees_a_cycle() -> None:
    # The contract is only as good as its detector: a two-module loop must be reported.
    assert _cycles({"a": {"b": 1}, "b": {"a": 2}, "c": {"a": 3}}) == [["a", "b"]]


def _private_parent(module: str) -> str | None:
    """The package that owns the first private part of ``module`` (``None`` if all public)."""
    parts = module.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("_"):
            return ".".join(parts[:i])
    return None


@pytest.mark.parametrize("kind", ["private", "testing"])
def test_no_reach_into_private_or_test_modules(kind: str) -> None:
    bad = []
    for m, targets in EDGES.items():
        for t, line in targets.items():
            if kind == "private":
                owner = _private_parent(t)
                if owner is not None and not (m == owner or m.startswith(owner + ".")):
                    bad.append(f"{m}:{line} -> {t} (import it from {owner})")
            elif t.rpartition(".")[2] == "testing":
                bad.append(f"{m}:{line} -> {t} (test doubles stay out of production code)")
    assert not bad, "\n".join(sorted(bad))
