"""What a stage prints: one line at a time, flushed, so that logs and a waiting test see it at once."""

import os
import sys

from tqdm import tqdm


def say(message: str) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for all
        return
    if getattr(tqdm, "_instances", None):  # a progress bar is shown: the line goes above it
        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()
    else:
        print(message, flush=True)
