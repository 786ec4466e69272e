"""Crash points exit only when named, with the agreed code and a log line."""
from __future__ import annotations

import os
import subprocess
import sys

from lms_operator.reconcile.faults import ENV, EXIT_CODE, fault_point

CODE = "from lms_operator.reconcile.faults import fault_point; fault_point('after_job_create'); print('alive')"


def test_named_step_exits_with_the_fault_code() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], env={**os.environ, ENV: "after_job_create"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_CODE == 86
    assert "fault point after_job_create" in done.stderr and "alive" not in done.stdout


def test_other_steps_and_unset_do_nothing() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], env={**os.environ, ENV: "before_status_write"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "alive"
    os.environ.pop(ENV, None)
    fault_point("after_job_create")  # returns
