"""Network in Network (d2l 8.3): no dense layers, a global average over class channels."""

from torch import nn

from models.registry import register
from models.vision.common import training_space, xavier_init


def space(trial):
    params = training_space(trial, lr=(3e-4, 3e-3), epochs=(5, 20))
    params["arch_params"] = {"dropout": trial.suggest_float("dropout", 0.0, 0.5)}
    return params


def nin_block(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int):
    """One spatial convolution followed by two 1×1 convolutions (per-pixel MLP)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
    )  # fmt: skip


@register("nin", kind="vision", tasks=("multiclass",), space=space)
def nin(
    num_classes: int = 10, in_channels: int = 1, resize: int | None = None, dropout: float = 0.5
) -> nn.Module:
    """NiN: ``resize=None`` is native 28×28 (5×5 stride-1 stem, half the width);
    ``resize=224`` is the book's network."""
    if resize is None:
        (c1, c2, c3), stem = (48, 128, 192), (5, 1, 2)
    else:
        (c1, c2, c3), stem = (96, 256, 384), (11, 4, 0)
    return xavier_init(
        nn.Sequential(
            nin_block(in_channels, c1, *stem), nn.MaxPool2d(kernel_size=3, stride=2),
            nin_block(c1, c2, kernel=5, stride=1, padding=2), nn.MaxPool2d(kernel_size=3, stride=2),
            nin_block(c2, c3, kernel=3, stride=1, padding=1), nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Dropout(dropout),
            nin_block(c3, num_classes, kernel=3, stride=1, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
    )  # fmt: skip
