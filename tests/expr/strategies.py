"""Hypothesis strategies for loss expressions, shared by the tests of the loss language."""

from __future__ import annotations

from hypothesis import strategies as st

from loss_rl.expr import LEAVES, OPS, Const, Expr, Leaf, Op, TaskKind

# Constants cover the awkward cases of formatting: negative, tiny, subnormal, huge, integral.
constants = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**6), max_value=10**6).map(float),
    st.sampled_from(
        [0.0, -0.0, 1.0, -1.0, 0.5, 1e-7, 5e-324, -2.5e-310, 1e15, 1e16, 1.7976931348623157e308]
    ),
).map(Const)


# Constants of a sane loss: TorchScript's fused autodiff may reorder products of huge constants
# into overflows that eager autograd avoids.
moderate_constants = st.floats(-1e3, 1e3, allow_nan=False).map(Const)


def leaves(kind: TaskKind | None = None) -> st.SearchStrategy[Expr]:
    """Leaves of one task kind (all leaves when ``kind`` is None)."""
    names = [n for n, s in LEAVES.items() if kind is None or s.kind is kind]
    return st.sampled_from(names).map(Leaf)


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    unary = [n for n, s in OPS.items() if s.arity == 1]
    binary = [n for n, s in OPS.items() if s.arity == 2]
    return st.one_of(
        st.builds(lambda n, a: Op(n, (a,)), st.sampled_from(unary), children),
        st.builds(lambda n, a, b: Op(n, (a, b)), st.sampled_from(binary), children, children),
    )


def exprs(
    kind: TaskKind | None = None,
    *,
    with_constants: bool = True,
    moderate: bool = False,
    max_leaves: int = 24,
) -> st.SearchStrategy[Expr]:
    """Random trees over every operator; leaves of ``kind`` (mixed when None) and constants."""
    numbers = moderate_constants if moderate else constants
    base = st.one_of(leaves(kind), numbers) if with_constants else leaves(kind)
    return st.recursive(base, _extend, max_leaves=max_leaves)
