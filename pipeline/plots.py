"""Figures logged as MLflow artifacts. Matplotlib's Agg backend: no display needed."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def predicted_vs_actual(y_true: np.ndarray, y_pred: np.ndarray, *, log: bool, title: str):
    figure, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(y_true, y_pred, s=6, alpha=0.5)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=1)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("actual")
    ax.set_ylabel("out-of-fold prediction")
    ax.set_title(title)
    figure.tight_layout()
    plt.close(figure)
    return figure
