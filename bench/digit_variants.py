"""Does the digit default carry over? Today's default against a candidate, on the bundled digits
and on harder variants of them that neither saw in training (issue 14's study).

    python bench/digit_variants.py                 # both recipes, every variant (minutes on 2 cores)
    python bench/digit_variants.py --epochs 5      # shorter

Variants (all made here from scikit-learn's 8x8 digits, no download):

- ``bundled``: the bundled test images (8x8 upsampled to 20x20, centred in 28x28);
- ``shift4``: the same test images shifted by up to 4 pixels each way (training shifts by 2);
- ``elastic``: the same test images under elastic distortion (Simard et al. 2003: a random
  displacement field smoothed by a Gaussian of sigma 4 pixels, scaled by alpha 34);
- ``size16``: the digits made 12x12 in a 16x16 frame, trained and tested at that size.

Each recipe is trained once per image size, and that model scores every variant of its size, so
the columns compare the same runs. The candidate (``cnn5``, now the default: ``models/vision/cnn5.py``) is a small
five-convolution network with batch norm and global average pooling, so any image size fits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.image import ImageClassifier  # noqa: E402
from pipeline.data.bundled import _bilinear_matrix  # noqa: E402

RECIPES = {
    "old default (lenet_bn)": {"arch": "lenet_bn", "batch_size": 128, "lr": 1e-2, "weight_decay": 5e-4,
                           "optimizer": "adamw", "schedule": "onecycle", "augment": "shift"},
    "default (cnn5 + smoothing)": {"arch": "cnn5", "batch_size": 128, "lr": 1e-2, "weight_decay": 5e-4,
                         "optimizer": "adamw", "schedule": "onecycle", "augment": "shift",
                         "label_smoothing": 0.1},
}


def digits(side: int, inner: int, seed: int = 0):
    """The 8x8 digits upsampled to ``inner``x``inner`` in a ``side``x``side`` frame, split 80/20."""
    from sklearn.datasets import load_digits

    data = load_digits()
    resize = _bilinear_matrix(8, inner)
    large = np.einsum("ij,njk,lk->nil", resize, data.images / 16.0 * 255.0, resize)
    images = np.zeros((len(large), side, side), dtype=np.uint8)
    lo = (side - inner) // 2
    images[:, lo:lo + inner, lo:lo + inner] = np.clip(np.round(large), 0, 255)
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = round(0.2 * len(images))
    test, train = order[:n_test], order[n_test:]
    return images[train], data.target[train], images[test], data.target[test]


def shifted(images: np.ndarray, most: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros_like(images)
    side = images.shape[-1]
    for k, (dy, dx) in enumerate(rng.integers(-most, most + 1, (len(images), 2))):
        padded = np.pad(images[k], most)
        out[k] = padded[most - dy:most - dy + side, most - dx:most - dx + side]
    return out


def elastic(images: np.ndarray, alpha: float = 34.0, sigma: float = 4.0, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    side = images.shape[-1]
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    out = np.empty_like(images)
    for k, image in enumerate(images):
        dy = gaussian_filter(rng.uniform(-1, 1, (side, side)), sigma) * alpha
        dx = gaussian_filter(rng.uniform(-1, 1, (side, side)), sigma) * alpha
        warped = map_coordinates(image.astype(float), [rows + dy, cols + dx], order=1, mode="constant")
        out[k] = np.clip(np.round(warped), 0, 255)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sizes = {28: digits(28, 20), 16: digits(16, 12)}
    variants = {  # name: (size, test images, labels)
        "bundled": (28, sizes[28][2], sizes[28][3]),
        "shift4": (28, shifted(sizes[28][2], 4), sizes[28][3]),
        "elastic": (28, elastic(sizes[28][2]), sizes[28][3]),
        "size16": (16, sizes[16][2], sizes[16][3]),
    }
    print(f"{args.epochs} epochs, seed {args.seed}; test accuracy (train seconds per size)")
    print(f"{'recipe':<22}" + "".join(f"{name:>10}" for name in variants) + "   seconds")
    for title, recipe in RECIPES.items():
        models, seconds = {}, []
        for size, (X, y, _, _) in sizes.items():
            started = time.perf_counter()
            try:
                models[size] = ImageClassifier(epochs=args.epochs, seed=args.seed, **recipe).fit(X, y)
            except RuntimeError as exc:  # an architecture fixed to 28x28
                models[size] = exc
            seconds.append(f"{time.perf_counter() - started:.0f}")
        cells = []
        for size, X_test, y_test in variants.values():
            model = models[size]
            cells.append("fails" if isinstance(model, Exception)
                         else f"{float((model.predict(X_test) == y_test).mean()):.4f}")
        print(f"{title:<22}" + "".join(f"{c:>10}" for c in cells) + f"   {'/'.join(seconds)}", flush=True)


if __name__ == "__main__":
    main()
