"""The taskloom exception tree.

Every error taskloom raises derives from :class:`TaskloomError` and says what happened
and what to do about it. Each class has a stable ``code`` that scripts can match on.

    TaskloomError
    ├── UserError                    misuse by the caller, raised early, with the fix
    │   ├── ConfigurationError       a bad setting or environment variable
    │   ├── SerializationError       a value that does not serialize to JSON
    │   ├── UnknownWorkflowError     a workflow name no worker has registered
    │   ├── UnknownActivityError     an activity name no worker has registered
    │   ├── RunIdConflictError       a run id reused with a different input
    │   └── RunNotFoundError         a run id that does not exist
    ├── StoreError                   the Redis state store
    │   ├── RedisUnavailableError    Redis cannot be reached
    │   ├── EmbeddedRedisError       the embedded redis-server would not start
    │   └── LeaseLostError           this worker no longer owns the run (fenced)
    ├── WorkflowError                a run did not produce a result
    │   ├── NondeterminismError      replay diverged from the recorded log
    │   ├── ActivityError            an activity failed (cause inside)
    │   ├── ChildWorkflowError       a child run failed
    │   ├── RunFailedError           the run failed (raised by ``RunHandle.result``)
    │   └── RunCancelledError        the run was cancelled

Cancellation of workflow code uses :class:`asyncio.CancelledError`, a ``BaseException``,
so ``except Exception`` in user code cannot swallow it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActivityError",
    "ChildWorkflowError",
    "ConfigurationError",
    "EmbeddedRedisError",
    "LeaseLostError",
    "NondeterminismError",
    "RedisUnavailableError",
    "RunCancelledError",
    "RunFailedError",
    "RunIdConflictError",
    "RunNotFoundError",
    "SerializationError",
    "StoreError",
    "TaskloomError",
    "UnknownActivityError",
    "UnknownWorkflowError",
    "UserError",
    "WorkflowError",
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


class SerializationError(UserError):
    """A value crossing Redis is not JSON-serializable."""

    code = "serialization"


class UnknownWorkflowError(UserError):
    """A workflow name that this process has not registered."""

    code = "unknown_workflow"


class UnknownActivityError(UserError):
    """An activity name that this worker has not registered."""

    code = "unknown_activity"


class RunIdConflictError(UserError):
    """A caller-chosen run id was reused with a different workflow or input."""

    code = "run_id_conflict"


class RunNotFoundError(UserError):
    """No run with this id exists in the store."""

    code = "run_not_found"


class StoreError(TaskloomError):
    """A problem with the Redis state store."""

    code = "store"


class RedisUnavailableError(StoreError):
    """Redis could not be reached (after retrying with backoff)."""

    code = "redis_unavailable"


class EmbeddedRedisError(StoreError):
    """The embedded redis-server could not be started."""

    code = "embedded_redis"


class LeaseLostError(StoreError):
    """This worker's lease on a run expired or was taken over (stale epoch)."""

    code = "lease_lost"


class WorkflowError(TaskloomError):
    """A workflow run could not produce its result."""

    code = "workflow"


class NondeterminismError(WorkflowError):
    """Replaying a run called a different step than the log recorded at that position."""

    code = "nondeterminism"


class ActivityError(WorkflowError):
    """An activity failed; ``error_type`` and ``message`` describe the original error."""

    code = "activity_failed"

    def __init__(self, message: str, *, activity: str = "", error_type: str = "") -> None:
        super().__init__(message)
        self.activity = activity
        self.error_type = error_type


class ChildWorkflowError(WorkflowError):
    """A child run failed or was cancelled."""

    code = "child_failed"


class RunFailedError(WorkflowError):
    """The run failed; raised by ``RunHandle.result()``."""

    code = "run_failed"

    def __init__(self, message: str, *, error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = error or {}


class RunCancelledError(WorkflowError):
    """The run was cancelled before it produced a result."""

    code = "run_cancelled"
