"""Errors that map to the `lms compress` exit codes (api/contract.py)."""
from __future__ import annotations

from lms_operator.api.contract import INVALID_SPEC, CompressionSummary, ExitCode


class CompressionError(Exception):
    """Anything that stops a compression run. May carry a partial summary."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, summary: CompressionSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary or CompressionSummary()


class InputError(CompressionError):
    """Bad input: spec, model source, digest, format, unsafe paths or a version-key mismatch."""

    exit_code = ExitCode.BAD_INPUT


class InvalidSpec(InputError):
    """A spec the Job refuses (exit 2, reason InvalidSpec): it does not validate, or a source path leaves its mount.

    The operator validates before it creates a Job; this holds when a spec reaches the Job another way.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, CompressionSummary(reason=INVALID_SPEC))


class GateFailed(CompressionError):
    """No candidate reached the quality gate (nothing is published)."""

    exit_code = ExitCode.GATE_FAILED
