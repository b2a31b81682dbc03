"""Which process is this, and is another one still alive: ``host:pid:start`` identities.

A pid alone is reused by the kernel; its start time (in clock ticks since boot, from
``/proc/<pid>/stat``) tells a reused pid apart. Tuning workers record one on every trial, and
MLflow runs on their tags, so that whatever a dead process left RUNNING can be closed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def age() -> float:
    """Seconds since this process started (its interpreter and imports included); 0 off Linux."""
    start = _start_time(os.getpid())
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(start) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, TypeError, IndexError):
        return 0.0


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] == "Z"


_identities: dict[int, str] = {}


def identity() -> str:
    """``host:pid:start`` of this process."""
    pid = os.getpid()
    if pid not in _identities:
        _identities[pid] = f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"
    return _identities[pid]


def is_alive(process: str) -> bool:
    """False only when ``process`` ran on this host and is gone (or a zombie, or its pid reused)."""
    try:
        host, pid_text, start = process.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True  # another machine: nothing here can tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _is_zombie(pid):
        return False
    now = _start_time(pid)
    return start == "?" or now is None or now == start


def pid_of(process: str) -> int | None:
    """The pid of a ``host:pid:start`` identity on this host, else None."""
    host, _, rest = process.partition(":")
    if host != socket.gethostname():
        return None
    try:
        return int(rest.split(":")[0])
    except ValueError:
        return None


def die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (``kill -9`` included)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def git_commit() -> str:
    """The short commit of this checkout, or "unknown" (a run's ``git_commit`` tag)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def release_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    The libraries' fits free most of what they allocate, but glibc keeps the freed pages: on a
    million rows the process held 1.8 GB more after CatBoost's folds than before them, and a
    CatBoost or net fold freed 0.4-0.5 GB that only this returned (bench/scale.py)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None
