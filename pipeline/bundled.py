"""The bundled Ames Housing data, written as the Kaggle House Prices competition files.

Lets the pipeline run end to end without a Kaggle account: `data/bundled/ames.csv.gz` holds all
2930 Ames houses in Kaggle's format (see `data/bundled/PROVENANCE.md`). It contains the Kaggle
test houses, so never mix its files with Kaggle's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import UserError
from pipeline.files import write_frames

BUNDLED_AMES = Path(__file__).resolve().parents[1] / "data" / "bundled" / "ames.csv.gz"
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
