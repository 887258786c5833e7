"""Masks agree with validity; random action sequences never break a tree or raise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loss_rl.envs import LossDesignEnv
from loss_rl.envs._config import structural_problem
from loss_rl.envs.testing import CheapEvaluator
from loss_rl.errors import LossSpecError
from loss_rl.expr import OPS, Expr, Op, compile_loss, is_vector, parse
from tests.envs.helpers import HashEvaluator

EXTRA_STARTS = {
    "classification": ["sum_c(t * log(p + 1)) - mean_c(p)", "max(1 - p_y, 0.5) / 0.5"],
    "regression": ["abs(residual) + 0.1 * residual^2", "softplus(pred - target) * 2"],
}


def _assert_valid(expr: Expr, env: LossDesignEnv) -> None:
    assert structural_problem(expr, env.config) == ""
    compile_loss(expr, env.config.kind)  # compiles for the task kind


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "classification", "max_size": 10},
        {"kind": "regression", "max_size": 10},
        {"kind": "classification", "max_size": 12, "ops": ["add", "mul", "log", "sum_c"]},
    ],
)
def test_masks_match_validity(config: dict[str, Any]) -> None:
    env = LossDesignEnv(
        {**config, "start": ["library", *EXTRA_STARTS[config["kind"]]]},
        CheapEvaluator(config["kind"]),
    )
    space = env.space
    for start in env.start_candidates():
        env.reset(seed=0, options={"start": start})
        mask = env.action_masks()
        assert mask.shape == (env.action_space.n,) and mask.dtype == bool
        for a in range(1, int(env.action_space.n)):
            cand = env.propose(a)
            if mask[a]:
                # Every unmasked action yields a different, structurally valid tree.
                assert cand is not None and cand != start, env.action_name(a)
                _assert_valid(cand, env)
                continue
            assert cand is None, env.action_name(a)
            # ... and a masked one is invalid, a no-op, or not applicable at that node.
            edit = space.edits[(a - 1) % space.per_position]
            node = (
                start.nodes()[(a - 1) // space.per_position]
                if a - 1 < space.per_position * start.size()
                else None
            )
            if edit.group == "op" and (
                not isinstance(node, Op)
                or OPS[node.op].arity != OPS[edit.op].arity
                or OPS[node.op].reduces != OPS[edit.op].reduces
            ):
                continue  # swaps stay within a group (unary / reduction / binary)
            if (
                edit.group == "wrap"
                and OPS[edit.op].reduces
                and node is not None
                and not is_vector(node)
            ):
                continue  # reducing a per-sample value over classes is pointless: masked
            try:
                built = space.apply(start, a - 1)
            except (AssertionError, IndexError, AttributeError, LossSpecError):
                continue
            problem = structural_problem(built, env.config)
            big = any(abs(getattr(n, "value", 0.0)) > env.config.const_max for n in built.nodes())
            assert problem or built == start or big, env.action_name(a)


def _run_sequence(data: st.DataObject, config: dict[str, Any], evaluator: Any, steps: int) -> None:
    env = LossDesignEnv(config, evaluator)
    obs, _ = env.reset(seed=data.draw(st.integers(0, 2**16), label="seed"))
    assert env.observation_space.contains(obs)
    for _ in range(steps):
        valid = np.flatnonzero(env.action_masks()).tolist()
        if data.draw(st.booleans(), label="masked policy"):
            a = data.draw(st.sampled_from(valid), label="valid action")
        else:
            a = data.draw(st.integers(0, int(env.action_space.n) - 1), label="any action")
        before = env.expression
        obs, reward, terminated, truncated, info = env.step(a)
        assert env.observation_space.contains(obs)
        assert np.isfinite(reward)
        if a not in valid:
            assert info["invalid"] and env.expression == before
            assert reward == -env.config.invalid_penalty
        if env.config.space == "symbolic":
            _assert_valid(env.expression, env)
        assert parse(info["expression"]) == env.expression  # str/parse round trip
        if terminated or truncated:
            break


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    data=st.data(),
    space=st.sampled_from(["symbolic", "parametric"]),
    kind=st.sampled_from(["classification", "regression"]),
    on_reject=st.sampled_from(["stay", "move"]),
)
def test_random_action_sequences_keep_trees_valid(
    data: st.DataObject, space: str, kind: str, on_reject: str
) -> None:
    config = {
        "space": space,
        "kind": kind,
        "max_steps": 15,
        "max_size": 12,
        "on_reject": on_reject,
        "start": ["library"] if space == "symbolic" else ["random", "library"],
        "start_mode": "random",
    }
    _run_sequence(data, config, HashEvaluator(), steps=15)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(["classification", "regression"]))
def test_random_sequences_through_the_real_checks(data: st.DataObject, kind: str) -> None:
    # The cheap evaluator runs loss_rl.expr.check and trains: arbitrary trees must not raise.
    config = {"kind": kind, "max_steps": 6, "max_size": 10, "on_reject": "move"}
    _run_sequence(data, config, CheapEvaluator(kind, steps=3), steps=6)
