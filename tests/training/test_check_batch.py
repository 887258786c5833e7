"""The batched checks give :func:`loss_rl.expr.check`'s verdicts, one descent pass per batch."""

from __future__ import annotations

import numpy as np
import pytest

from loss_rl.envs import EnvConfig
from loss_rl.envs._grammar import GrammarSpace
from loss_rl.expr import KNOWN_LOSSES, Expr, TaskKind, check, known_loss, parse
from loss_rl.training import _checks, check_batch

HAND_WRITTEN = {
    TaskKind.CLASSIFICATION: [
        "-log_p_y",
        "log_p_y",  # wrong_direction
        "p_y",  # wrong_direction
        "1 - p_y",
        "abs(p_y - p_y) + sum_c(t) * 0",  # zero_gradient / no_target family
        "-sum_c(exp(z * t))",
        "1 / (p_y - 0.9)",
        "p",  # kind: a vector root
        "residual^2",  # kind: a regression leaf
        "2",  # neither prediction nor target
    ],
    TaskKind.REGRESSION: [
        "residual^2",
        "-residual^2",  # wrong_direction
        "abs(residual) - abs(residual)",  # zero_gradient
        "log(1 + residual^2)",
        "exp(exp(-residual^2))",  # wrong_direction
        "-log_p_y",  # kind
    ],
}


def _grammar_sample(kind: TaskKind, n: int, seed: int) -> list[Expr]:
    config = {"space": "grammar", "max_size": 12, "constants": [0.5, 1, 2]}
    if kind is TaskKind.REGRESSION:
        config["kind"] = "regression"
    space = GrammarSpace(EnvConfig.from_dict(config))
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


@pytest.mark.parametrize("kind", [TaskKind.CLASSIFICATION, TaskKind.REGRESSION])
def test_verdicts_equal_the_one_by_one_check(kind: TaskKind) -> None:
    exprs = [known_loss(name) for name, k in KNOWN_LOSSES.items() if k.kind is kind]
    exprs += [parse(text) for text in HAND_WRITTEN[kind]]
    exprs += _grammar_sample(kind, 80, seed=int(kind is TaskKind.REGRESSION))
    batched = check_batch(exprs, kind)
    single = [check(e, kind) for e in exprs]
    assert [r.reasons for r in batched] == [r.reasons for r in single]
    # The sample exercises both outcomes of the descent check itself.
    codes = {c for r in single for c in r.codes}
    assert "wrong_direction" in codes
    assert sum(r.ok for r in single) >= 5


def test_descent_runs_once_for_the_whole_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = _checks.descent_checks

    def counting(exprs: list[Expr], kind: TaskKind) -> list[object]:
        calls.append(len(exprs))
        return original(exprs, kind)

    monkeypatch.setattr(_checks, "descent_checks", counting)
    exprs = [parse(t) for t in ("-log_p_y", "1 - p_y", "log_p_y", "p", "(1 - p_y)^2")]
    verdicts = check_batch(exprs, "classification")
    assert [v.ok for v in verdicts] == [True, True, False, False, True]
    assert calls == [4]  # "p" fails a cheap check; the other four descend together


def test_a_failing_batched_pass_falls_back_to_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(exprs: list[Expr], kind: TaskKind) -> list[object]:
        raise RuntimeError("cannot build")

    monkeypatch.setattr(_checks, "descent_checks", broken)
    exprs = [parse("-log_p_y"), parse("log_p_y")]
    assert [v.codes for v in check_batch(exprs, "classification")] == [(), ("wrong_direction",)]


def test_empty_batch() -> None:
    assert check_batch([], "classification") == []


def test_a_large_batch_is_checked_in_the_running_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from loss_rl.training import shutdown_workers, start_workers

    monkeypatch.setenv("LOSS_RL_WORKERS", "2")
    exprs = _grammar_sample(TaskKind.CLASSIFICATION, _checks.PARALLEL_MIN + 8, seed=5)
    calls: list[int] = []
    original = _checks.run_chunks

    def counting(fn: object, payloads: list[tuple[object, ...]]) -> list[object]:
        calls.append(len(payloads))
        return original(fn, payloads)  # type: ignore[arg-type]

    monkeypatch.setattr(_checks, "run_chunks", counting)
    shutdown_workers()  # an earlier test's pool may still run
    try:
        assert check_batch(exprs, "classification") == [check(e, "classification") for e in exprs]
        assert calls == []  # no pool yet: checked here, no workers started for it
        start_workers()
        parallel = check_batch(exprs, "classification")
        assert calls == [2]
        assert [r.reasons for r in parallel] == [check(e, "classification").reasons for e in exprs]
        small = exprs[: _checks.PARALLEL_MIN - 1]
        check_batch(small, "classification")
        assert calls == [2]  # a small batch stays in this process
    finally:
        shutdown_workers()
