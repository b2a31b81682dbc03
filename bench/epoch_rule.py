"""Accuracy against epoch count at several training-set sizes: data for ``epochs="auto"``.

    python bench/epoch_rule.py                        # the digit recipe (cnn5), seed 0
    python bench/epoch_rule.py --fractions 0.25 1 --epochs 5 15

The bundled digits (bench/digit_variants.py's split: 1,438 training and 359 test images),
the training images subsampled (a seeded permutation's first fraction), each fit scored on the
full test set. Prints one line per run: size, epochs, optimizer steps, test accuracy, seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.digit_variants import RECIPES, digits  # noqa: E402
from models.image import ImageClassifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 15, 20, 30])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    recipe = RECIPES["default (cnn5 + smoothing)"]
    X, y, X_test, y_test = digits(28, 20)
    order = np.random.default_rng(args.seed).permutation(len(X))
    print("images  epochs  steps  accuracy  seconds", flush=True)
    for fraction in args.fractions:
        rows = order[: round(fraction * len(X))]
        for epochs in args.epochs:
            started = time.perf_counter()
            clf = ImageClassifier(epochs=epochs, seed=args.seed, **recipe).fit(X[rows], y[rows])
            seconds = time.perf_counter() - started
            steps = epochs * (len(rows) // min(recipe["batch_size"], len(rows)))
            accuracy = float((clf.predict(X_test) == y_test).mean())
            print(f"{len(rows):>6}  {epochs:>6}  {steps:>5}  {accuracy:.4f}  {seconds:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
