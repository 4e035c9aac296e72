"""OpenAI Chat Completions on the wire (``POST /v1/chat/completions``)."""

from __future__ import annotations

from typing import Any

from ._http import sse_event
from ._steps import ErrorKind, ErrorReply, RateLimit
from ._wire import Outcome, split_arguments, split_text

__all__ = ["OpenAIWire", "json_mode_rejection"]

# (type, code, param, default message) per error kind, as api.openai.com answers.
_ERRORS: dict[ErrorKind, tuple[str, str | None, str | None, str]] = {
    "invalid_request": ("invalid_request_error", None, None, "Invalid request."),
    "context_length": (
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 131072 tokens. Please reduce the length of the messages.",
    ),
    "authentication": (
        "invalid_request_error",
        "invalid_api_key",
        None,
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    "permission": ("invalid_request_error", None, None, "You are not allowed to do this."),
    "not_found": (
        "invalid_request_error",
        "model_not_found",
        None,
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    "rate_limit": (
        "tokens",
        "rate_limit_exceeded",
        None,
        "Rate limit reached for {model} in organization org-fake on tokens per min (TPM). "
        "Please try again in {retry_after}.",
    ),
    "server": (
        "server_error",
        None,
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "overloaded": ("server_error", None, None, "The engine is currently overloaded."),
}


def json_mode_rejection(
    body: dict[str, Any], *, reject_json_schema: bool, reject_json_object: bool
) -> dict[str, Any] | None:
    """The 400 body a local server (llama.cpp's, older vLLM) sends for a
    ``response_format`` it does not support, or ``None`` when it is accepted."""
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if (kind == "json_schema" and reject_json_schema) or (
        kind == "json_object" and reject_json_object
    ):
        supported = ["text"] + ([] if reject_json_object else ["json_object"])
        return {
            "error": {
                "code": 400,
                "message": f"response_format type '{kind}' is not supported by this server; "
                f"supported types: {', '.join(supported)}",
                "type": "invalid_request_error",
                "param": "response_format",
            }
        }
    return None


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{round(secs, 3):g}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def _usage(outcome: Outcome) -> dict[str, Any]:
    return {
        "prompt_tokens": outcome.input_tokens,
        "completion_tokens": outcome.output_tokens,
        "total_tokens": outcome.input_tokens + outcome.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _call_id(outcome: Outcome, i: int, given: str | None) -> str:
    return given or f"call_fake{outcome.index:05d}x{i}"


class OpenAIWire:
    """Chat Completions: ``chat.completion`` objects, ``chat.completion.chunk`` SSE."""

    def validate(self, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str):
            return "you must provide a model parameter"
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return "'messages' must be a non-empty array"
        return None

    def max_output_tokens(self, body: dict[str, Any]) -> int | None:
        for key in ("max_completion_tokens", "max_tokens"):
            value = body.get(key)
            if isinstance(value, int):
                return value
        return None

    def _base(self, outcome: Outcome, obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake{outcome.index:05d}",
            "object": obj,
            "created": outcome.created,
            "model": outcome.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def response(self, outcome: Outcome) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": outcome.text if outcome.text or not outcome.tool_calls else None,
            "refusal": None,
            "annotations": [],
        }
        if outcome.tool_calls:
            message["tool_calls"] = [
                {
                    "id": _call_id(outcome, i, c.id),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json()},
                }
                for i, c in enumerate(outcome.tool_calls)
            ]
        return self._base(outcome, "chat.completion") | {
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": outcome.finish,
                }
            ],
            "usage": _usage(outcome),
        }

    def events(self, outcome: Outcome, body: dict[str, Any]) -> list[bytes]:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        base = self._base(outcome, "chat.completion.chunk")
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse_event(base | {"choices": [choice]})

        out = [chunk({"role": "assistant", "content": "", "refusal": None})]
        out += [chunk({"content": piece}) for piece in split_text(outcome.text)]
        for i, call in enumerate(outcome.tool_calls):
            head = {
                "index": i,
                "id": _call_id(outcome, i, call.id),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            out.append(chunk({"tool_calls": [head]}))
            out += [
                chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                for piece in split_arguments(call.arguments_json())
            ]
        out.append(chunk({}, outcome.finish))
        if include_usage:
            out.append(sse_event(base | {"choices": [], "usage": _usage(outcome)}))
        out.append(sse_event("[DONE]"))
        return out

    def error_body(self, err: ErrorReply, *, model: str, index: int) -> Any:
        if err.body is not None:
            return err.body
        type_, code, param, default = _ERRORS[err.error_kind]
        retry = "a moment" if err.retry_after is None else f"{err.retry_after:g}s"
        message = err.message or default.format(model=model or "the model", retry_after=retry)
        return {"error": {"message": message, "type": type_, "param": param, "code": code}}

    def headers(self, index: int, rate_limit: RateLimit | None) -> dict[str, str]:
        out = {"x-request-id": f"req_fake{index:05d}", "openai-processing-ms": "1"}
        if rate_limit is None:
            return out
        for what in ("requests", "tokens"):
            limit = getattr(rate_limit, f"limit_{what}")
            remaining = getattr(rate_limit, f"remaining_{what}")
            reset = getattr(rate_limit, f"reset_{what}")
            if limit is not None:
                out[f"x-ratelimit-limit-{what}"] = str(limit)
            if remaining is not None:
                out[f"x-ratelimit-remaining-{what}"] = str(remaining)
            if reset is not None:
                out[f"x-ratelimit-reset-{what}"] = _duration(reset)
        return out
