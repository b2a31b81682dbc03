"""Signals to a real ``python -m pipeline submit`` process, at points it reaches and reports.

The child is the real command line with one change: its stdout stops for good once it has written
a given progress line (``task: ...``, printed before the MLflow run starts; ``cv log_rmse: ...``,
printed inside the run, after cross-validation). The test waits for that line, never for a time,
so each signal lands at a known point of the stage. Ctrl-C exits 130 and SIGTERM 143 wherever
they land; a run they interrupt ends KILLED; one that ``kill -9`` leaves RUNNING is closed KILLED
by the next run; and the earlier submission survives every one of them byte for byte.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import fast_house_prices_config, mlflow_runs, run_cli, write_house_prices

from pipeline import cli

pytestmark = pytest.mark.slow  # each test runs the CLI in a subprocess and signals it

ROOT = Path(__file__).resolve().parents[1]
OLD_SUBMISSION = b"Id,SalePrice\n1,123456.0\n"
BEFORE_THE_RUN = "task: "  # the last line before tracking.run starts
IN_THE_RUN = "cv log_rmse: "  # after cross-validation, before the refit

BLOCKING_CLI = """
import os, signal, sys, time

# Ctrl-C as in a terminal, even where the shell that started the tests ignores SIGINT for
# background jobs (Python then leaves it ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)
marker = os.environ["KP_STOP_AFTER_LINE"]


class StopAfterLine:
    '''stdout that, once it has written a line starting with ``marker``, stays there for good.'''

    def __init__(self, stream):
        self.stream, self.pending = stream, ""

    def write(self, text):
        written = self.stream.write(text)
        *lines, self.pending = (self.pending + text).split("\\n")
        if any(line.startswith(marker) for line in lines):
            self.stream.flush()
            while True:
                time.sleep(0.05)
        return written

    def __getattr__(self, name):
        return getattr(self.stream, name)


sys.stdout = StopAfterLine(sys.stdout)
from pipeline.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def house(workdir):
    data = write_house_prices(workdir / "data")
    (workdir / "submission.csv").write_bytes(OLD_SUBMISSION)
    return workdir, data, fast_house_prices_config(workdir)


def submit_args(data: Path, config: Path) -> list[str]:
    return ["submit", "--config", str(config), "--data-dir", str(data), "--model", "ridge", "-o", "submission.csv"]


class Child:
    """``submit`` in a child process that stops after the line starting with ``marker``."""

    def __init__(self, workdir: Path, data: Path, config: Path, marker: str):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "KP_STOP_AFTER_LINE": marker}
        self.stderr_path = workdir.parent / f"{workdir.name}-stderr.txt"
        with self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-c", BLOCKING_CLI, *submit_args(data, config)],
                                         cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, marker: str, timeout: float = 240) -> None:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no line {marker!r} within {timeout} s: {self.out}") from None
            if line is None:
                raise AssertionError(f"exited {self.proc.wait()} before {marker!r}: {self.out} {self.stderr()}")
            self.out.append(line)
            if line.startswith(marker):
                return

    def finish(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def assert_submission_intact(workdir: Path) -> None:
    assert (workdir / "submission.csv").read_bytes() == OLD_SUBMISSION
    assert not list(workdir.glob(".submission.csv.*"))  # no temporary file left behind


@pytest.mark.parametrize(("sig", "marker", "code", "said"), [
    (signal.SIGINT, IN_THE_RUN, cli.EXIT_INTERRUPTED, "interrupted"),
    (signal.SIGTERM, IN_THE_RUN, cli.EXIT_TERMINATED, "terminated"),
    (signal.SIGTERM, BEFORE_THE_RUN, cli.EXIT_TERMINATED, "terminated"),
], ids=["SIGINT-in-run", "SIGTERM-in-run", "SIGTERM-before-run"])
def test_ctrl_c_and_sigterm_exit_130_and_143_and_close_the_run_killed(house, sig, marker, code, said):
    workdir, data, config = house
    child = Child(workdir, data, config, marker)
    child.wait_for_line(marker)
    child.proc.send_signal(sig)
    assert child.finish() == code, child.stderr()
    assert child.stderr().strip().splitlines()[-1] == said
    runs = mlflow_runs("house-prices")
    if marker == IN_THE_RUN:
        assert [r.info.status for r in runs] == ["KILLED"]
    else:
        assert runs == []  # stopped before the run started: none was made
    assert_submission_intact(workdir)


def test_kill_9_leaves_the_run_running_until_the_next_run_closes_it_killed(house):
    workdir, data, config = house
    child = Child(workdir, data, config, IN_THE_RUN)
    child.wait_for_line(IN_THE_RUN)
    child.proc.kill()
    assert child.finish() == -signal.SIGKILL
    [killed] = mlflow_runs("house-prices")
    assert killed.info.status == "RUNNING"  # nothing could close it
    assert_submission_intact(workdir)

    result = run_cli(*submit_args(data, config))
    assert result.code == 0, result.err
    statuses = {r.info.run_id: r.info.status for r in mlflow_runs("house-prices")}
    assert statuses.pop(killed.info.run_id) == "KILLED"
    assert list(statuses.values()) == ["FINISHED"]
    assert (workdir / "submission.csv").read_bytes() != OLD_SUBMISSION  # the new run writes its own
