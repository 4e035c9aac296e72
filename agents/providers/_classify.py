"""SDK exceptions turned into taskloom's errors: retryable or not, and why."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from ..errors import (
    LLMAuthError,
    LLMContextLengthError,
    LLMRateLimitedError,
    LLMRequestError,
    LLMUnavailableError,
    TaskloomError,
)
from ._transport import is_transport_error

__all__ = ["classify", "kept_headers", "retry_after", "root_cause", "sdk_error"]

_CONTEXT_HINTS = (
    "context length",
    "context_length",
    "maximum context",
    "too many tokens",
    "prompt is too long",
)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or a date)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers rate limiting reads: ``retry-after*`` and ``*ratelimit*``."""
    return {
        k.lower(): v
        for k, v in headers.items()
        if k.lower().startswith("retry-after") or "ratelimit" in k.lower()
    }


def classify(
    exc: Exception,
    *,
    provider: str,
    model: str,
    status: int | None,
    headers: Mapping[str, str],
    body: Any,
    url: str = "",
) -> TaskloomError:
    """The taskloom error for an SDK error (``status`` ``None``: no HTTP answer);
    ``url``: the provider's base URL, named when it did not answer."""
    where = f"{provider}:{model}"
    message = _message(body) or str(exc)
    if status is None:
        at = f" from {url}" if url else ""
        return LLMUnavailableError(
            f"{where}: no answer{at} ({root_cause(exc)}); retried. Check that the address "
            f"is right and reachable from here (a proxy, a firewall, the provider's status)"
        )
    if status == 429:
        wait = retry_after(headers)
        after = f", retry after {wait:g}s" if wait is not None else ""
        text = f"{where}: rate limited (429){after}: {message}"
        return LLMRateLimitedError(text, retry_after=wait)
    if status >= 500 or status in (408, 409):
        return LLMUnavailableError(f"{where}: the provider answered {status}: {message}; retried")
    if status in (401, 403):
        return LLMAuthError(
            f"{where}: the provider refused the credentials ({status}): {message}; check the "
            f"API key (OPENAI_API_KEY / ANTHROPIC_API_KEY) and its permissions"
        )
    if any(hint in message.lower() for hint in _CONTEXT_HINTS):
        return LLMContextLengthError(
            f"{where}: the request is longer than the model's context ({status}): {message}; "
            f"shorten the input or pick a model with a larger context"
        )
    return LLMRequestError(f"{where}: the provider rejected the request ({status}): {message}")


def root_cause(exc: BaseException) -> str:
    """``Type: message`` of the deepest exception behind ``exc`` that says something:
    the SDK's "Connection error." or "Request timed out." hides "Connection refused"."""
    found, seen = exc, {id(exc)}
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if str(cause):
            found = cause
        cause = cause.__cause__ or cause.__context__
    return f"{type(found).__name__}: {found}" if str(found) else type(found).__name__


def sdk_error(
    provider: Any, exc: Exception, *, sdk: ModuleType, model: str
) -> TaskloomError | None:
    """The taskloom error for ``exc`` raised by a call of ``provider`` (an SDK provider:
    its ``name``, and its ``client`` whose base URL an unanswered call names) through
    ``sdk`` (``openai`` or ``anthropic``, whose error classes have the same names);
    ``None`` for an error that is neither the provider's answer nor the transport's (a
    bug: raise it as it is)."""
    status: int | None = None
    headers: dict[str, str] = {}
    body: Any = None
    if isinstance(exc, sdk.APIStatusError):
        status, headers, body = exc.status_code, dict(exc.response.headers), exc.body
    elif not isinstance(exc, sdk.APIConnectionError) and not is_transport_error(exc):
        return None  # (a stream cut mid-way surfaces unwrapped from the SDK: transport)
    return classify(
        exc,
        provider=provider.name,
        model=model,
        status=status,
        headers=headers,
        body=body,
        url=str(provider.client.base_url),
    )


def _message(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or "")
        return str(err)
    return "" if body is None else str(body)
