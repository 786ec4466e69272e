"""Processes the harness starts: stopped by process group, waited on with a bound."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def kill_group(proc: subprocess.Popen[bytes], grace: float) -> int | None:
    """SIGTERM the process group, SIGKILL it after grace seconds; returns the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers left in the group
    except (ProcessLookupError, PermissionError):
        pass
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


class WaitTimeout(TimeoutError):
    """A bounded wait ran out; the message says what was awaited and the last value or error."""


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll predicate until it returns something truthy; raise WaitTimeout after timeout seconds.

    Exceptions from the predicate count as "not yet"; the last one is named on timeout.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = f"last value: {value!r}"
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last = f"last error: {type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what} ({last})")
        time.sleep(interval)
