"""Graceful termination as the kubelet does it: preStop hook first, then SIGTERM, all within the grace period.

Pure parts only: what a container's preStop asks for and how long the pod may take to stop.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_GRACE_SECONDS = 30.0
MAX_GRACE_SECONDS = 60.0      # bound on how long the runner lets one pod take to stop
MIN_TERM_SECONDS = 2.0        # the kubelet's one-time extension when a hook used up the grace period
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh]?)")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class PreStop:
    """A container's preStop hook: a sleep (native or `sleep N`), another command, or one the runner cannot run."""

    sleep_s: float = 0.0
    argv: tuple[str, ...] = ()
    unsupported: str = ""


def grace_seconds(pod: dict[str, Any], cap: float = MAX_GRACE_SECONDS) -> float:
    """terminationGracePeriodSeconds (default 30), capped so a test cluster never waits long."""
    value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    grace = DEFAULT_GRACE_SECONDS if value is None else float(value)
    return max(0.0, min(grace, cap))


def sleep_argv_seconds(argv: list[str]) -> float | None:
    """Seconds of `sleep N` (also `sh -c "sleep N"`, N with an s/m/h suffix); None for anything else."""
    if len(argv) == 3 and Path(argv[0]).name in ("sh", "bash", "ash", "dash") and argv[1] == "-c":
        try:
            argv = shlex.split(argv[2])
        except ValueError:
            return None
    if len(argv) < 2 or Path(argv[0]).name != "sleep":
        return None
    total = 0.0
    for arg in argv[1:]:
        match = _DURATION.fullmatch(arg)
        if match is None:
            return None
        total += float(match.group(1)) * _UNIT[match.group(2)]
    return total


def prestop(container: dict[str, Any]) -> PreStop | None:
    """The container's lifecycle.preStop, or None when it has none."""
    hook = (container.get("lifecycle") or {}).get("preStop")
    if not hook:
        return None
    if "sleep" in hook:
        return PreStop(sleep_s=max(0.0, float((hook["sleep"] or {}).get("seconds") or 0)))
    if "exec" in hook:
        argv = [str(a) for a in (hook["exec"] or {}).get("command") or []]
        if not argv:
            return PreStop(unsupported="preStop.exec has no command")
        seconds = sleep_argv_seconds(argv)
        return PreStop(sleep_s=seconds) if seconds is not None else PreStop(argv=tuple(argv))
    kind = next(iter(hook), "?")
    return PreStop(unsupported=f"preStop.{kind} is not run by the sandbox pod runner")
