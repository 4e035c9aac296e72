"""Scripted steps: what the fake server answers to one request.

A step is protocol-neutral: the same :class:`Reply` comes out as a Chat Completion on
``/v1/chat/completions`` and as a Message on ``/v1/messages``. Build steps with the
helpers (:func:`reply`, :func:`tool_calls`, :func:`error`, ...) rather than the classes.
"""

from __future__ import annotations

import json as _json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from taskloom.agents.errors import UserError

__all__ = [
    "Disconnect",
    "ErrorKind",
    "ErrorReply",
    "Finish",
    "RateLimit",
    "Reply",
    "ScriptedToolCall",
    "Step",
    "context_length_exceeded",
    "disconnect",
    "error",
    "malformed_json",
    "rate_limited",
    "reply",
    "server_error",
    "tool_call",
    "tool_calls",
    "truncated",
    "unauthorized",
]

Finish = Literal["stop", "length", "tool_calls", "content_filter"]
"""Why generation ended, in OpenAI's words; on the Anthropic protocol these become
``end_turn``, ``max_tokens``, ``tool_use`` and ``refusal``."""

ErrorKind = Literal[
    "invalid_request",
    "context_length",
    "authentication",
    "permission",
    "not_found",
    "rate_limit",
    "server",
    "overloaded",
]
"""What an error means; picks the provider-shaped body (type, code, message)."""

_FINISHES = ("stop", "length", "tool_calls", "content_filter")
_KIND_BY_STATUS: dict[int, ErrorKind] = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    429: "rate_limit",
    503: "overloaded",
    529: "overloaded",
}
_UNSET: Any = object()


def _check_latency(latency: float, what: str) -> None:
    if latency < 0:
        raise UserError(f"{what}: latency must be >= 0 seconds, got {latency}")


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """Rate-limit state announced in response headers: OpenAI's ``x-ratelimit-*`` or
    Anthropic's ``anthropic-ratelimit-*``. ``reset_*`` are seconds from now.

    Example::

        rate_limited(retry_after=2, rate_limit=RateLimit(limit_tokens=30_000,
                                                         remaining_tokens=0,
                                                         reset_tokens=2.0))
    """

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None


@dataclass(frozen=True, kw_only=True)
class ScriptedToolCall:
    """One tool call the model makes. ``arguments`` is a JSON object, or a string sent
    verbatim (so a test can script arguments that are not valid JSON). ``id`` defaults
    to a deterministic id (``call_...`` / ``toolu_...``)."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        """The arguments as the JSON text the model emits."""
        if isinstance(self.arguments, str):
            return self.arguments
        return _json.dumps(dict(self.arguments), separators=(",", ":"))


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A successful answer: text and/or tool calls.

    ``finish`` defaults to ``"tool_calls"`` when there are tool calls, else ``"stop"``
    (the fake turns it into ``"length"`` itself when the text exceeds the request's
    max tokens). ``input_tokens`` / ``output_tokens`` override the estimate.
    ``latency`` is waited before the answer starts; ``chunk_delay`` between streamed
    chunks. ``rate_limit`` and ``headers`` add response headers.
    """

    text: str = ""
    tool_calls: tuple[ScriptedToolCall, ...] = ()
    finish: Finish | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency: float = 0.0
    chunk_delay: float = 0.0
    rate_limit: RateLimit | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_latency(self.latency, "Reply")
        _check_latency(self.chunk_delay, "Reply (chunk_delay)")
        if self.finish is not None and self.finish not in _FINISHES:
            raise UserError(f"Reply: finish must be one of {_FINISHES}, got {self.finish!r}")
        for n in (self.input_tokens, self.output_tokens):
            if n is not None and n < 0:
                raise UserError(f"Reply: token counts must be >= 0, got {n}")

    @property
    def finish_reason(self) -> Finish:
        """The finish reason this reply declares (before any max-tokens truncation)."""
        if self.finish is not None:
            return self.finish
        return "tool_calls" if self.tool_calls else "stop"


@dataclass(frozen=True, kw_only=True)
class ErrorReply:
    """An HTTP error with a provider-shaped body.

    ``kind`` picks the body's type/code (default: from the status); ``message``
    replaces the default message; ``body`` replaces the whole JSON body verbatim.
    ``retry_after`` sets the ``Retry-After`` header (seconds).
    """

    status: int
    message: str | None = None
    kind: ErrorKind | None = None
    retry_after: float | None = None
    rate_limit: RateLimit | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    latency: float = 0.0

    def __post_init__(self) -> None:
        _check_latency(self.latency, "ErrorReply")
        if not 400 <= self.status <= 599:
            raise UserError(f"ErrorReply: status must be a 4xx or 5xx code, got {self.status}")
        if self.retry_after is not None and self.retry_after < 0:
            raise UserError(f"ErrorReply: retry_after must be >= 0, got {self.retry_after}")

    @property
    def error_kind(self) -> ErrorKind:
        """The kind given, or the one the status implies."""
        if self.kind is not None:
            return self.kind
        return _KIND_BY_STATUS.get(
            self.status, "server" if self.status >= 500 else "invalid_request"
        )


@dataclass(frozen=True, kw_only=True)
class Disconnect:
    """Close the connection instead of answering: before any response
    (``after_chunks=None``), or, for a streaming request, after ``after_chunks``
    server-sent events of an answer made of ``text``. The SDKs raise a connection
    error."""

    after_chunks: int | None = None
    text: str = "This answer is cut off because the connection drops mid-stream."
    latency: float = 0.0

    def __post_init__(self) -> None:
        _check_latency(self.latency, "Disconnect")
        if self.after_chunks is not None and self.after_chunks < 0:
            raise UserError(f"Disconnect: after_chunks must be >= 0, got {self.after_chunks}")


Step: TypeAlias = Reply | ErrorReply | Disconnect
"""One scripted answer."""


def reply(
    text: str = "",
    *,
    json: Any = _UNSET,
    finish: Finish | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    latency: float = 0.0,
    chunk_delay: float = 0.0,
    rate_limit: RateLimit | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """A text answer; with ``json=``, that value serialized as the text.

    Example::

        reply("Paris")
        reply(json={"city": "Paris"}, latency=0.2)
        reply("Paris", input_tokens=1200, output_tokens=3)
    """
    if json is not _UNSET:
        if text:
            raise UserError("reply(): give either text or json=, not both")
        text = _json.dumps(json)
    return Reply(
        text=text,
        finish=finish,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency=latency,
        chunk_delay=chunk_delay,
        rate_limit=rate_limit,
        headers=dict(headers or {}),
    )


def tool_call(
    name: str, arguments: Mapping[str, Any] | str | None = None, *, id: str | None = None
) -> ScriptedToolCall:
    """One tool call, for :func:`tool_calls`.

    Example::

        tool_call("get_weather", {"city": "Paris"})
        tool_call("get_weather", '{"city": "Par')   # arguments that are not valid JSON
    """
    return ScriptedToolCall(name=name, arguments={} if arguments is None else arguments, id=id)


def tool_calls(
    *calls: ScriptedToolCall,
    text: str = "",
    finish: Finish | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    latency: float = 0.0,
    chunk_delay: float = 0.0,
    rate_limit: RateLimit | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """An answer that calls tools; several calls at once are parallel tool calls.

    Example::

        tool_calls(tool_call("add", {"a": 1, "b": 2}), tool_call("mul", {"a": 3, "b": 4}))
    """
    if not calls:
        raise UserError("tool_calls(): give at least one tool_call(...)")
    for c in calls:
        if not isinstance(c, ScriptedToolCall):
            raise UserError(f"tool_calls(): expected tool_call(...) values, got {c!r}")
    return Reply(
        text=text,
        tool_calls=tuple(calls),
        finish=finish,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency=latency,
        chunk_delay=chunk_delay,
        rate_limit=rate_limit,
        headers=dict(headers or {}),
    )


def truncated(text: str, *, latency: float = 0.0, output_tokens: int | None = None) -> Reply:
    """Text cut off by the token limit: finish reason ``length`` / ``max_tokens``.

    Example::

        truncated('{"summary": "The report says')
    """
    return Reply(text=text, finish="length", latency=latency, output_tokens=output_tokens)


def malformed_json(
    text: str = '{"answer": 42, "reason": "unterminated', *, latency: float = 0.0
) -> Reply:
    """A complete answer (finish reason ``stop``) whose text is not valid JSON, for
    testing the repair turn.

    Example::

        malformed_json()                       # '{"answer": 42, "reason": "unterminated'
        malformed_json("Sure! Here is the JSON you asked for.")
    """
    return Reply(text=text, latency=latency)


def error(
    status: int,
    message: str | None = None,
    *,
    kind: ErrorKind | None = None,
    retry_after: float | None = None,
    rate_limit: RateLimit | None = None,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    latency: float = 0.0,
) -> ErrorReply:
    """An HTTP error with the body the provider would send.

    Example::

        error(500)
        error(400, "messages: roles must alternate")
        error(403, body={"error": {"message": "exact body", "type": "x"}})
    """
    return ErrorReply(
        status=status,
        message=message,
        kind=kind,
        retry_after=retry_after,
        rate_limit=rate_limit,
        headers=dict(headers or {}),
        body=body,
        latency=latency,
    )


def rate_limited(
    retry_after: float | None = 1.0,
    *,
    message: str | None = None,
    rate_limit: RateLimit | None = None,
    headers: Mapping[str, str] | None = None,
    latency: float = 0.0,
) -> ErrorReply:
    """429 with ``Retry-After`` (seconds; fractions allowed, the SDKs honour them).

    Example::

        rate_limited(retry_after=0.2)
        rate_limited(2, rate_limit=RateLimit(remaining_tokens=0, reset_tokens=2.0))
    """
    return error(
        429,
        message,
        retry_after=retry_after,
        rate_limit=rate_limit,
        headers=headers,
        latency=latency,
    )


def server_error(
    status: int = 500, message: str | None = None, *, latency: float = 0.0
) -> ErrorReply:
    """A 5xx (500 by default; 503 and 529 read as "overloaded")."""
    if status < 500:
        raise UserError(f"server_error(): status must be 5xx, got {status}")
    return error(status, message, latency=latency)


def context_length_exceeded(message: str | None = None, *, latency: float = 0.0) -> ErrorReply:
    """400: the prompt does not fit the model's context window (not retryable)."""
    return error(400, message, kind="context_length", latency=latency)


def unauthorized(message: str | None = None, *, latency: float = 0.0) -> ErrorReply:
    """401: the API key was refused (not retryable)."""
    return error(401, message, latency=latency)


def disconnect(after_chunks: int | None = None, *, latency: float = 0.0) -> Disconnect:
    """Drop the connection (before answering, or mid-stream after ``after_chunks``
    events): the SDK raises its connection error, which is retryable.

    Example::

        disconnect()                  # no response at all
        disconnect(after_chunks=3)    # a streamed answer stops after 3 events
    """
    return Disconnect(after_chunks=after_chunks, latency=latency)
