"""Storage failures with the condition reason they map to.

`deterministic` failures (wrong keys, a missing object, a digest that does not match) will
not change on a retry; the Job turns them into bad-input exits so it fails at once instead
of burning its back-off. An unreachable server is not deterministic and is retried.
"""
from __future__ import annotations


class StorageError(Exception):
    """A storage failure; `reason` is the status condition reason."""

    reason = "StorageError"
    deterministic = True


class StorageAccessDenied(StorageError):
    reason = "StorageAccessDenied"


class ModelNotFound(StorageError):
    reason = "ModelNotFound"


class DigestMismatch(StorageError):
    reason = "DigestMismatch"


class StorageUnavailable(StorageError):
    """The server could not be reached or answered with a server error."""

    reason = "StorageUnavailable"
    deterministic = False
