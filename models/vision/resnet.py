"""ResNet-18 (d2l 8.6)."""

import torch
from torch import nn
from torch.nn import functional as F

from models.registry import register
from models.vision.common import training_space, xavier_init


def space(trial):
    return training_space(trial, lr=(3e-4, 3e-3), epochs=(5, 20))


class Residual(nn.Module):
    """Two 3×3 conv-BN layers plus the input; a 1×1 conv matches the shape where it changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


@register("resnet18", kind="vision", tasks=("multiclass",), space=space)
def resnet18(
    num_classes: int = 10, in_channels: int = 1, resize: int | None = None, width: int = 64
) -> nn.Module:
    """ResNet-18: four stages of two residual blocks, widths ``width``×(1, 2, 4, 8).

    ``resize=96`` is the book's network (7×7 stride-2 stem and a max-pool); ``resize=None`` is the
    CIFAR-style 28×28 version, a 3×3 stem without downsampling so the stages run at 28, 14, 7, 4.
    """
    if resize is None:
        stem = [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
    else:
        stem = [
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        ]  # fmt: skip
    stages, channels = [], width
    for i in range(4):
        out_channels = width * 2**i
        stride = 1 if i == 0 else 2
        stages += [Residual(channels, out_channels, stride), Residual(out_channels, out_channels)]
        channels = out_channels
    return xavier_init(
        nn.Sequential(
            *stem, *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
        )
    )
