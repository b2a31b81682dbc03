"""AlexNet (d2l 8.1)."""

from torch import nn

from models.registry import register
from models.vision.common import dense_head, flat_size, training_space, xavier_init


def space(trial):
    params = training_space(trial, lr=(3e-4, 3e-3), epochs=(5, 20))
    params["arch_params"] = {"dropout": trial.suggest_float("dropout", 0.0, 0.5)}
    return params


@register("alexnet", kind="vision", tasks=("multiclass",), space=space)
def alexnet(
    num_classes: int = 10, in_channels: int = 1, resize: int | None = None, dropout: float = 0.5
) -> nn.Module:
    """AlexNet: five convolutions and three dense layers.

    ``resize=None`` is a native 28×28 version (5×5 stride-1 stem, about a quarter of the width);
    ``resize=224`` is the book's network, for inputs upsampled to 224×224.
    """
    if resize is None:
        stem, (c1, c2, c3, c4, c5), hidden = (5, 1, 2), (64, 128, 192, 192, 128), 1024
    else:
        stem, (c1, c2, c3, c4, c5), hidden = (11, 4, 1), (96, 256, 384, 384, 256), 4096
    kernel, stride, padding = stem
    features = nn.Sequential(
        nn.Conv2d(in_channels, c1, kernel, stride=stride, padding=padding), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
    )  # fmt: skip
    classifier = dense_head(flat_size(features, in_channels, resize or 28), hidden, num_classes, dropout)
    return xavier_init(nn.Sequential(features, classifier))
