"""VGG-11 (d2l 8.2)."""

from torch import nn

from models.registry import register
from models.vision.common import dense_head, flat_size, training_space, xavier_init

VGG11_BLOCKS = (1, 1, 2, 2, 2)  # convolutions per block; each block doubles the width, up to 8×


def space(trial):
    params = training_space(trial, lr=(3e-4, 3e-3), epochs=(5, 20))
    params["arch_params"] = {"dropout": trial.suggest_float("dropout", 0.0, 0.5)}
    return params


def vgg_block(in_channels: int, out_channels: int, convs: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(convs):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
        in_channels = out_channels
    if pool:
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


@register("vgg11", kind="vision", tasks=("multiclass",), space=space)
def vgg11(
    num_classes: int = 10,
    in_channels: int = 1,
    resize: int | None = None,
    width: int = 16,
    dropout: float = 0.5,
) -> nn.Module:
    """VGG-11: eight 3×3 convolutions in five blocks, then three dense layers.

    ``width`` is the first block's channel count: 64 in the paper, 16 in the book's Fashion-MNIST
    run. ``resize=None`` is native 28×28 (the first block keeps full resolution, so four poolings
    take 28 to 1, and the dense layers are 512 wide); ``resize=224`` is the book's network.
    """
    widths = [width * min(2**i, 8) for i in range(len(VGG11_BLOCKS))]
    blocks, channels_in = [], in_channels
    for i, (convs, channels) in enumerate(zip(VGG11_BLOCKS, widths, strict=True)):
        blocks.append(vgg_block(channels_in, channels, convs, pool=resize is not None or i > 0))
        channels_in = channels
    features = nn.Sequential(*blocks, nn.Flatten())
    hidden = 512 if resize is None else 4096
    classifier = dense_head(flat_size(features, in_channels, resize or 28), hidden, num_classes, dropout)
    return xavier_init(nn.Sequential(features, classifier))
