"""The taskloom exception tree.

Every error taskloom raises derives from :class:`TaskloomError` and says what happened
and what to do about it. Each class has a stable ``code`` that scripts can match on.

    TaskloomError
    ├── UserError                    misuse by the caller, raised early, with the fix
    │   ├── ConfigurationError       a bad setting or environment variable
    │   │   ├── RedisRefusedError    Redis refused the login, a command or the TLS handshake
    │   │   ├── MissingAPIKeyError   no key for a provider; names the variable (agents)
    │   │   └── PriceTableError      a bad price table or a model with no price (agents)
    │   ├── SerializationError       a value that does not serialize to JSON
    │   ├── UnknownWorkflowError     a workflow name no worker has registered
    │   ├── UnknownActivityError     an activity name no worker has registered
    │   ├── RunIdConflictError       a run id reused with a different input
    │   ├── RunNotFoundError         a run id that does not exist
    │   ├── RunActiveError           deleting a run that has not ended (cancel it first)
    │   ├── PayloadTooLargeError     a payload over the hard limit (TASKLOOM_PAYLOAD_HARD_LIMIT)
    │   ├── DeadLetterNotFoundError  a dead-letter entry that does not exist (or is closed)
    │   ├── HumanTaskNotFoundError   a human task that does not exist
    │   ├── HumanTaskClosedError     a decision on a task already decided (or expired)
    │   ├── PlanError                a plan that is not a valid DAG for its run (problems inside)
    │   ├── VerifierConfigError      a verifier set up wrongly (verifiers)
    │   │   ├── UnknownVerifierError a verify spec naming a verifier nobody registered
    │   │   └── MissingRunnerError   an LLM judge with no model runner to call
    │   ├── LinkRefusedError         a magic link that may not decide (web; 403 or 410)
    │   ├── SigninThrottledError     too many wrong sign-in tokens for now (web; 429)
    │   ├── UnknownProviderError     a model name whose provider prefix is unknown (agents)
    │   └── PromptError              a template missing, or missing a variable (agents)
    ├── StoreError                   the Redis state store
    │   ├── RedisUnavailableError    Redis cannot be reached
    │   ├── EmbeddedRedisError       the embedded redis-server would not start
    │   ├── BlobNotFoundError        a blob reference whose blob is not in the blob store
    │   ├── BlobCorruptedError       a stored blob whose content no longer matches its hash
    │   └── LeaseLostError           this worker no longer owns the run (fenced)
    │       └── StoreRolledBackError Redis lost writes this owner saw (it replays the run)
    ├── WorkflowError                a run did not produce a result
    │   ├── NondeterminismError      replay diverged from the recorded log
    │   ├── ActivityError            an activity failed (cause inside)
    │   ├── ChildWorkflowError       a child run failed
    │   ├── RunFailedError           the run failed (raised by ``RunHandle.result``)
    │   ├── RunTimeoutError          the run ran past its timeout
    │   ├── HumanTaskExpiredError    an escalation's SLA fallback gave up on it
    │   └── RunCancelledError        the run was cancelled
    ├── ActivityFailure              raised by activity code to steer its retries
    │   ├── RetryableError           retry this attempt (after ``retry_after`` if given)
    │   │   ├── LLMRateLimitedError  the provider answered 429 (agents)
    │   │   ├── LLMUnavailableError  5xx, timeout, dropped connection (agents)
    │   │   ├── LLMOutputError       invalid after the repair turn, or truncated (agents)
    │   │   └── RateLimitDeferredError  the shared rate limit would wait too long (agents)
    │   ├── NonRetryableError        never retry: give up on the activity at once
    │   │   ├── LLMRequestError      a 400; LLMContextLengthError under it (agents)
    │   │   ├── LLMAuthError         401/403 (agents)
    │   │   ├── BudgetExceededError  the run's token or USD budget (agents)
    │   │   └── RequestExceedsRateLimitError  a call bigger than a limit allows (agents)
    │   └── ActivityTimeoutError     an attempt ran past a timeout (retried like a failure)

Errors marked (agents) are defined in :mod:`taskloom.agents.errors`, the lowest layer, with the
root and the ActivityFailure branch; this module re-exports the root. Those marked
(verifiers) live in :mod:`taskloom.verifiers.errors`, (web) in :mod:`taskloom.inbox.links`
and :mod:`taskloom.web.throttle`.

Cancellation of workflow code uses :class:`asyncio.CancelledError`, a ``BaseException``,
so ``except Exception`` in user code cannot swallow it.
"""

from __future__ import annotations

import traceback
from typing import Any

from taskloom.agents.errors import (
    ActivityFailure,
    ConfigurationError,
    NonRetryableError,
    RetryableError,
    TaskloomError,
    UserError,
)
from taskloom.engine.bounds import ERROR_TEXT_LIMIT, TRACEBACK_LIMIT, bound_text

__all__ = [
    "ActivityError",
    "ActivityFailure",
    "ActivityTimeoutError",
    "BlobCorruptedError",
    "BlobNotFoundError",
    "ChildWorkflowError",
    "ConfigurationError",
    "DeadLetterNotFoundError",
    "EmbeddedRedisError",
    "HumanTaskClosedError",
    "HumanTaskExpiredError",
    "HumanTaskNotFoundError",
    "LeaseLostError",
    "NonRetryableError",
    "NondeterminismError",
    "PayloadTooLargeError",
    "PlanError",
    "RedisRefusedError",
    "RedisUnavailableError",
    "RetryableError",
    "RunActiveError",
    "RunCancelledError",
    "RunFailedError",
    "RunIdConflictError",
    "RunNotFoundError",
    "RunTimeoutError",
    "SerializationError",
    "StoreError",
    "StoreRolledBackError",
    "TaskloomError",
    "UnknownActivityError",
    "UnknownWorkflowError",
    "UserError",
    "WorkflowError",
]


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


class RunActiveError(UserError):
    """The run has not ended (pending, running or waiting): it cannot be deleted until it
    completes, fails or is cancelled."""

    code = "run_active"


class DeadLetterNotFoundError(UserError):
    """No dead-letter entry with this id, or it can no longer be acted on."""

    code = "dead_letter_not_found"


class HumanTaskNotFoundError(UserError):
    """No human task with this id."""

    code = "human_task_not_found"


class HumanTaskClosedError(UserError):
    """The human task was already decided, expired, or its run ended: one decision each."""

    code = "human_task_closed"


class PlanError(UserError):
    """A plan that cannot run: a cycle, unknown ids or roles, over a limit or the budget.

    ``problems`` lists each one, in words the planner (or a person) can act on.
    """

    code = "invalid_plan"

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class StoreError(TaskloomError):
    """A problem with the Redis state store."""

    code = "store"


class RedisUnavailableError(StoreError):
    """Redis could not be reached (after retrying with backoff)."""

    code = "redis_unavailable"


class RedisRefusedError(ConfigurationError):
    """Redis answered, and said no: a wrong or missing password, a disabled user, a
    command or key an ACL user may not use, a TLS handshake that cannot succeed, or a
    URL of the wrong mode (a single Redis's for a cluster node, or the other way).
    Asking again gets the same answer, so it is reported at once, never retried as an
    outage. ``kind`` says which (``wrong_password``, ``no_password``, ``no_password_set``,
    ``login``, ``permission``, ``tls_untrusted``, ``not_tls``, ``tls_required``,
    ``tls_client_cert``, ``tls``, ``cluster_mode``, ``not_cluster``) and ``fix`` what to
    change; neither holds a credential."""

    code = "redis_refused"

    def __init__(self, message: str, *, kind: str = "login", fix: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.fix = fix

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"kind": self.kind, "fix": self.fix}


class EmbeddedRedisError(StoreError):
    """The embedded redis-server could not be started."""

    code = "embedded_redis"


class LeaseLostError(StoreError):
    """This worker's lease on a run expired or was taken over (stale epoch)."""

    code = "lease_lost"


class StoreRolledBackError(LeaseLostError):
    """Redis no longer holds a log entry this owner saw written: the server lost
    acknowledged writes (a crash under ``appendfsync everysec``, a failover to a replica
    that lagged). The owner stops and replays the run from what Redis holds instead of
    writing past the hole; ``TASKLOOM_DURABILITY=fsync`` keeps it from happening."""

    code = "store_rolled_back"


class WorkflowError(TaskloomError):
    """A workflow run could not produce its result."""

    code = "workflow"


class NondeterminismError(WorkflowError):
    """Replaying a run called a different step than the log recorded at that position."""

    code = "nondeterminism"


class ActivityError(WorkflowError):
    """An activity failed for good; ``error_type`` and ``message`` describe the last
    error, ``attempts`` how many attempts were made, ``history`` each attempt's error
    and timing."""

    code = "activity_failed"

    def __init__(
        self,
        message: str,
        *,
        activity: str = "",
        error_type: str = "",
        attempts: int = 1,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.activity = activity
        self.error_type = error_type
        self.attempts = attempts
        self.history = history or []


class ChildWorkflowError(WorkflowError):
    """A child run failed or was cancelled."""

    code = "child_failed"


class RunFailedError(WorkflowError):
    """The run failed; raised by ``RunHandle.result()``."""

    code = "run_failed"

    def __init__(self, message: str, *, error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = error or {}


class RunTimeoutError(WorkflowError):
    """The run ran past the ``timeout`` it was started with (recorded as its error)."""

    code = "run_timeout"


class HumanTaskExpiredError(WorkflowError):
    """An escalation's SLA passed and its fallback gave up waiting for a decision."""

    code = "human_task_expired"


class RunCancelledError(WorkflowError):
    """The run was cancelled before it produced a result."""

    code = "run_cancelled"


class ActivityTimeoutError(ActivityFailure):
    """An attempt ran past a timeout. ``kind``: ``start_to_close`` (it took too long),
    ``heartbeat`` (it stopped heartbeating: hung) or ``schedule_to_start`` (it waited
    in the queue too long; not retried, as no worker was there to take it)."""

    code = "activity_timeout"

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"kind": self.kind}


class BlobNotFoundError(StoreError):
    """A blob reference names a blob that is not in the blob store; ``ref`` and
    ``location`` say which blob and which store."""

    code = "blob_not_found"

    def __init__(self, message: str, *, ref: str = "", location: str = "") -> None:
        super().__init__(message)
        self.ref = ref
        self.location = location


class BlobCorruptedError(StoreError):
    """A stored blob's bytes no longer hash to its reference (changed or truncated)."""

    code = "blob_corrupted"

    def __init__(self, message: str, *, ref: str = "", location: str = "") -> None:
        super().__init__(message)
        self.ref = ref
        self.location = location


class PayloadTooLargeError(UserError):
    """A payload is larger than the hard limit; ``size`` and ``limit`` are in bytes."""

    code = "payload_too_large"

    def __init__(self, message: str, *, size: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


def error_dict(exc: BaseException) -> dict[str, Any]:
    """An exception as a run's log stores it: type, message, code, traceback.

    The message and the traceback are bounded (:mod:`taskloom.engine.bounds`): a longer
    message keeps its head and tail, and ``message_bytes`` says how long it was; the
    traceback then names it instead of repeating it."""
    if isinstance(exc, TaskloomError):
        out = exc.to_dict()
    else:
        out = {"type": type(exc).__name__, "message": str(exc)}
    message = str(out.get("message", ""))
    text = "".join(traceback.format_exception(exc))
    bounded = bound_text(message, ERROR_TEXT_LIMIT)
    if len(bounded) < len(message):
        out["message"], out["message_bytes"] = bounded, len(message.encode())
        text = text.replace(message, "<the message, cut above>")
    out["traceback"] = bound_text(text, TRACEBACK_LIMIT, slack=0)
    return out
