"""The bundled data, written as competition files: Ames Housing as Kaggle's House Prices, and
scikit-learn's digits as Kaggle's Digit Recognizer.

Lets the pipeline run end to end without a Kaggle account: `data/bundled/ames.csv.gz` holds all
2930 Ames houses in Kaggle's format (see `data/bundled/PROVENANCE.md`). It contains the Kaggle
test houses, so never mix its files with Kaggle's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.files import write_frames
from pipeline.data.images import LABEL, LABELS_FILE, PIXELS, SIDE, ImageData
from pipeline.errors import UserError

BUNDLED_AMES = Path(__file__).resolve().parents[2] / "data" / "bundled" / "ames.csv.gz"
TARGET = "SalePrice"
PLACEHOLDER_PRICE = "180000"  # like Kaggle's sample submission, a price to be replaced


def write_bundled_house_prices(dest: Path, *, seed: int = 0) -> dict[str, int]:
    """Split the bundled table into seeded halves and write the competition files into `dest`.

    Writes train.csv, test.csv (no SalePrice), sample_submission.csv and test_labels.csv (the
    held-back test prices, for a local score), each sorted by Id. Files are written into a
    temporary folder next to `dest` and moved into place one by one, so none is ever half
    written. Returns the row counts of train and test.
    """
    if not BUNDLED_AMES.is_file():
        raise UserError(f"bundled Ames data not found at {BUNDLED_AMES}")
    # Every cell stays text, so NA, None and integers are written back exactly as stored.
    table = pd.read_csv(BUNDLED_AMES, dtype=str, keep_default_na=False)
    order = np.random.default_rng(seed).permutation(len(table))
    half = len(table) // 2
    train = table.iloc[np.sort(order[:half])]
    test = table.iloc[np.sort(order[half:])]
    files = {
        "train.csv": train,
        "test.csv": test.drop(columns=TARGET),
        "sample_submission.csv": test[["Id"]].assign(**{TARGET: PLACEHOLDER_PRICE}),
        "test_labels.csv": test[["Id", TARGET]],
    }

    write_frames(dest, files)
    return {"train": len(train), "test": len(test)}


def bundled_digits(seed: int = 0, test_fraction: float = 0.2) -> ImageData:
    """scikit-learn's 1797 8×8 digits as MNIST-like 28×28 images, split by a seeded shuffle.

    Each digit is upsampled bilinearly to 20×20 and centred in a 28×28 frame (MNIST's own
    20×20-in-28×28 layout), its 0..16 intensities scaled to 0..255.
    """
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    digits = load_digits()
    small = digits.images / 16.0 * 255.0
    resize = _bilinear_matrix(8, 20)
    large = np.einsum("ij,njk,lk->nil", resize, small, resize)
    images = np.zeros((len(large), SIDE, SIDE), dtype=np.uint8)
    images[:, 4:24, 4:24] = np.clip(np.round(large), 0, 255)
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = round(len(images) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    labels = digits.target.astype(np.int64)
    return ImageData(
        images[train], labels[train], images[test], np.arange(1, n_test + 1), labels[test]
    )


def _bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights of 1-D linear interpolation with align_corners=False."""
    position = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, src - 1)
    weight = position - lower
    matrix = np.zeros((dst, src))
    np.add.at(matrix, (np.arange(dst), lower), 1 - weight)
    np.add.at(matrix, (np.arange(dst), upper), weight)
    return matrix


def write_bundled_digits(dest: Path, *, seed: int = 0) -> dict[str, int]:
    """Write ``bundled_digits(seed)`` into ``dest`` as Kaggle digit-recognizer files.

    train.csv (label, pixel0..pixel783), test.csv (pixels), sample_submission.csv (ImageId,
    Label 0) and test_labels.csv (the held-back labels, for a local score). Files are written in
    a temporary folder next to ``dest`` and moved into place one by one, so none is ever half
    written. Returns the image counts of train and test.
    """
    data = bundled_digits(seed)
    pixel_names = [f"pixel{i}" for i in range(PIXELS)]
    train = pd.DataFrame(data.X_train.reshape(-1, PIXELS), columns=pixel_names)
    train.insert(0, LABEL, data.y_train)
    files = {
        "train.csv": train,
        "test.csv": pd.DataFrame(data.X_test.reshape(-1, PIXELS), columns=pixel_names),
        "sample_submission.csv": pd.DataFrame({"ImageId": data.test_ids, "Label": 0}),
        LABELS_FILE: pd.DataFrame({"ImageId": data.test_ids, "Label": data.y_test}),
    }
    write_frames(dest, files)
    return {"train": len(data.X_train), "test": len(data.X_test)}


WRITERS = {"ames": write_bundled_house_prices, "digits": write_bundled_digits}
