"""Multilayer perceptron (d2l 5.2, with 5.6's dropout)."""

from torch import nn

from models.registry import register
from models.vision.common import training_space


def space(trial):
    params = training_space(trial, lr=(3e-4, 1e-2), epochs=(5, 30))
    params["arch_params"] = {
        "hidden": trial.suggest_categorical("hidden", [128, 256, 512]),
        "layers": trial.suggest_int("layers", 1, 2),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
    }
    return params


@register("mlp", kind="vision", tasks=("multiclass",), space=space)
def mlp(
    num_classes: int = 10,
    in_channels: int = 1,
    hidden: int = 256,
    layers: int = 1,
    dropout: float = 0.0,
) -> nn.Module:
    """MLP: ``layers`` hidden ReLU layers of width ``hidden`` with dropout."""
    width = in_channels * 28 * 28
    body: list[nn.Module] = [nn.Flatten()]
    for _ in range(layers):
        body += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*body, nn.Linear(width, num_classes))
