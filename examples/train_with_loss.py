"""Train your own model in a plain PyTorch loop with a loss loss_rl exported (``best/loss.py``).

The exported file needs only torch: nothing of loss_rl is imported here. The model, data
handling and loop are the user's; the found loss drops in where ``nn.CrossEntropyLoss`` was.

Usage::

    python examples/train_with_loss.py RUN/best/loss.py wine_noisy.csv wine_test.csv [--ce]

``--ce`` trains with ``nn.CrossEntropyLoss`` instead, for comparison. Prints the test accuracy
(last line: ``accuracy 0.9250``).
"""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np
import pandas as pd
import torch
from torch import nn


def load_module_loss(path: str) -> nn.Module:
    """``DiscoveredLoss()`` from an exported ``loss.py`` (code: only from a source you trust)."""
    spec = importlib.util.spec_from_file_location("discovered_loss", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DiscoveredLoss()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loss", help="the exported loss.py")
    parser.add_argument("train", help="training CSV with a 'label' column")
    parser.add_argument("test", help="test CSV with the same columns")
    parser.add_argument("--ce", action="store_true", help="use nn.CrossEntropyLoss instead")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    train, test = pd.read_csv(args.train), pd.read_csv(args.test)
    classes = sorted(train["label"].unique())

    def xy(df: pd.DataFrame) -> tuple[np.ndarray, torch.Tensor]:
        x = df.drop(columns="label").to_numpy(np.float32)
        return x, torch.tensor([classes.index(c) for c in df["label"]])

    (x, y), (xt, yt) = xy(train), xy(test)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, xt = torch.tensor((x - mean) / std), torch.tensor((xt - mean) / std)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, len(classes)))
    criterion = nn.CrossEntropyLoss() if args.ce else load_module_loss(args.loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(args.steps):
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(xt).argmax(1) == yt).float().mean().item()
    print(f"accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
