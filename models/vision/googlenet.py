"""GoogLeNet (d2l 8.4): stacks of Inception blocks with four parallel paths."""

import torch
from torch import nn

from models.registry import register
from models.vision.common import training_space, xavier_init


def space(trial):
    return training_space(trial, lr=(3e-4, 3e-3), epochs=(5, 20))


class Inception(nn.Module):
    """Paths 1×1, 1×1→3×3, 1×1→5×5 and 3×3 max-pool→1×1, concatenated along channels."""

    def __init__(
        self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int
    ):
        super().__init__()
        self.path1 = nn.Sequential(nn.Conv2d(in_channels, c1, kernel_size=1), nn.ReLU())
        self.path2 = nn.Sequential(
            nn.Conv2d(in_channels, c2[0], kernel_size=1), nn.ReLU(),
            nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.path3 = nn.Sequential(
            nn.Conv2d(in_channels, c3[0], kernel_size=1), nn.ReLU(),
            nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2), nn.ReLU(),
        )  # fmt: skip
        self.path4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            nn.Conv2d(in_channels, c4, kernel_size=1), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.path1(x), self.path2(x), self.path3(x), self.path4(x)], dim=1)


def downsample() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


@register("googlenet", kind="vision", tasks=("multiclass",), space=space)
def googlenet(num_classes: int = 10, in_channels: int = 1, resize: int | None = None) -> nn.Module:
    """GoogLeNet with the book's nine Inception blocks.

    ``resize=96`` is the book's network (7×7 stride-2 stem, four poolings before the Inception
    stacks run at 12, 6 and 3 pixels); ``resize=None`` starts from a 3×3 stem and one pooling, so
    28×28 inputs reach the Inception stacks at 14, 7 and 4 pixels.
    """
    if resize is None:
        stem = [nn.Conv2d(in_channels, 64, kernel_size=3, padding=1), nn.ReLU(), downsample()]
    else:
        stem = [
            nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3),
            nn.ReLU(),
            downsample(),
        ]
    return xavier_init(
        nn.Sequential(
            *stem,
            nn.Conv2d(64, 64, kernel_size=1), nn.ReLU(),
            nn.Conv2d(64, 192, kernel_size=3, padding=1), nn.ReLU(),
            *([] if resize is None else [downsample()]),
            Inception(192, 64, (96, 128), (16, 32), 32),
            Inception(256, 128, (128, 192), (32, 96), 64),
            downsample(),
            Inception(480, 192, (96, 208), (16, 48), 64),
            Inception(512, 160, (112, 224), (24, 64), 64),
            Inception(512, 128, (128, 256), (24, 64), 64),
            Inception(512, 112, (144, 288), (32, 64), 64),
            Inception(528, 256, (160, 320), (32, 128), 128),
            downsample(),
            Inception(832, 256, (160, 320), (32, 128), 128),
            Inception(832, 384, (192, 384), (48, 128), 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(1024, num_classes),
        )
    )  # fmt: skip
