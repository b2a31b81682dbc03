"""Images as uint8 tensors resident on the device, turned into model input one batch at a time.

``make_prepare`` builds the ``prepare(batch, train)`` function the training loop calls: uint8
(N, C, H, W) → normalised float32, with optional on-device augmentation and resize. Augmentation
is vectorised over the batch (no Python loop over samples) and draws from its own generator on
the batch's device, so a given seed replays the same crops, flips and erasures.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

Prepare = Callable[[torch.Tensor, bool], torch.Tensor]

# Random crop after zero padding, horizontal flip, random erasing (the last two not for glyphs:
# mirrored digits are different digits). "photo": the CIFAR recipe, 4-pixel crops and mirrors;
# "crop": the same without mirrors. MIRRORED: each one's counterpart with mirrors.
AUGMENTATIONS = {
    "shift": {"pad": 2, "flip": False, "erase_prob": 0.0},
    "shift-mirror": {"pad": 2, "flip": True, "erase_prob": 0.0},
    "fashion": {"pad": 2, "flip": True, "erase_prob": 0.5},
    "crop": {"pad": 4, "flip": False, "erase_prob": 0.0},
    "photo": {"pad": 4, "flip": True, "erase_prob": 0.0},
}
MIRRORED = {"shift": "shift-mirror", "crop": "photo"}


def to_image_batch(X) -> np.ndarray:
    """(N, H*W) or (N, H*W*3) with H == W, (N, H, W) or (N, C, H, W) pixels 0..255 → uint8 (N, C, H, W)."""
    X = np.asarray(X)
    if X.dtype != np.uint8:
        if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
            raise ValueError(f"images must be numeric pixel values 0..255, got dtype {X.dtype}")
        if X.size and (X.min() < 0 or X.max() > 255 or not np.array_equal(X, np.round(X))):
            raise ValueError("images must hold whole pixel values in 0..255")
        X = X.astype(np.uint8)
    if X.ndim == 2:  # pixel rows: S×S gray, or 3×S×S colour in row, column, channel order
        for channels in (1, 3):
            side = math.isqrt(X.shape[1] // channels)
            if side * side * channels == X.shape[1]:
                return X.reshape(len(X), side, side, channels).transpose(0, 3, 1, 2)
        raise ValueError(f"{X.shape[1]} pixels per row is not a square image of 1 or 3 channels")
    if X.ndim == 3:
        return X[:, None]
    if X.ndim == 4:
        return X
    raise ValueError(f"images must have shape (N, H*W), (N, H, W) or (N, C, H, W), got {X.shape}")


def pixel_mean_std(X: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of uint8 pixels scaled to [0, 1] (MNIST: 0.1307, 0.3081)."""
    scaled = X.float() / 255
    return float(scaled.mean()), float(scaled.std())


class BatchPreparer:
    """``prepare(batch, train)``: uint8 batch → float32 ``(x / 255 - mean) / std``.

    With ``train=True`` and ``augment`` set to a key of ``AUGMENTATIONS``, each image is shifted
    by up to ``pad`` pixels (padded with black), maybe mirrored, and maybe has a rectangle erased
    to the mean. ``resize`` upsamples bilinearly to ``resize``×``resize`` after augmentation.
    The augmentation draws from one generator per device, seeded ``seed``; ``state_dict()`` and
    ``load_state_dict()`` save and restore them, so that a resumed run draws what it would have.
    """

    def __init__(self, *, mean: float, std: float, resize: int | None = None,
                 augment: str | None = None, seed: int = 0):
        self.mean, self.std, self.resize, self.seed = mean, std, resize, seed
        self.options = AUGMENTATIONS[augment] if augment else None
        self.generators: dict[torch.device, torch.Generator] = {}
        self._restored: dict[str, torch.Tensor] = {}
        self.scale, self.shift = 1 / (255 * std), -mean / std

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self.generators:
            generator = torch.Generator(device).manual_seed(self.seed)
            if str(device) in self._restored:
                generator.set_state(self._restored.pop(str(device)))
            self.generators[device] = generator
        return self.generators[device]

    def __call__(self, batch: torch.Tensor, train: bool) -> torch.Tensor:
        x = batch.float().mul_(self.scale).add_(self.shift)  # one new tensor, normalised in place
        if train and self.options is not None:
            x = augment_batch(x, self._generator(batch.device), background=-self.mean / self.std,
                              **self.options)
        if self.resize is not None and self.resize != x.shape[-1]:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return x

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self._restored, **{str(d): g.get_state() for d, g in self.generators.items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generators.clear()
        self._restored = dict(state)


def make_prepare(
    *,
    mean: float,
    std: float,
    resize: int | None = None,
    augment: str | None = None,
    seed: int = 0,
) -> BatchPreparer:
    """The ``prepare(batch, train)`` of :class:`BatchPreparer`."""
    return BatchPreparer(mean=mean, std=std, resize=resize, augment=augment, seed=seed)


def augment_batch(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    background: float,
    pad: int,
    flip: bool,
    erase_prob: float,
) -> torch.Tensor:
    """Random shift, mirror and erasure of normalised images; ``background`` is a black pixel."""
    if pad:
        x = random_crop(x, pad, background, generator)
    if flip:
        mirrored = torch.rand(len(x), device=x.device, generator=generator) < 0.5
        x = torch.where(mirrored[:, None, None, None], x.flip(-1), x)
    if erase_prob:
        x = random_erase(x, erase_prob, generator)
    return x


def random_crop(
    x: torch.Tensor, pad: int, background: float, generator: torch.Generator
) -> torch.Tensor:
    """Pad by ``pad`` and cut each image's own H×W window: a shift of up to ``pad`` pixels."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=background)
    width = w + 2 * pad
    top = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=x.device, generator=generator)
    left = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=x.device, generator=generator)
    rows = top + torch.arange(h, device=x.device)[:, None]
    cols = left + torch.arange(w, device=x.device)[None, :]
    index = (rows * width + cols).reshape(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, index).reshape(n, c, h, w)


def random_erase(x: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
    """Random Erasing (Zhong et al. 2017): with probability ``prob`` blank a rectangle of 2–20%
    of the image, aspect ratio 1/3..3, to the dataset mean (0 once normalised)."""
    n, _, h, w = x.shape
    uniform = torch.rand(n, 5, device=x.device, generator=generator)
    area = h * w * (0.02 + 0.18 * uniform[:, 0])
    aspect = torch.exp(math.log(3) * (2 * uniform[:, 1] - 1))
    eh = (area * aspect).sqrt().round().clamp(1, h)
    ew = (area / aspect).sqrt().round().clamp(1, w)
    top = ((h - eh + 1) * uniform[:, 2]).floor()
    left = ((w - ew + 1) * uniform[:, 3]).floor()
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    inside_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    chosen = (uniform[:, 4] < prob)[:, None, None]
    erased = inside_rows[:, :, None] & inside_cols[:, None, :] & chosen
    return x.masked_fill(erased[:, None], 0.0)
