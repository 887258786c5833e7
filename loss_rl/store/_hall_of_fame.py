"""The hall of fame of a run: the Pareto front of validation score against expression size.

As PySR presents its equations: for each size, the best loss of that size; of those, only the
ones that score better than every smaller one. Reading the front from the simplest loss to the
best one shows what each extra node of the expression buys.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from loss_rl.errors import LossRLError
from loss_rl.expr import (
    Expr,
    TaskKind,
    known_equivalent,
    parse,
    simplified_size,
    simplified_size_lower_bound,
    simplify,
    task_kind,
)
from loss_rl.store._run import Run

logger = logging.getLogger(__name__)

HALL_OF_FAME_COLUMNS: tuple[str, ...] = (
    "rank",
    "size",
    "score",
    "expression",
    "simplified",
    "key",
    "known_as",
    "fidelity",
)
"""Columns of :func:`hall_of_fame`, in order:

- ``rank``: 1 for the best validation score on the front, then 2, 3, ... (rows are in this
  order, which is the order ``loss-rl export RUN --pick K`` counts in);
- ``size``: nodes of the simplified expression (:func:`loss_rl.expr.simplified_size`), or of the
  expression as recorded with ``simplified=False``;
- ``score``: the best validation score the ledger holds for the loss (higher is better);
- ``expression``: the loss as the search wrote it (the text :func:`loss_rl.expr.parse` reads);
- ``simplified``: its readable form (:func:`loss_rl.expr.simplify`), guards kept;
- ``key``: its canonical key (equal losses share it);
- ``known_as``: the library loss it is equivalent to up to a positive scale
  (:func:`loss_rl.expr.known_equivalent`, e.g. ``"mae up to scale (×0.5)"``), else ``None``;
- ``fidelity``: the fidelity level of the evaluation that gave the score.
"""


def hall_of_fame(
    ledger: pd.DataFrame,
    *,
    kind: TaskKind | str | None = None,
    simplified: bool = True,
    known: bool = True,
) -> pd.DataFrame:
    """The Pareto front of validation score against expression size over a run's ledger.

    Only trained evaluations with status ``ok`` and a finite score count (cache hits repeat a
    score, rejected and diverged losses have none). Each canonical key counts once, with its best
    score. A loss is on the front when it scores strictly better than every smaller loss; of
    losses of one size, the best (ties: the one the ledger recorded first). Along the front,
    sizes strictly increase while scores strictly increase.

    Args:
        ledger: The ledger's frame (:attr:`loss_rl.store.Run.ledger`,
            :meth:`loss_rl.store.Ledger.frame`); needs the columns ``key``, ``expression``,
            ``status``, ``source`` and ``score`` (``fidelity`` and ``id`` when present).
        kind: The task kind, for ``known_as``; inferred from each loss's leaves when omitted.
        simplified: Measure the size of the simplified form (what a reader sees). ``False``
            measures the expression as recorded, which needs no sympy and is much faster on big
            ledgers.
        known: Look each front member up in the library of known losses (``known_as``).

    Returns:
        One row per front member, best score first; columns :data:`HALL_OF_FAME_COLUMNS`. Empty
        (with those columns) when nothing trained to a score.
    """
    ok = _scored(ledger)
    rows: list[dict[str, Any]] = []
    smallest = math.inf  # smallest size among the better-scored losses seen so far
    for rec in ok.itertuples(index=False):
        expr = _parsed(str(rec.expression))
        if expr is None:
            continue
        # Scores are walked from best to worst, so a loss is on the front exactly when it is
        # smaller than every loss seen before it. The sympy pass (~5-16 ms a loss) is skipped
        # when a bound computed without it already rules the loss out: on a 1 000-training
        # ledger that is most of the walk.
        if simplified and simplified_size_lower_bound(expr) >= smallest:
            continue
        size = simplified_size(expr) if simplified else expr.size()
        if size >= smallest:
            continue
        smallest = size
        rows.append(
            {
                "size": size,
                "score": float(rec.score),
                "expression": str(rec.expression),
                "simplified": simplify(expr) if simplified else str(expr),
                "key": str(rec.key),
                "known_as": _known_as(expr, kind) if known else None,
                "fidelity": _fidelity(getattr(rec, "fidelity", None)),
            }
        )
        if size <= 1:
            break  # nothing is smaller than one node
    # Object columns keep None as None (pandas would turn a missing string or int into NaN).
    front = pd.DataFrame(
        rows, columns=[c for c in HALL_OF_FAME_COLUMNS if c != "rank"], dtype=object
    )
    front = front.astype({"size": "int64", "score": "float64"})
    front.insert(0, "rank", range(1, len(front) + 1))
    return front


def hall_of_fame_records(front: pd.DataFrame) -> list[dict[str, Any]]:
    """The front as JSON-ready dicts (``summary.json``'s ``hall_of_fame``), in rank order."""
    return [
        {
            "rank": int(row["rank"]),
            "size": int(row["size"]),
            "score": float(row["score"]),
            "expression": str(row["expression"]),
            "simplified": str(row["simplified"]),
            "key": str(row["key"]),
            "known_as": None if _missing(row["known_as"]) else str(row["known_as"]),
            "fidelity": None if _missing(row["fidelity"]) else int(row["fidelity"]),
        }
        for row in front.to_dict(orient="records")
    ]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def run_hall_of_fame(run: Run) -> list[dict[str, Any]]:
    """A run's hall of fame as records, in rank order.

    The one its ``summary.json`` recorded at the end of the search (what the search printed),
    else computed from its ledger (a run still going, or interrupted).
    """
    recorded = (run.summary or {}).get("hall_of_fame")
    if isinstance(recorded, list):
        return recorded
    return hall_of_fame_records(hall_of_fame(run.ledger))


def hall_of_fame_member(
    front: pd.DataFrame | Sequence[Mapping[str, Any]], k: int
) -> dict[str, Any]:
    """The ``k``-th member (1-based, in rank order) of a hall of fame.

    Args:
        front: :func:`hall_of_fame`'s frame, or its records.
        k: 1 for the best score on the front.

    Raises:
        IndexError: when ``k`` is outside ``1..len(front)`` (the message names the range).
    """
    records = (
        hall_of_fame_records(front) if isinstance(front, pd.DataFrame) else [dict(r) for r in front]
    )
    if not records:
        raise IndexError("the hall of fame is empty: no loss trained to a score yet")
    if not 1 <= k <= len(records):
        raise IndexError(f"{k} is not a member of the hall of fame: choose 1..{len(records)}")
    return records[k - 1]


def _scored(ledger: pd.DataFrame) -> pd.DataFrame:
    """Trained, ok, finite-score rows, one per key (its best), best score first."""
    if ledger.empty:
        return ledger
    df = ledger[(ledger["status"] == "ok") & (ledger["source"] == "trained")]
    df = df[pd.to_numeric(df["score"], errors="coerce").map(_finite)]
    order = "id" if "id" in df.columns else None
    if order is not None:
        df = df.sort_values(order, kind="stable")
    # Stable sort: equal scores keep the ledger's order, so the first recorded wins a tie.
    df = df.sort_values("score", ascending=False, kind="stable")
    return df.drop_duplicates("key")


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _parsed(text: str) -> Expr | None:
    try:
        return parse(text)
    except LossRLError as err:  # a ledger from another loss_rl may hold an unreadable row
        logger.info("hall of fame: skipping %r (%s)", text, err)
        return None


def _known_as(expr: Expr, kind: TaskKind | str | None) -> str | None:
    try:
        match = known_equivalent(expr, kind or _kind_of(expr))
    except LossRLError as err:
        logger.info("hall of fame: no library lookup for %s (%s)", expr, err)
        return None
    return None if match is None else str(match)


def _kind_of(expr: Expr) -> TaskKind:
    return task_kind(expr) or TaskKind.CLASSIFICATION


def _fidelity(value: Any) -> int | None:
    try:
        return None if value is None or pd.isna(value) else int(value)
    except (TypeError, ValueError):
        return None
