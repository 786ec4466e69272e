"""API errors mapped to a few meaningful types, so callers branch on kind, not on status codes."""
from __future__ import annotations

import json


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}")


class NotFound(ApiError):
    """404: the object (or its API) does not exist."""


class Conflict(ApiError):
    """409: already exists, or a write lost a race."""


class Forbidden(ApiError):
    """403: the operator's RBAC does not allow this call."""


class Invalid(ApiError):
    """422: the API server refused the object."""


class TooManyRequests(ApiError):
    """429: throttled by API priority and fairness; retry later."""


_BY_STATUS: dict[int, type[ApiError]] = {404: NotFound, 409: Conflict, 403: Forbidden, 422: Invalid,
                                         429: TooManyRequests}


def from_response(status: int, body: bytes) -> ApiError:
    """The error for an HTTP status and a Kubernetes Status body (or any text)."""
    reason, message = "", body.decode("utf-8", "replace")[:500]
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            reason = str(parsed.get("reason", ""))
            message = str(parsed.get("message", message))
    except ValueError:
        pass
    return _BY_STATUS.get(status, ApiError)(status, reason, message)
