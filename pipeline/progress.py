"""Progress bars on a terminal (tqdm, on stderr): off without one, or with ``--no-progress``, when
only the lines a run prints remain."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

from models.time_limit import TimeLimit


def enabled(progress: bool | None) -> bool:
    """``--progress``/``--no-progress`` as given, else whether stderr (where the bars go) is a terminal."""
    return sys.stderr.isatty() if progress is None else bool(progress)


class PortfolioBar:
    """One bar over a portfolio's configurations: which of N runs, its folds, the time used
    against the limit. ``fold`` is ``Portfolio.on_progress``."""

    def __init__(self, total: int, limit: TimeLimit, shown: bool):
        self.limit, self.seen, self.current = limit, [], None
        self.bar = tqdm(total=total, unit="configuration", disable=not shown, leave=False, file=sys.stderr,
                        bar_format="{desc} {bar:20} {n_fmt}/{total_fmt} [{elapsed}]{postfix}")

    def fold(self, name: str, done: int, folds: int) -> None:
        if name != self.current:
            self.current = name
            again = name in self.seen
            self.seen.append(name)
            self.bar.set_description_str(f"bag of {name}" if again else
                                         f"configuration {len(self.seen)} of {self.bar.total}: {name}")
        clock = f", {self.limit.elapsed():.0f} of {self.limit.seconds:g} s" if self.limit.limited else ""
        self.bar.set_postfix_str(f"fold {done}/{folds}{clock}", refresh=False)
        if done == folds and self.seen.count(name) == 1:
            self.bar.update(1)
        else:
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class TrialsBar:
    """One bar over a tune's trials, with the time used against the limit."""

    def __init__(self, total: int, limit: TimeLimit, shown: bool):
        self.limit = limit
        self.bar = tqdm(total=total, desc="tune", unit="trial", disable=not shown, leave=False, file=sys.stderr)

    def _clock(self) -> None:
        if self.limit.limited:
            self.bar.set_postfix_str(f"{self.limit.elapsed():.0f} of {self.limit.seconds:g} s", refresh=False)

    def trial(self) -> None:
        self._clock()
        self.bar.update(1)

    def to(self, done: int) -> None:
        """``done`` trials finished so far (the workers' count)."""
        self._clock()
        self.bar.update(max(0, min(done, self.bar.total) - self.bar.n))

    def close(self) -> None:
        self.bar.close()
