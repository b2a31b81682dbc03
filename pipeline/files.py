"""Writing data files so that readers never see a half-written one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd


def write_frames(dest: Path, frames: dict[str, pd.DataFrame]) -> None:
    """Write each frame as ``dest/<name>`` CSV: all into a temporary folder first, then renamed."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        for name, frame in frames.items():
            frame.to_csv(Path(tmp) / name, index=False, lineterminator="\n")
        for name in frames:
            os.replace(Path(tmp) / name, dest / name)
