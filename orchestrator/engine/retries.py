"""Retry policies: how often, and how long apart, a failing activity is tried again.

A policy belongs to an activity (``@activity(retry=RetryPolicy(...))``), else to the
worker that runs it (``Worker(retry=...)``). Between attempts the activity waits on a
durable timer in Redis, not in a worker's memory, so a retry survives any worker's
death. When attempts run out, or the error is non-retryable, the activity goes to the
dead-letter queue and, by ``on_exhausted``:

- ``"raise"`` (default): the workflow gets an :class:`~taskloom.ActivityError` it
  can catch (the entry stays in the dead-letter queue for the record);
- ``"pause"``: the run waits on the activity, holding no slot, until an operator
  redrives it (fresh attempts; the run continues when one succeeds) or purges it (the
  workflow then gets the :class:`~taskloom.ActivityError`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from taskloom.errors import ConfigurationError

__all__ = ["DEFAULT_RETRY", "NEVER_RETRIED", "RetryPolicy"]

# Errors that no retry can fix: the caller must change something first.
NEVER_RETRIED = frozenset(
    {"NonRetryableError", "UnknownActivityError", "SerializationError", "PayloadTooLargeError"}
)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Attempts and exponential backoff with jitter.

    The wait after failed attempt ``n`` (1-based) is
    ``min(initial_interval * backoff ** (n - 1), max_interval)``, moved by up to
    ``± jitter`` of itself, unless the error asked for its own delay
    (:class:`~taskloom.RetryableError` with ``retry_after``).

    Example::

        @activity(retry=RetryPolicy(max_attempts=5, initial_interval=0.5,
                                    non_retryable=["ValidationError"]))
        async def summarize(text: str) -> str: ...
    """

    max_attempts: int = 3
    """Attempts in all, the first included; 1 means never retry."""
    initial_interval: float = 1.0
    """Seconds to wait after the first failure."""
    max_interval: float = 60.0
    """Seconds the wait grows to at most."""
    backoff: float = 2.0
    """Factor by which the wait grows after each failure (>= 1)."""
    jitter: float = 0.2
    """Fraction (0 to 1) by which each wait is moved at random, so that many activities
    failing together do not retry together."""
    non_retryable: tuple[str, ...] = field(default=())
    """Exception type names (``"ValueError"``) never retried."""
    on_exhausted: Literal["raise", "pause"] = "raise"
    """After the last attempt: raise into the workflow, or pause the run for an operator."""

    def __post_init__(self) -> None:
        problems = []
        if self.max_attempts < 1:
            problems.append(f"max_attempts must be >= 1 (got {self.max_attempts})")
        if self.initial_interval < 0:
            problems.append(f"initial_interval must be >= 0 s (got {self.initial_interval})")
        if self.max_interval < self.initial_interval:
            problems.append(
                f"max_interval ({self.max_interval}) must be >= initial_interval "
                f"({self.initial_interval})"
            )
        if self.backoff < 1:
            problems.append(f"backoff must be >= 1 (got {self.backoff})")
        if not 0 <= self.jitter <= 1:
            problems.append(f"jitter must be between 0 and 1 (got {self.jitter})")
        if self.on_exhausted not in ("raise", "pause"):
            problems.append(f"on_exhausted must be 'raise' or 'pause' (got {self.on_exhausted!r})")
        if problems:
            raise ConfigurationError("invalid RetryPolicy: " + "; ".join(problems))
        object.__setattr__(self, "non_retryable", tuple(self.non_retryable))

    def delay(self, attempt: int, *, rand: float = 0.5) -> float:
        """Seconds to wait after failed attempt ``attempt``; ``rand`` in [0, 1) picks
        the jitter (0.5: none)."""
        base = min(self.initial_interval * self.backoff ** (attempt - 1), self.max_interval)
        return max(0.0, base * (1 + self.jitter * (2 * rand - 1)))

    def retries(self, error: dict[str, Any], attempt: int) -> bool:
        """Whether failed attempt ``attempt`` (counted in this generation) with ``error``
        (as stored: ``{"type": ..., "message": ...}``) gets another attempt."""
        kind = str(error.get("type", ""))
        if kind in NEVER_RETRIED or kind in self.non_retryable or error.get("retryable") is False:
            return False
        if error.get("kind") == "schedule_to_start":  # no worker took it: waiting more won't help
            return False
        return attempt < self.max_attempts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form."""
        out = asdict(self)
        out["non_retryable"] = list(self.non_retryable)
        return out


DEFAULT_RETRY = RetryPolicy()
