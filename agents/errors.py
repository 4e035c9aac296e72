"""The root of taskloom's exceptions, shared by every package.

``agents`` (the lowest layer) defines the root and the errors activity code raises to
steer retries; :mod:`orchestrator.errors` re-exports them and draws the whole tree.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActivityFailure",
    "ConfigurationError",
    "NonRetryableError",
    "RetryableError",
    "TaskloomError",
    "UserError",
]


class TaskloomError(Exception):
    """Root of every error taskloom raises."""

    code = "taskloom_error"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description, as stored in a run's log."""
        return {"type": type(self).__name__, "code": self.code, "message": str(self)}


class UserError(TaskloomError):
    """The caller used taskloom wrongly; the message says how to fix it."""

    code = "user_error"


class ConfigurationError(UserError):
    """A setting or environment variable has a value taskloom cannot use."""

    code = "configuration"


class ActivityFailure(TaskloomError):
    """Raised by activity code to say how its failure should be retried."""

    code = "activity_failure"


class RetryableError(ActivityFailure):
    """Retry this activity; after ``retry_after`` seconds if given (a rate limit's
    Retry-After, say), else after the retry policy's backoff.

    Example::

        raise RetryableError("provider overloaded", retry_after=12.0)
    """

    code = "retryable"

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0 seconds")
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


class NonRetryableError(ActivityFailure):
    """Do not retry this activity: its input can never succeed (a 400, a 401, a
    malformed request). It fails, or waits in the dead-letter queue, at once."""

    code = "non_retryable"

    def to_dict(self) -> dict[str, Any]:
        # Subclasses (an auth error, a malformed request) keep their own type name: the
        # flag tells the retry policy what they are.
        return super().to_dict() | {"retryable": False}
