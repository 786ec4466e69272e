"""Errors that map to the `lms compress` exit codes."""
from __future__ import annotations

from typing import Any


class CompressionError(Exception):
    """Anything that stops a compression run; exit code 1. May carry a partial summary."""

    exit_code = 1

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


class InputError(CompressionError):
    """Bad input: spec, model source, digest, format or unsafe paths; exit code 2."""

    exit_code = 2


class GateFailed(CompressionError):
    """No candidate reached the quality gate; exit code 3 (nothing is published)."""

    exit_code = 3
