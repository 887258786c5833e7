"""Write a noisy-label CSV to search a loss on: scikit-learn's wine with 30 % of labels flipped.

``wine_noisy.csv`` holds 138 rows whose ``label`` column (class names as text) has 30 % of its
values moved to another class at random; ``wine_test.csv`` holds 40 other rows with their true
labels, the clean test data a user would keep aside. Everything is offline (the wine data ships
with scikit-learn).

Usage::

    python examples/make_wine_csv.py [FOLDER]      # default: the current folder
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_wine

NAMES = np.array(["barolo", "grignolino", "barbera"])


def main(folder: Path, noise: float = 0.3, seed: int = 0) -> tuple[Path, Path]:
    """Write the two CSV files into ``folder``; their paths."""
    df = load_wine(as_frame=True).frame.rename(columns={"target": "label"})
    rng = np.random.default_rng(seed)
    test_rows = rng.permutation(len(df))[:40]
    test = df.iloc[test_rows].copy()
    train = df.drop(index=df.index[test_rows]).copy()
    y = train["label"].to_numpy().copy()
    flip = rng.random(len(y)) < noise
    y[flip] = (y[flip] + rng.integers(1, 3, flip.sum())) % 3  # to another class
    train["label"] = NAMES[y]
    test["label"] = NAMES[test["label"].to_numpy()]
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "wine_noisy.csv", folder / "wine_test.csv"
    train.to_csv(paths[0], index=False)
    test.to_csv(paths[1], index=False)
    print(
        f"wrote {paths[0]} ({len(train)} rows, {flip.mean():.0%} of labels flipped) and "
        f"{paths[1]} ({len(test)} rows, true labels)"
    )
    return paths


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("."))
