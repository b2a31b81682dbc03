"""LeNet-5 (d2l 7.6) and LeNet with batch normalisation (d2l 8.5), both native to 28×28."""

from torch import nn

from models.registry import register
from models.vision.common import training_space, xavier_init


def space(trial):
    return training_space(trial, lr=(1e-3, 3e-2), epochs=(5, 30))


@register("lenet", kind="vision", tasks=("multiclass",), space=space)
def lenet(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 as in the book: sigmoid activations and average pooling."""
    return xavier_init(
        nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
            nn.Linear(120, 84), nn.Sigmoid(),
            nn.Linear(84, num_classes),
        )
    )  # fmt: skip


@register("lenet_bn", kind="vision", tasks=("multiclass",), space=space)
def lenet_bn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet with batch normalisation after every convolution and hidden linear layer."""
    return xavier_init(
        nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
            nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(),
            nn.Linear(84, num_classes),
        )
    )  # fmt: skip
