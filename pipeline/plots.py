"""Figures logged as MLflow artifacts. Matplotlib's Agg backend: no display needed."""

from __future__ import annotations

import math
import os

import matplotlib

if not os.environ.get("MPLBACKEND"):  # a Jupyter kernel sets its inline backend there: keep it
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402


def _plain_log_ticks(axis, low: float, high: float) -> None:
    """Log-axis labels written 200,000, at 1, 2 and 5 times powers of ten over two decades or less
    (powers of ten alone up to four), instead of matplotlib's crowded minor labels; wider axes
    keep matplotlib's 10^k labels."""
    if not 0 < low or high > 1e4 * low:
        return
    narrow = high <= 100 * low
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


SCATTER_POINTS = 20_000  # a scatter of a million points takes seconds to draw and shows no more


def _sampled(*columns: np.ndarray) -> tuple[np.ndarray, ...]:
    if len(columns[0]) <= SCATTER_POINTS:
        return columns
    rows = np.random.default_rng(0).choice(len(columns[0]), SCATTER_POINTS, replace=False)
    return tuple(np.asarray(c)[rows] for c in columns)


def predicted_vs_actual(y_true: np.ndarray, y_pred: np.ndarray, *, log: bool, title: str):
    y_true, y_pred = _sampled(y_true, y_pred)
    figure, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(y_true, y_pred, s=6, alpha=0.5)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=1)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax.xaxis, low, high)
        _plain_log_ticks(ax.yaxis, low, high)
    ax.set_xlabel("actual")
    ax.set_ylabel("out-of-fold prediction")
    ax.set_title(title)
    figure.tight_layout()
    plt.close(figure)
    return figure


def residuals(y_true: np.ndarray, y_pred: np.ndarray, *, log: bool, title: str):
    """Residuals against the prediction: log-ratio for a log target, difference otherwise."""
    y_true, y_pred = _sampled(y_true, y_pred)
    residual = np.log(y_pred / y_true) if log else y_pred - y_true
    figure, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(y_pred, residual, s=6, alpha=0.5)
    ax.axhline(0.0, color="black", linewidth=1)
    if log:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis, float(np.min(y_pred)), float(np.max(y_pred)))
    ax.set_xlabel("out-of-fold prediction")
    ax.set_ylabel("log(predicted / actual)" if log else "predicted - actual")
    ax.set_title(title)
    figure.tight_layout()
    plt.close(figure)
    return figure


def model_comparison(scores: dict[str, float], metric: str, *, final: str | None = None):
    """Each model's CV score as a bar, the axis zoomed to the scores' range (0.127 and 0.139 look
    apart), the ``final`` model's bar in orange whatever its name."""
    names = list(scores)
    values = np.array([scores[n] for n in names], dtype=float)
    figure, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
    bars = ax.barh(names, values, color=["tab:orange" if n == final else "tab:blue" for n in names])
    ax.bar_label(bars, fmt="%.4f", padding=3)
    ax.set_xlabel(f"cross-validated {metric}" + (f" ({final} in orange)" if final in scores else ""))
    low, high = float(values.min()), float(values.max())
    margin = (high - low) * 0.25 or abs(high) * 0.05 or 1.0
    ax.set_xlim(low - margin, high + margin * 1.6)  # room on the right for the labels
    ax.invert_yaxis()
    figure.tight_layout()
    plt.close(figure)
    return figure


def _display_figure(draw, *, title: str, size=(5.5, 5)):
    figure, ax = plt.subplots(figsize=size)
    draw(ax)
    ax.set_title(title, fontsize=10)
    figure.tight_layout()
    plt.close(figure)
    return figure


def classification_figures(actual: np.ndarray, proba: np.ndarray, classes, *, title: str) -> dict[str, object]:
    """Out-of-fold figures of a classifier, from scikit-learn's display classes. ``proba``: P(the
    second class) for two classes, else one column per class in ``classes`` order. Binary: ROC,
    precision-recall, confusion matrix (at 0.5) and calibration; multiclass: the confusion matrix
    and the calibration of the top class's probability (confidence against accuracy)."""
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    classes = np.asarray(classes)
    actual = np.asarray(actual)
    proba = np.asarray(proba, dtype=float)
    if proba.ndim == 2 and len(classes) == 2:
        proba = proba[:, 1]
    labels = [str(c) for c in classes]
    if proba.ndim == 1:
        positive = classes[1]
        truth = actual == positive
        predicted = np.where(proba >= 0.5, classes[1], classes[0])
        return {
            "roc_curve.png": _display_figure(lambda ax: RocCurveDisplay.from_predictions(
                truth, proba, ax=ax, name="out-of-fold", plot_chance_level=True), title=f"{title}: ROC ({positive})"),
            "pr_curve.png": _display_figure(lambda ax: PrecisionRecallDisplay.from_predictions(
                truth, proba, ax=ax, name="out-of-fold", plot_chance_level=True),
                title=f"{title}: precision-recall ({positive})"),
            "confusion_matrix.png": _display_figure(lambda ax: ConfusionMatrixDisplay.from_predictions(
                actual, predicted, labels=classes, display_labels=labels, ax=ax, colorbar=False),
                title=f"{title}: confusion matrix (threshold 0.5)"),
            "calibration.png": _display_figure(lambda ax: CalibrationDisplay.from_predictions(
                truth, proba, n_bins=10, strategy="quantile", ax=ax, name="out-of-fold"),
                title=f"{title}: calibration ({positive})"),
        }
    top = proba.argmax(axis=1)
    predicted = classes[top]
    size = 2.5 + 0.45 * len(classes)
    return {
        "confusion_matrix.png": _display_figure(lambda ax: ConfusionMatrixDisplay.from_predictions(
            actual, predicted, labels=classes, display_labels=labels, ax=ax, colorbar=False,
            include_values=len(classes) <= 20, xticks_rotation="vertical"),
            title=f"{title}: confusion matrix", size=(size, size)),
        "calibration.png": _display_figure(lambda ax: CalibrationDisplay.from_predictions(
            predicted == actual, proba.max(axis=1), n_bins=10, strategy="quantile", ax=ax, name="top class"),
            title=f"{title}: calibration of the top class"),
    }


def importance(frame, column: str, *, title: str, top: int = 30):
    """The ``top`` features by ``column`` of a ``feature_importance.csv`` frame, largest on top."""
    shown = frame.dropna(subset=[column]).nlargest(top, column)
    figure, ax = plt.subplots(figsize=(6.5, 0.28 * len(shown) + 1.4))
    error = shown[f"{column}_std"] if f"{column}_std" in shown else None
    ax.barh(shown["feature"].astype(str), shown[column], xerr=error, color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel(column.replace("_", " "))
    ax.set_title(title, fontsize=10)
    figure.tight_layout()
    plt.close(figure)
    return figure


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, classes, *, title: str):
    """Counts of (actual, predicted) pairs, each row shaded by its share of that class."""
    classes = np.asarray(classes)
    index = {c: i for i, c in enumerate(classes.tolist())}
    counts = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(counts, ([index[c] for c in np.asarray(actual).tolist()],
                       [index[c] for c in np.asarray(predicted).tolist()]), 1)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.45 * len(classes)
    figure, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), [str(c) for c in classes])
    ax.set_yticks(range(len(classes)), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=10)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the actual class")
    figure.tight_layout()
    plt.close(figure)
    return figure


def misclassified_grid(images: np.ndarray, actual: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
                       *, n: int = 32, title: str, columns: int = 8):
    """The ``n`` wrong predictions made with the highest confidence, most confident first."""
    images = np.asarray(images)
    images = images.reshape(len(images), *images.shape[-2:]) if images.ndim == 4 else images
    wrong = np.flatnonzero(np.asarray(actual) != np.asarray(predicted))
    worst = wrong[np.argsort(-np.asarray(confidence)[wrong], kind="stable")][:n]
    rows = max(1, math.ceil(len(worst) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.55 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, worst, strict=False):
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{actual[i]}→{predicted[i]} {confidence[i]:.0%}", fontsize=7)
    if not len(worst):
        axes.flat[0].text(0, 0.5, "no mistakes", fontsize=10)
    figure.suptitle(f"{title} ({len(wrong)} wrong; actual→predicted, confidence)", fontsize=9)
    figure.tight_layout()
    plt.close(figure)
    return figure


def cv_vs_public(cv: list[float], public: list[float], labels: list[str], metric: str, *, rho: float | None):
    """Each submitted run's CV score against its public leaderboard score, with the line y = x:
    runs off the line by the same amount keep their order; a leaderboard that reorders them does not."""
    figure, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(cv, public, s=24)
    for x, y, label in zip(cv, public, labels, strict=True):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    low, high = min(cv + public), max(cv + public)
    ax.plot([low, high], [low, high], color="black", linewidth=1)
    ax.set_xlabel(f"cv {metric}")
    ax.set_ylabel(f"public {metric}")
    shown = "n/a" if rho is None else f"{rho:.2f}"
    ax.set_title(f"CV against the public leaderboard\n{len(cv)} runs, Spearman rank correlation {shown}")
    figure.tight_layout()
    return figure
