"""What a stage prints: one line at a time, flushed, so that logs and a waiting test see it at once."""


def say(message: str) -> None:
    print(message, flush=True)
