"""Softmax regression (d2l 4.1): one linear layer from pixels to class logits."""

from torch import nn

from models.registry import register
from models.vision.common import training_space


def space(trial):
    return training_space(trial, lr=(1e-3, 3e-2), epochs=(3, 15))


@register("softmax_regression", kind="vision", tasks=("multiclass",), space=space)
def softmax_regression(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Softmax regression: a single linear layer over the flattened image."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 28 * 28, num_classes))
