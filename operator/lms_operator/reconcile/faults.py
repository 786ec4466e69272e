"""Crash points for crash-consistency tests: the process dies at a named reconcile step.

With LMS_FAULT_EXIT_AT=<step> the operator exits at once (no cleanup, like a
killed pod) when it reaches that step, so tests can restart it at every step
boundary and check that reconciling again converges without duplicates.
Unset (always, in production) it does nothing.
"""
from __future__ import annotations

import os
import sys

ENV = "LMS_FAULT_EXIT_AT"
EXIT_CODE = 86
STEPS = ("before_job_create", "after_job_create", "after_job_finished", "before_deployment_apply",
         "after_deployment_apply", "before_status_write")


def fault_point(step: str) -> None:
    """Exit with EXIT_CODE when LMS_FAULT_EXIT_AT names this step."""
    if os.environ.get(ENV) == step:
        sys.stderr.write(f"lms operator: fault point {step}: exiting with {EXIT_CODE}\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
