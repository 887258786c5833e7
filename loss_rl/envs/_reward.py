r"""Rewards of the loss-design MDP.

For a candidate that trained to a finite validation score :math:`s` (status ``ok``):

=============  ==================================================================================
mode           reward
=============  ==================================================================================
``best_gain``  :math:`\min(\max(0, s - b), \text{gain\_clip})`, with :math:`b` the best score so
               far (of the run, or of the episode: ``best_scope``); the run's best starts at the
               reference (CE) score, so only losses that beat CE and every earlier candidate
               earn anything. Risk-seeking, like deep symbolic regression's top-ε objective; the
               prototype's winner (REFERENCES.md), hence the default.
``score``      :math:`s`
``delta_prev`` :math:`s - s_{prev}`, the improvement over the current loss (the last loss of the
               episode with a known score; the reference score if none).
``delta_ce``   :math:`s - s_{CE}` with :math:`s_{CE}` = ``evaluator.reference_score``.
=============  ==================================================================================

Then, still for ``ok`` candidates, ``+ novelty_bonus`` if the evaluation cost a training
(``result.trained``) and ``- revisit_penalty`` if it was a cache hit.

Other outcomes replace the score reward (never raise):

- a masked (invalid) action taken anyway is a no-op: ``-invalid_penalty``;
- ``rejected`` (failed validity checks): ``-reject_penalty``;
- ``diverged`` or ``error``: ``-diverge_penalty``;
- ``stop``: ``0``.
"""

from __future__ import annotations

REWARD_MODES: tuple[str, ...] = ("best_gain", "score", "delta_prev", "delta_ce")
"""Available reward modes (the first is the default)."""


def score_reward(
    mode: str,
    score: float,
    *,
    previous: float,
    reference: float,
    best: float,
    gain_clip: float | None = None,
) -> float:
    """The score part of the reward of an ``ok`` candidate (see the module docstring).

    Args:
        mode: One of :data:`REWARD_MODES`.
        score: The candidate's validation score.
        previous: Score of the loss the edit started from.
        reference: The reference (CE) score.
        best: Best score so far, before this candidate.
        gain_clip: Upper clip of ``best_gain`` (``None``: none).

    Raises:
        ValueError: for an unknown mode.
    """
    if mode == "best_gain":
        gain = max(0.0, score - best)
        return min(gain, gain_clip) if gain_clip is not None else gain
    if mode == "score":
        return score
    if mode == "delta_prev":
        return score - previous
    if mode == "delta_ce":
        return score - reference
    raise ValueError(f"unknown reward mode {mode!r}; choose one of {', '.join(REWARD_MODES)}")
