"""A patch-whitening net for small colour photos, in the spirit of Keller Jordan's airbench.

What makes airbench fast on CIFAR-10, kept here: a first layer of fixed 2×2 filters that whiten
the image patches (the eigenvectors of the patch covariance, each scaled by one over the root of
its eigenvalue, and their negatives), so the next layers start from decorrelated inputs; then
only three stages of two 3×3 convolutions, few but wide, pooling early so that most of the work
is at low resolution; batch norm throughout, so a high learning rate is safe; and a global max
pool before one linear layer, scaled down as airbench's is. The whitening filters are computed
from the first training batch the net sees (a batch of 128 images holds 120,000 patches, enough
for a covariance of 12 values) and kept in the state dict.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.registry import register
from models.vision.common import training_space

PATCH = 2
EPS = 5e-4  # added to each eigenvalue: the flattest directions are not blown up into noise
HEAD_SCALE = 1 / 9  # airbench's: the logits start small, as label smoothing wants them


class PatchWhitening(nn.Module):
    """A 2×2 convolution whose weights whiten patches; fitted once, on the first training batch.

    The filters are a buffer, not a parameter: no optimizer sees them, and under torchrun
    DistributedDataParallel hands rank 0's to every rank with the other buffers (each rank fits
    its own on its first batch, and takes rank 0's from the second step on). The bias learns.
    """

    def __init__(self, in_channels: int):
        super().__init__()
        outputs = 2 * in_channels * PATCH * PATCH
        self.register_buffer("weight", torch.zeros(outputs, in_channels, PATCH, PATCH))
        self.bias = nn.Parameter(torch.zeros(outputs))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.fitted):
            self.fit(x)
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        with torch.autocast(device_type=x.device.type, enabled=False):
            channels = x.shape[1]
            patches = x.float().unfold(2, PATCH, 1).unfold(3, PATCH, 1)  # N, C, H', W', p, p
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels * PATCH * PATCH).double()
            patches = patches - patches.mean(dim=0)
            eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
            filters = (eigenvectors.T / (eigenvalues.clamp(min=0) + EPS).sqrt()[:, None])
            filters = filters.reshape(-1, channels, PATCH, PATCH).to(self.weight.dtype)
            self.weight.copy_(torch.cat([filters, -filters]))
            self.fitted.fill_(True)


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _stage(i: int, o: int) -> list[nn.Module]:
    return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(o), nn.GELU(),
            nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.GELU()]


def space(trial):
    return training_space(trial, lr=(1e-3, 3e-2), epochs=(5, 40))


@register("whitenet", kind="vision", tasks=("multiclass",), space=space)
def whitenet(num_classes: int = 10, in_channels: int = 3, width: int = 32, whiten: bool = True) -> nn.Module:
    """Patch whitening, then three stages of widths ``width``×(1, 4, 4) (airbench94: 64), each
    halving the side; any side of 8 pixels or more. ``whiten=False``: a learned 2×2 first layer
    instead (what the whitening is worth)."""
    w1, w2 = width, 4 * width
    first = PatchWhitening(in_channels) if whiten else nn.Conv2d(in_channels, 2 * in_channels * PATCH * PATCH, PATCH)
    return nn.Sequential(first, nn.GELU(),
                         *_stage(2 * in_channels * PATCH * PATCH, w1), *_stage(w1, w2), *_stage(w2, w2),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w2, num_classes, bias=False),
                         Scale(HEAD_SCALE))
