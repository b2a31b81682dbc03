"""What the vision architectures share: the book's initialisation, shapes, search space."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def xavier_init(model: nn.Module) -> nn.Module:
    """d2l's ``init_cnn``: Xavier-uniform weights for every convolution and linear layer."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(module.weight)
    return model


def flat_size(features: nn.Module, in_channels: int, size: int) -> int:
    """Number of values ``features`` produces for one ``size``×``size`` image."""
    with torch.no_grad():
        return features(torch.zeros(1, in_channels, size, size)).numel()


def dense_head(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """AlexNet's and VGG's classifier: two dropout-regularised hidden layers, then the logits."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )  # fmt: skip


def training_space(
    trial: Any,
    *,
    lr: tuple[float, float] = (3e-4, 1e-2),
    epochs: tuple[int, int] = (5, 30),
    batch_sizes: tuple[int, ...] = (64, 128, 256),
) -> dict[str, Any]:
    """``ImageClassifier`` keyword arguments for one Optuna trial; archs add ``arch_params``."""
    return {
        "lr": trial.suggest_float("lr", *lr, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
        "epochs": trial.suggest_int("epochs", *epochs),
        "batch_size": trial.suggest_categorical("batch_size", list(batch_sizes)),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
        "schedule": trial.suggest_categorical("schedule", ["onecycle", "cosine"]),
    }
