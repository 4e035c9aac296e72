"""The root of taskloom's exceptions, shared by every package.

``agents`` (the lowest layer) defines the root and the errors activity code raises to
steer retries; :mod:`taskloom.errors` re-exports them and draws the whole tree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "ActivityFailure",
    "BudgetExceededError",
    "ConfigurationError",
    "LLMAuthError",
    "LLMContextLengthError",
    "LLMOutputError",
    "LLMRateLimitedError",
    "LLMRequestError",
    "LLMUnavailableError",
    "MissingAPIKeyError",
    "NonRetryableError",
    "PriceTableError",
    "PromptError",
    "PromptNotFoundError",
    "PromptVariableError",
    "RateLimitDeferredError",
    "RequestExceedsRateLimitError",
    "RetryableError",
    "TaskloomError",
    "UnknownModelPriceError",
    "UnknownProviderError",
    "UserError",
    "validation_problems",
]


class TaskloomError(Exception):
    """Root of every error taskloom raises."""

    code = "taskloom_error"

    retryable: bool | None = None
    """``False``: retrying cannot help (stored as ``"retryable": false``)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description, as stored in a run's log."""
        out: dict[str, Any] = {"type": type(self).__name__, "code": self.code, "message": str(self)}
        if self.retryable is False:
            out["retryable"] = False
        return out


class UserError(TaskloomError):
    """The caller used taskloom wrongly; the message says how to fix it. Raised in an
    activity it is never retried: the same call would fail the same way."""

    code = "user_error"
    retryable = False


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
    retryable = False
    """Subclasses (an auth error, a malformed request) keep their own type name: the
    flag tells the retry policy what they are."""


class UnknownProviderError(UserError):
    """A model name whose provider prefix taskloom does not know."""

    code = "unknown_provider"


class MissingAPIKeyError(ConfigurationError):
    """No API key for a provider; the message names the variable to set."""

    code = "missing_api_key"


class LLMRateLimitedError(RetryableError):
    """The provider answered 429; retried after its Retry-After."""

    code = "llm_rate_limited"


class LLMUnavailableError(RetryableError):
    """No usable answer: a 5xx, a timeout, a dropped connection. Retried."""

    code = "llm_unavailable"


class LLMOutputError(RetryableError):
    """The model's output was unusable (invalid after the repair turn, or truncated). A
    new attempt may do better; the retry policy decides whether there is one, and it
    comes at once unless ``retry_after`` says otherwise: the model answered, nothing is
    overloaded, and the policy's backoff (made for outages and rate limits) would only
    make the run, or the person its escalation waits for, wait (4 attempts: 14 s)."""

    code = "llm_output"

    def __init__(self, message: str = "", *, retry_after: float | None = 0.0) -> None:
        super().__init__(message, retry_after=retry_after)


class LLMRequestError(NonRetryableError):
    """The provider rejected the request as malformed (400): retrying cannot help."""

    code = "llm_bad_request"


class LLMContextLengthError(LLMRequestError):
    """The request does not fit the model's context window."""

    code = "llm_context_length"


class LLMAuthError(NonRetryableError):
    """The provider refused the credentials (401/403)."""

    code = "llm_auth"


class RateLimitDeferredError(RetryableError):
    """taskloom's shared rate limiter would hold this call longer than the caller's
    ``max_wait``: retry the activity after ``retry_after`` seconds instead of holding a
    worker slot while waiting."""

    code = "rate_limit_deferred"


class RequestExceedsRateLimitError(NonRetryableError):
    """One call's estimated tokens exceed the tokens-per-minute limit of its model, so
    no minute could ever admit it: lower the estimate (max tokens) or raise the limit."""

    code = "request_exceeds_rate_limit"


class BudgetExceededError(NonRetryableError):
    """A run's budget cannot cover a call's estimate; no new call starts until the
    budget is raised. ``details`` holds the numbers (limits, spent, held, asked)."""

    code = "budget_exceeded"

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_budget_error, (str(self), self.details)

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"details": self.details}


def _rebuild_budget_error(message: str, details: dict[str, Any]) -> BudgetExceededError:
    return BudgetExceededError(message, details=details)


class PriceTableError(ConfigurationError):
    """A price table (built in, a dict or a file) has a value taskloom cannot use."""

    code = "price_table"


class UnknownModelPriceError(PriceTableError):
    """No price for a model; the message says how to add one."""

    code = "unknown_model_price"


class PromptError(UserError):
    """A prompt template could not be rendered (syntax, missing template or variable)."""

    code = "prompt"


class PromptNotFoundError(PromptError):
    """No prompt template by that name, in the user directory or the package."""

    code = "prompt_not_found"


class PromptVariableError(PromptError):
    """A template used a variable the caller did not pass (StrictUndefined)."""

    code = "prompt_variable"


def validation_problems(exc: ValidationError, *, whole: str = "input") -> list[str]:
    """pydantic's errors as ``field.path: message`` lines (``whole`` when the error is
    about the value itself)."""
    return [
        f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in exc.errors()
    ]
