"""DenseNet (d2l 8.7): each convolution sees all earlier outputs of its block, concatenated."""

import torch
from torch import nn

from models.registry import register
from models.vision.common import training_space, xavier_init


def space(trial):
    params = training_space(trial, lr=(3e-4, 3e-3), epochs=(5, 20))
    params["arch_params"] = {"growth_rate": trial.suggest_categorical("growth_rate", [16, 32])}
    return params


def bn_relu_conv(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2),
    )  # fmt: skip


class DenseBlock(nn.Module):
    def __init__(self, convs: int, in_channels: int, growth_rate: int):
        super().__init__()
        self.layers = nn.ModuleList(
            bn_relu_conv(in_channels + i * growth_rate, growth_rate, 3) for i in range(convs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


@register("densenet", kind="vision", tasks=("multiclass",), space=space)
def densenet(
    num_classes: int = 10,
    in_channels: int = 1,
    resize: int | None = None,
    growth_rate: int = 32,
    block_convs: tuple[int, ...] = (4, 4, 4, 4),
) -> nn.Module:
    """DenseNet: dense blocks joined by transitions (1×1 conv halving channels, 2×2 avg-pool).

    ``resize=96`` is the book's network (7×7 stride-2 stem and a max-pool); ``resize=None`` uses a
    3×3 stem without downsampling, so on 28×28 the blocks run at 28, 14, 7 and 3 pixels.
    """
    if resize is None:
        stem = [nn.Conv2d(in_channels, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU()]
    else:
        stem = [
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        ]  # fmt: skip
    body: list[nn.Module] = []
    channels = 64
    for i, convs in enumerate(block_convs):
        body.append(DenseBlock(convs, channels, growth_rate))
        channels += convs * growth_rate
        if i != len(block_convs) - 1:
            body += [
                bn_relu_conv(channels, channels // 2, 1),
                nn.AvgPool2d(kernel_size=2, stride=2),
            ]
            channels //= 2
    return xavier_init(
        nn.Sequential(
            *stem, *body,
            nn.BatchNorm2d(channels), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes),
        )
    )  # fmt: skip
