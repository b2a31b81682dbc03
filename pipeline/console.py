"""What a stage prints: one line at a time, flushed, so that logs and a waiting test see it at once."""

import os


def say(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(message, flush=True)
