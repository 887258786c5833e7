"""The seed's worked example: few-shot binary digits tasks, learned loss vs CE after K steps."""

from __future__ import annotations

from loss_rl.meta import few_shot_example


def test_few_shot_digits_meta_loss_decreases() -> None:
    result = few_shot_example(meta_steps=20, inner_steps=5, tasks_per_step=4, eval_episodes=16)
    s = result.summary
    # Fixed meta-training episodes, measured before and after: a paired comparison.
    assert s["meta_loss_after"] < 0.85 * s["meta_loss_before"], s
    # On held-out classes the learned loss reaches a lower query CE than CE after K steps.
    assert s["learned_query_ce"] < s["ce_query_ce"], s
    assert 0.5 <= s["ce_query_acc"] <= 1.0 and 0.5 <= s["learned_query_acc"] <= 1.0
    assert not result.history.skipped
