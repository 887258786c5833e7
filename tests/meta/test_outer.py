"""The outer loop lowers the meta-loss, and never turns NaN silently."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from loss_rl.expr import parse
from loss_rl.meta import (
    InnerConfig,
    MetaProgress,
    OuterConfig,
    SymbolicLoss,
    TaskEpisodes,
    meta_optimize,
)
from loss_rl.tasks import TaskConfig

NOISY = TaskConfig.from_dict({
    "dataset": {"name": "digits"},
    "corruption": {"kind": "symmetric", "rate": 0.4},
    "model": {"kind": "mlp", "widths": [16]},
    "training": {"optimizer": "adam", "lr": 0.01, "batch_size": 64, "steps": 40,
                 "full_steps": 60},
})  # fmt: skip


@pytest.mark.parametrize(
    ("text", "inner", "objective"),
    [
        # SGD is not scale invariant: a larger CE scale trains faster in K steps.
        ("-0.2 * log_p_y", InnerConfig(steps=10, optimizer="sgd", lr=0.1, batch_size=64), "ce"),
        # GCE's q under 40 % label noise, with the task's own Adam and an accuracy-type query loss.
        ("(1 - p_y^0.3) / 0.3", InnerConfig.from_training(NOISY.training, 30, 8), "soft_error"),
    ],
    ids=["scaled_ce", "gce_q"],
)
def test_refining_lowers_the_meta_loss(text: str, inner: InnerConfig, objective: str) -> None:
    loss = SymbolicLoss(parse(text))
    outer = OuterConfig(meta_steps=6, tasks_per_step=2, lr=0.1, eval_episodes=4,
                        objective=objective)  # type: ignore[arg-type]  # fmt: skip
    history = meta_optimize(loss, TaskEpisodes(NOISY), inner, outer)
    assert history.eval_after < history.eval_before, history.summary()
    assert not history.skipped
    assert all(math.isfinite(v) for v in history.meta_loss)


class _Poisoned(SymbolicLoss):
    """Returns NaN while ``poison`` is set (a diverging inner training)."""

    poison = False

    def per_sample(self, input, target, theta=None):  # type: ignore[no-untyped-def]
        out = super().per_sample(input, target, theta)
        return out * math.nan if self.poison else out


def test_nan_outer_step_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    loss = _Poisoned(parse("-0.5 * log_p_y"))
    seen: list[MetaProgress] = []

    def progress(p: MetaProgress) -> None:
        seen.append(p)
        loss.poison = p.step == 1  # poison exactly step 2

    inner = InnerConfig(steps=3, optimizer="sgd", lr=0.1, batch_size=32)
    with caplog.at_level(logging.WARNING, logger="loss_rl.meta"):
        history = meta_optimize(loss, TaskEpisodes(NOISY), inner,
                                OuterConfig(meta_steps=3, lr=0.1), progress)  # fmt: skip
    assert [s for s, _ in history.skipped] == [2]
    assert "skipped" in caplog.text and "non-finite" in caplog.text
    assert [p.skipped for p in seen] == [False, True, False]
    assert math.isnan(history.meta_loss[1]) and math.isfinite(history.meta_loss[2])
    assert torch.isfinite(loss.u).all()
    assert torch.isfinite(loss.values()).all()


def test_large_meta_gradients_are_clipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    loss = SymbolicLoss(parse("-0.5 * log_p_y"))
    inner = InnerConfig(steps=3, optimizer="sgd", lr=0.5, batch_size=32)
    with caplog.at_level(logging.INFO, logger="loss_rl.meta"):
        history = meta_optimize(loss, TaskEpisodes(NOISY), inner,
                                OuterConfig(meta_steps=2, lr=0.1, clip_norm=1e-6))  # fmt: skip
    assert history.clipped == [1, 2]
    assert "clipped" in caplog.text
    # Adam normalises the step, but the clipped gradient it saw was tiny and finite.
    assert torch.isfinite(loss.u).all()
