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


def residuals(y_true: np.ndarray, y_pred: np.ndarray, *, log: bool, title: str):
    """Residuals against the prediction: log-ratio for a log target, difference otherwise."""
    residual = np.log(y_pred / y_true) if log else y_pred - y_true
    figure, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(y_pred, residual, s=6, alpha=0.5)
    ax.axhline(0.0, color="black", linewidth=1)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("out-of-fold prediction")
    ax.set_ylabel("log(predicted / actual)" if log else "predicted - actual")
    ax.set_title(title)
    figure.tight_layout()
    plt.close(figure)
    return figure


def model_comparison(scores: dict[str, float], metric: str):
    names = list(scores)
    figure, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
    bars = ax.barh(names, [scores[n] for n in names], color=["tab:orange" if n == "ensemble" else "tab:blue" for n in names])
    ax.bar_label(bars, fmt="%.4f", padding=3)
    ax.set_xlabel(f"cross-validated {metric}")
    ax.set_xlim(0, max(scores.values()) * 1.2)
    ax.invert_yaxis()
    figure.tight_layout()
    plt.close(figure)
    return figure
