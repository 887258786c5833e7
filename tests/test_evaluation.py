"""The evaluator pipeline (checks → cache → training → ledger) with a fake, counting executor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from loss_rl.evaluation import Evaluator, Status
from loss_rl.expr import Expr, TaskKind, known_loss, parse
from loss_rl.store import Ledger


@dataclass(frozen=True)
class _Res:
    candidate: int
    seed: int
    status: str
    score: float | None
    metrics: dict[str, dict[str, float]]
    diverged_at: int | None = None
    seconds: float = 0.0
    reason: str = ""


class FakeExecutor:
    """Scores a loss by its expression length; 'diverges' on losses containing 'exp'."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def run(
        self,
        candidates: Sequence[Expr],
        task: Any,
        steps: int,
        seeds: Sequence[int],
        data_seed: int | None,
        splits: Sequence[str] = ("val",),
    ) -> list[_Res]:
        self.batches.append([str(c) for c in candidates])
        out = []
        for i, c in enumerate(candidates):
            for s in seeds:
                if "exp" in str(c):
                    out.append(_Res(i, s, "diverged", None, {}, diverged_at=3))
                else:
                    score = 1.0 / (1 + len(str(c))) + 0.01 * s
                    out.append(_Res(i, s, "ok", score, {"val": {"accuracy": score}}))
        return out


TASK = SimpleNamespace(kind=TaskKind.CLASSIFICATION, training=SimpleNamespace(steps=7))


def make(tmp_path: Path | None = None) -> tuple[Evaluator, FakeExecutor, Ledger | None]:
    ex = FakeExecutor()
    ledger = Ledger(tmp_path / "ledger.sqlite") if tmp_path else None
    ev = Evaluator(TASK, seeds=(0, 1), ledger=ledger, executor=ex)  # type: ignore[arg-type]
    return ev, ex, ledger


def test_scores_are_means_over_seeds_and_batch_is_one_call() -> None:
    ev, ex, _ = make()
    cands = [known_loss("ce"), known_loss("gce"), known_loss("mae")]
    res = ev.evaluate(cands)
    assert len(ex.batches) == 1 and len(ex.batches[0]) == 3
    for c, r in zip(cands, res, strict=True):
        assert r.status is Status.OK and r.trained
        assert r.score == pytest.approx(1.0 / (1 + len(str(c))) + 0.005)
        assert r.fidelity == 7 and r.seeds == (0, 1)


def test_cache_by_key_and_by_fingerprint_costs_no_training() -> None:
    ev, ex, _ = make()
    ev.evaluate([parse("-log_p_y")])
    again = ev.evaluate([parse("-log(p_y)"), parse("-log_p_y + 1"), parse("0 - log_p_y")])
    assert len(ex.batches) == 1  # nothing new was trained
    assert [r.source for r in again] == ["cache_key", "cache_fingerprint", "cache_key"]
    assert all(r.score == again[0].score for r in again)
    assert ev.stats.trained == 1 and ev.stats.cached == 3
    assert ev.stats.resolved_without_training == pytest.approx(3 / 4)


def test_duplicates_within_one_batch_train_once() -> None:
    ev, ex, _ = make()
    res = ev.evaluate([parse("-log_p_y"), parse("-log(p_y)"), parse("-log_p_y * 2 / 2")])
    assert len(ex.batches[0]) == 1
    assert [r.trained for r in res] == [True, False, False]


def test_a_repeated_key_that_joined_by_fingerprint_trains_nothing_more() -> None:
    # The second and third share a key; the second joins the first's training by fingerprint
    # (a constant shift), so the third's key is neither cached nor pending when it comes up.
    ev, ex, _ = make()
    res = ev.evaluate([parse("-log_p_y"), parse("-log_p_y + 1"), parse("-log_p_y + 1")])
    assert ex.batches == [["-log_p_y"]]
    assert [r.source for r in res] == ["trained", "cache_fingerprint", "cache_fingerprint"]
    assert res[1].score == res[2].score == res[0].score


def test_rejected_candidates_are_never_trained_and_say_why() -> None:
    ev, ex, _ = make()
    (r,) = ev.evaluate([parse("sum_c(p^2)")])
    assert r.status is Status.REJECTED and r.source == "check"
    assert "no_target" in r.reason
    assert ex.batches == []
    (r2,) = ev.evaluate([parse("sum_c(p^2)")])
    assert r2.source == "cache_key" and r2.status is Status.REJECTED


def test_diverged_candidate_is_marked_not_raised() -> None:
    ev, _, _ = make()
    res = ev.evaluate([parse("exp(-p_y)"), known_loss("ce")])
    assert res[0].status is Status.DIVERGED and res[0].score is None
    assert "step" in res[0].reason
    assert res[1].status is Status.OK


def test_executor_crash_becomes_error_results_and_is_retried() -> None:
    class Boom(FakeExecutor):
        def run(self, *a: Any, **k: Any) -> list[_Res]:
            raise RuntimeError("worker died")

    ev = Evaluator(TASK, seeds=(0,), executor=Boom())  # type: ignore[arg-type]
    (r,) = ev.evaluate([known_loss("ce")])
    assert r.status is Status.ERROR and "worker died" in r.reason
    assert ev.lookup(known_loss("ce")) is None  # errors are not cached


def test_reference_score_is_ce_trained_once() -> None:
    ev, ex, _ = make()
    ref = ev.reference_score
    assert ref == pytest.approx(1.0 / (1 + len("-log_p_y")) + 0.005)
    assert ev.reference_score == ref and len(ex.batches) == 1


def test_ledger_warms_the_cache_of_a_resumed_evaluator(tmp_path: Path) -> None:
    ev, _, ledger = make(tmp_path)
    ev.evaluate([known_loss("ce"), known_loss("gce"), parse("sum_c(p^2)")],
                [{"episode": 0, "step": i} for i in range(3)])  # fmt: skip
    assert ledger is not None
    ledger.close()
    ev2, ex2, ledger2 = make(tmp_path)
    res = ev2.evaluate([known_loss("gce"), parse("-log(p_y)"), parse("sum_c(p^2)")])
    assert ex2.batches == []  # nothing trained again after a "crash"
    assert [r.source for r in res] == ["cache_key", "cache_key", "cache_key"]
    assert ledger2 is not None
    counts = ledger2.counts()
    assert counts == {"proposed": 6, "trained": 2, "cached": 3, "rejected": 1, "diverged": 0,
                      "errors": 0}  # fmt: skip
    df = ledger2.frame()
    assert list(df["episode"][:3]) == [0, 0, 0] and list(df["step"][:3]) == [0, 1, 2]
    assert df["metrics"][0] == {"accuracy": pytest.approx(res[1].score)}


def test_a_candidate_diverged_on_any_seed_carries_each_seeds_reason() -> None:
    class HalfExploding(FakeExecutor):
        def run(self, candidates: Sequence[Expr], *a: Any, **k: Any) -> list[_Res]:
            res = super().run(candidates, *a, **k)
            why = "loss exploded at step 4: mean loss -2e+06 beyond ±1e+06"
            bad = _Res(0, 1, "diverged", None, {}, diverged_at=4, reason=why)
            return [bad if r.seed == 1 else r for r in res]

    ev = Evaluator(TASK, seeds=(0, 1), executor=HalfExploding())  # type: ignore[arg-type]
    (r,) = ev.evaluate([known_loss("ce")])
    assert r.status is Status.DIVERGED and r.score is None and r.metrics == {}
    assert r.reason == "seed 1: loss exploded at step 4: mean loss -2e+06 beyond ±1e+06"
    assert ev.stats.diverged == 1


def test_outputs_exploding_while_finite_is_diverged_end_to_end() -> None:
    from loss_rl.presets import load_env_preset

    task = load_env_preset("digits_noisy").task
    ev = Evaluator(task, seeds=(0,))
    (r,) = ev.evaluate([parse("-sum_c(t * z)")])  # passes the checks; logits grow without end
    assert r.status is Status.DIVERGED and r.score is None
    assert r.reason.startswith("seed 0: outputs exploded at step "), r.reason
