"""Crash points for the fault tests: LMS_FAULT_EXIT_AT=<step> ends the process at that step.

The e2e crash-consistency tests (tests/e2e/test_faults.py) set it to prove that a restart
after a crash at any step boundary of a reconcile converges with exactly one Job and one
Deployment. Unset (always, outside those tests) it does nothing.
"""
from __future__ import annotations

import os
import sys

ENV = "LMS_FAULT_EXIT_AT"
EXIT_CODE = 86
STEPS = ("before_job_create", "after_job_create", "after_job_finished",
         "before_deployment_apply", "after_deployment_apply", "before_status_write")


def fault_point(step: str) -> None:
    """Exit hard (no cleanup, like a crash or SIGKILL) when LMS_FAULT_EXIT_AT names this step."""
    if os.environ.get(ENV) == step:
        sys.stderr.write(f"lms operator: fault point {step}: exiting with {EXIT_CODE}\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
