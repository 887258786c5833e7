"""Ledger statistics of a run: best so far, the reference score, proposals over time, rewards.

The ledger does not record the agent's actions before schema 2, nor its rewards: episode returns
are reconstructed (:func:`episode_rewards`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from loss_rl.inspect._facts import is_baseline, reward_config
from loss_rl.store import Run


def edit_family(action: str) -> str:
    """``"3:wrap:log"`` → ``"wrap:log"`` (the edit, whatever the position)."""
    head, _, rest = action.partition(":")
    return rest if head.isdigit() and rest else action


def best_so_far(run: Run) -> pd.DataFrame:
    """Best validation score after each inner training (columns ``trainings``, ``best``)."""
    df = run.ledger
    trained = df[df["source"] == "trained"].reset_index(drop=True)
    ok = trained["score"].where(trained["status"] == "ok")
    return pd.DataFrame({"trainings": np.arange(1, len(trained) + 1), "best": ok.cummax()})


def reference_score(run: Run) -> float | None:
    """The reference (CE) score: the run's first ok evaluation outside any episode."""
    df = run.ledger
    ref = df[df["episode"].isna() & (df["status"] == "ok")]
    return float(ref["score"].iloc[0]) if not ref.empty else None


def outcomes_over_training(run: Run, parts: int = 4) -> pd.DataFrame:
    """How the proposals changed during the search: the ledger cut into ``parts`` by time.

    Returns:
        Per part: ``proposals``, shares ``new`` (trained), ``cached`` and ``rejected``, the mean
        ok ``score`` of the part's proposals, the ``best`` so far at its end, and ``top_edits``:
        the three edits the agent used most in that part, with their shares (from the ledger's
        ``action`` column; empty for runs recorded before it existed).
    """
    df = run.ledger
    df = df[df["episode"].notna()].reset_index(drop=True)
    rows = []
    best = -math.inf
    for i, part in enumerate(np.array_split(np.arange(len(df)), max(parts, 1))):
        if len(part) == 0:
            continue
        chunk = df.iloc[part]
        n = len(chunk)
        ok = chunk[chunk["status"] == "ok"]["score"]
        trained_ok = chunk[(chunk["status"] == "ok") & (chunk["source"] == "trained")]["score"]
        if not trained_ok.empty:
            best = max(best, float(trained_ok.max()))
        rows.append(
            {
                "part": f"{i + 1}/{parts}",
                "proposals": n,
                "new": float((chunk["source"] == "trained").mean()),
                "cached": float(chunk["source"].str.startswith("cache").mean()),
                "rejected": float((chunk["source"] == "check").mean()),
                "score": float(ok.mean()) if not ok.empty else None,
                "best": best if best > -math.inf else None,
                "top_edits": _top_edits(chunk),
            }
        )
    return pd.DataFrame(rows)


def outcomes_recorded_actions(run: Run) -> bool:
    """Whether the run's ledger recorded the edit behind each proposal (ledger schema >= 2)."""
    df = run.ledger
    return "action" in df and bool(df["action"].notna().any())


def _top_edits(chunk: pd.DataFrame, k: int = 3) -> str:
    if "action" not in chunk or chunk["action"].isna().all():
        return ""
    fams = chunk["action"].dropna().map(edit_family).value_counts(normalize=True).head(k)
    return ", ".join(f"{name} {share:.0%}" for name, share in fams.items())


def episode_rewards(run: Run) -> pd.DataFrame:
    """The return of every episode, reconstructed from the ledger in time order.

    SB3's ``Monitor`` is not used by the search, so rewards are recomputed with the run's reward
    settings (:func:`loss_rl.envs.score_reward`, penalties, novelty bonus, revisit penalty),
    tracking the run-level best through the ledger as the envs did. Approximate: masked actions
    taken anyway (DQN, PPO) and ``stop`` leave no ledger row, so their penalties (and zeros) are
    missing; a later episode's start score is taken from the first start loss. An episode is a
    run of rows of one env whose step keeps increasing.

    Returns:
        Columns ``episode`` (order of start), ``env_index``, ``steps``, ``reward``, ``best``
        (best score reached in the episode); empty when the ledger has no episode rows and for
        baseline searchers (they get no rewards).
    """
    cfg = reward_config(run)
    df = run.ledger
    rows = df[df["episode"].notna() & df["step"].notna()]
    if cfg is None or rows.empty or is_baseline(run):
        return pd.DataFrame(columns=["episode", "env_index", "steps", "reward", "best"])
    from loss_rl.envs import score_reward  # the MDP package loads stable-baselines3

    ref = reference_score(run)
    start_score = None
    first_start = rows[rows["step"] == 0]
    if not first_start.empty and first_start.iloc[0]["status"] == "ok":
        start_score = float(first_start.iloc[0]["score"])
    ref_v = ref if ref is not None else (start_score if start_score is not None else 0.0)
    run_best = ref_v
    episodes: list[dict[str, Any]] = []
    current: dict[int, dict[str, Any]] = {}
    for r in rows.itertuples(index=False):
        env_i = int(r.env_index) if not pd.isna(r.env_index) else -1
        step = int(r.step)
        ok = r.status == "ok" and r.score is not None and not pd.isna(r.score)
        score = float(r.score) if ok else None
        ep = current.get(env_i)
        if ep is None or ep["tag"] != r.episode or step <= ep["last"]:
            ep = {
                "tag": r.episode,
                "last": -1,
                "reward": 0.0,
                "steps": 0,
                "env_index": env_i,
                "known": start_score,
                "best": start_score,
            }
            current[env_i] = ep
            episodes.append(ep)
        ep["last"] = step
        if step == 0:  # the start loss's evaluation: no reward
            ep["known"] = ep["best"] = score
            if score is not None:
                run_best = max(run_best, score)
            continue
        ep["steps"] += 1
        if ok and score is not None:
            if cfg.best_scope == "run":
                best = run_best
            else:
                best = ep["best"] if ep["best"] is not None else ref_v
            prev = ep["known"] if ep["known"] is not None else ref_v
            reward = score_reward(
                cfg.reward,
                score,
                previous=prev,
                reference=ref_v,
                best=best,
                gain_clip=cfg.gain_clip,
            )
            reward += cfg.novelty_bonus if r.source == "trained" else -cfg.revisit_penalty
            ep["known"] = score
            ep["best"] = score if ep["best"] is None else max(ep["best"], score)
            run_best = max(run_best, score)
        else:
            reward = -(cfg.reject_penalty if r.status == "rejected" else cfg.diverge_penalty)
        ep["reward"] += reward
    out = pd.DataFrame(episodes)
    out.insert(0, "episode", np.arange(len(out)))
    return out[["episode", "env_index", "steps", "reward", "best"]]


def rejection_reasons(run: Run) -> pd.Series:
    """Counts of why proposals failed: the check's code (``zero_gradient``...) or the status."""
    df = run.ledger
    bad = df[df["status"] != "ok"]
    codes = [
        (str(reason).split(":", 1)[0] if reason else status)
        for status, reason in zip(bad["status"], bad["reason"], strict=True)
    ]
    return pd.Series(codes, dtype=object).value_counts()
