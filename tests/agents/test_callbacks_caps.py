"""A search always ends: by its budget, or by the caps on proposals and env steps."""

from __future__ import annotations

from types import SimpleNamespace

from loss_rl.agents import BudgetCallback, SearchState
from loss_rl.evaluation import EvalStats


def _state(**kw: int) -> SearchState:
    ev = SimpleNamespace(stats=EvalStats())
    return SearchState(ev, budget=10, **kw)  # type: ignore[arg-type]


def test_default_caps_follow_the_budget() -> None:
    s = _state()
    assert (s.max_proposals, s.max_env_steps) == (100, 1000)
    assert not s.done


def test_no_op_steps_end_the_run_at_the_env_step_cap() -> None:
    # A policy stuck on a masked (invalid) action proposes nothing: only env steps grow.
    s = _state(max_env_steps=12)
    cb = BudgetCallback(s)
    cb.locals = {"infos": [{"result": None}] * 4}
    assert cb._on_step() and cb._on_step()
    assert s.env_steps == 8 and not s.done
    assert not cb._on_step()  # 12 steps: stop learning
    assert s.done


def test_proposal_cap_still_applies() -> None:
    s = _state(max_proposals=3)
    s.evaluator.stats.proposed = 3
    assert s.done
