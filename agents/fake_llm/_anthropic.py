"""Anthropic Messages on the wire (``POST /v1/messages``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ._http import sse_event
from ._steps import ErrorKind, ErrorReply, RateLimit
from ._wire import Outcome, split_arguments, split_text

__all__ = ["AnthropicWire"]

# (error.type, default message) per error kind, as api.anthropic.com answers.
_ERRORS: dict[ErrorKind, tuple[str, str]] = {
    "invalid_request": ("invalid_request_error", "Invalid request."),
    "context_length": (
        "invalid_request_error",
        "prompt is too long: 215000 tokens > 200000 maximum",
    ),
    "authentication": ("authentication_error", "invalid x-api-key"),
    "permission": (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    "not_found": ("not_found_error", "model: {model}"),
    "rate_limit": (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of input tokens "
        "per minute. Please try again in {retry_after}.",
    ),
    "server": ("api_error", "Internal server error"),
    "overloaded": ("overloaded_error", "Overloaded"),
}

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(
            f"tool arguments {arguments!r} are not a JSON object, which a non-streamed "
            "Anthropic message cannot carry (stream the request to send them verbatim)"
        )
    return value


def _usage(outcome: Outcome, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": outcome.input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }


def _tool_id(outcome: Outcome, i: int, given: str | None) -> str:
    return given or f"toolu_fake{outcome.index:05d}x{i}"


class AnthropicWire:
    """Messages: ``message`` objects; the ``message_start`` ... ``message_stop`` SSE."""

    def validate(self, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str):
            return "model: Field required"
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return "messages: at least one message is required"
        return None

    def max_output_tokens(self, body: dict[str, Any]) -> int | None:
        value = body.get("max_tokens")
        return value if isinstance(value, int) else None

    def _message(
        self, outcome: Outcome, content: list[Any], usage: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": f"msg_fake{outcome.index:05d}",
            "type": "message",
            "role": "assistant",
            "model": outcome.model,
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }

    def response(self, outcome: Outcome) -> dict[str, Any]:
        """Raises ValueError when a scripted tool call's arguments are not a JSON
        object: a non-streamed Message cannot carry them."""
        content: list[dict[str, Any]] = []
        if outcome.text or not outcome.tool_calls:
            content.append({"type": "text", "text": outcome.text, "citations": None})
        for i, call in enumerate(outcome.tool_calls):
            content.append(
                {
                    "type": "tool_use",
                    "id": _tool_id(outcome, i, call.id),
                    "name": call.name,
                    "input": _tool_input(call.arguments_json()),
                }
            )
        message = self._message(outcome, content, _usage(outcome, outcome.output_tokens))
        return message | {"stop_reason": _STOP[outcome.finish]}

    def events(self, outcome: Outcome, body: dict[str, Any]) -> list[bytes]:
        start = self._message(outcome, [], _usage(outcome, 1))
        out = [sse_event({"type": "message_start", "message": start}, "message_start")]
        blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        if outcome.text or not outcome.tool_calls:
            deltas = [{"type": "text_delta", "text": t} for t in split_text(outcome.text)]
            blocks.append(({"type": "text", "text": "", "citations": None}, deltas))
        for i, call in enumerate(outcome.tool_calls):
            head = {
                "type": "tool_use",
                "id": _tool_id(outcome, i, call.id),
                "name": call.name,
                "input": {},
            }
            pieces = split_arguments(call.arguments_json())
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
            blocks.append((head, deltas))
        for index, (head, deltas) in enumerate(blocks):
            out.append(
                sse_event(
                    {"type": "content_block_start", "index": index, "content_block": head},
                    "content_block_start",
                )
            )
            if index == 0:
                out.append(sse_event({"type": "ping"}, "ping"))
            out += [
                sse_event(
                    {"type": "content_block_delta", "index": index, "delta": d},
                    "content_block_delta",
                )
                for d in deltas
            ]
            out.append(
                sse_event({"type": "content_block_stop", "index": index}, "content_block_stop")
            )
        delta = {"stop_reason": _STOP[outcome.finish], "stop_sequence": None}
        out.append(
            sse_event(
                {
                    "type": "message_delta",
                    "delta": delta,
                    "usage": {"output_tokens": outcome.output_tokens},
                },
                "message_delta",
            )
        )
        out.append(sse_event({"type": "message_stop"}, "message_stop"))
        return out

    def error_body(self, err: ErrorReply, *, model: str, index: int) -> Any:
        if err.body is not None:
            return err.body
        type_, default = _ERRORS[err.error_kind]
        retry = "a moment" if err.retry_after is None else f"{err.retry_after:g}s"
        message = err.message or default.format(model=model or "unknown", retry_after=retry)
        return {
            "type": "error",
            "error": {"type": type_, "message": message},
            "request_id": f"req_fake{index:05d}",
        }

    def headers(self, index: int, rate_limit: RateLimit | None) -> dict[str, str]:
        out = {"request-id": f"req_fake{index:05d}"}
        if rate_limit is None:
            return out
        now = datetime.now(UTC)
        for what in ("requests", "tokens"):
            limit = getattr(rate_limit, f"limit_{what}")
            remaining = getattr(rate_limit, f"remaining_{what}")
            reset = getattr(rate_limit, f"reset_{what}")
            if limit is not None:
                out[f"anthropic-ratelimit-{what}-limit"] = str(limit)
            if remaining is not None:
                out[f"anthropic-ratelimit-{what}-remaining"] = str(remaining)
            if reset is not None:
                at = now + timedelta(seconds=reset)
                out[f"anthropic-ratelimit-{what}-reset"] = at.isoformat(timespec="seconds").replace(
                    "+00:00", "Z"
                )
        return out
