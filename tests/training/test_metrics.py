"""Population metrics agree with scikit-learn, model by model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from loss_rl.training import classification_metrics, regression_metrics, score_of


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(4))
def test_classification_metrics_match_sklearn(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n_models, n, c = 5, 40, 4
    logits = torch.randn(n_models, n, c, generator=g)
    logits[0, :, 3] += 10  # one model predicts a single class
    y = torch.randint(0, c - 1, (n,), generator=g)  # class 3 absent from the targets
    got = classification_metrics(logits, y, c)
    for m in range(n_models):
        pred = logits[m].argmax(-1).numpy()
        yt = y.numpy()
        assert float(got["accuracy"][m]) == pytest.approx(skm.accuracy_score(yt, pred))
        assert float(got["balanced_accuracy"][m]) == pytest.approx(
            skm.balanced_accuracy_score(yt, pred)
        )
        assert float(got["macro_f1"][m]) == pytest.approx(
            skm.f1_score(yt, pred, average="macro", zero_division=0)
        )
        probs = torch.softmax(logits[m].double(), -1).numpy()
        assert float(got["nll"][m]) == pytest.approx(
            skm.log_loss(yt, probs, labels=list(range(c))), rel=1e-6
        )


def test_regression_metrics_match_sklearn_in_original_units() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 50, generator=g)
    y = torch.randn(50, generator=g)
    std = 7.5
    got = regression_metrics(pred, y, std)
    for m in range(3):
        p, t = pred[m].double().numpy() * std, y.double().numpy() * std
        assert float(got["mse"][m]) == pytest.approx(skm.mean_squared_error(t, p))
        assert float(got["mae"][m]) == pytest.approx(skm.mean_absolute_error(t, p))
        assert float(got["r2"][m]) == pytest.approx(skm.r2_score(t, p))
    assert score_of({"mae": 2.0}, "neg_mae") == -2.0
    assert score_of({"r2": 0.5}, "r2") == 0.5
    assert np.isfinite(float(got["r2"].sum()))
