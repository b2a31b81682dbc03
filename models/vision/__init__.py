"""The d2l convolutional-network zoo for 1×28×28 images, one architecture per file.

Importing this package registers every architecture (``kind="vision"``). Each factory takes
``num_classes`` and ``in_channels`` and returns an ``nn.Module`` mapping (N, C, 28, 28) float
images to (N, num_classes) logits; the ones the book trains on upsampled images also take
``resize`` and then expect (N, C, resize, resize) input (``features.images.make_prepare`` resizes).
Each registered ``space(trial)`` returns ``models.image.ImageClassifier`` keyword arguments.
"""

from models.vision import (  # noqa: F401  (imported to register)
    alexnet,
    cnn5,
    densenet,
    googlenet,
    lenet,
    mlp,
    nin,
    resnet,
    softmax_regression,
    vgg,
    whitenet,
)
from models.vision.common import parameter_count

__all__ = ["parameter_count"]
