"""Target transforms: models learn ``forward(y)`` and their predictions go back through ``inverse``."""

from __future__ import annotations

import numpy as np


def expm1_nonnegative(values):
    return np.expm1(np.maximum(values, 0.0))  # a log1p target is never below 0: nor are its predictions


TARGET_TRANSFORMS = {"log": (np.log, np.exp), "log1p": (np.log1p, expm1_nonnegative)}


def forward_inverse(name: str | None):
    """``(forward, inverse)`` of the transform called ``name``; identities for ``None``."""
    if name is None:
        return (lambda v: v), (lambda v: v)
    return TARGET_TRANSFORMS[name]
