"""A small five-convolution network: the digit default (issue 14's study, bench/digit_variants.py).

Three stages of 3×3 convolutions with batch norm and ReLU, max pooling between them, and global
average pooling before one linear layer, so any image size fits. On scikit-learn's digits (15
epochs, shifts of 2 pixels, label smoothing 0.1) it scored 0.9972 on the bundled test images
against LeNet-BN's 0.9861, 0.9972 against 0.7939 with the test images shifted by 4 pixels, and
0.8524 against 0.7744 under elastic distortion; LeNet-BN cannot take 16×16 digits at all.
"""

from torch import nn

from models.registry import register
from models.vision.common import training_space


def space(trial):
    return training_space(trial, lr=(1e-3, 3e-2), epochs=(5, 30))


@register("cnn5", kind="vision", tasks=("multiclass",), space=space)
def cnn5(num_classes: int = 10, in_channels: int = 1, width: int = 24) -> nn.Module:
    """Five 3×3 convolutions with batch norm, global average pooling: any image size."""

    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

    w = width
    return nn.Sequential(*block(in_channels, w), *block(w, w), nn.MaxPool2d(2),
                         *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
                         *block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4 * w, num_classes))
