"""Anthropic Messages through the official SDK."""

from __future__ import annotations

from typing import Any

import anthropic

from ..llm import LLMRequest, LLMResponse, Message, TokenSink, ToolCall, Usage
from ._classify import kept_headers, sdk_error
from ._transport import endpoint, http_client, parsed, shards_for, warm_models

__all__ = ["AnthropicProvider"]

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


_USAGE = {
    "input_tokens": 1,
    "output_tokens": 1,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "service_tier": "standard",
}
_MESSAGE = {
    "id": "msg",
    "type": "message",
    "role": "assistant",
    "model": "m",
    "content": [
        {"type": "text", "text": "hi", "citations": None},
        {"type": "tool_use", "id": "t", "name": "f", "input": {}},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": _USAGE,
}
_SAMPLES: list[tuple[Any, dict[str, Any]]] = [
    (anthropic.types.Message, _MESSAGE),
    *(
        (anthropic.types.RawMessageStreamEvent, event)
        for event in (
            {"type": "message_start", "message": _MESSAGE},
            {"type": "content_block_start", "index": 0, "content_block": _MESSAGE["content"][0]},  # type: ignore[index]
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "h"},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{"},
            },
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": _USAGE,
            },
            {"type": "message_stop"},
        )
    ),
]
"""Minimal responses of the types the SDK parses (see :func:`warm_models`)."""


class AnthropicProvider:
    """Messages on :class:`anthropic.AsyncAnthropic`. Anthropic has no JSON mode: for
    structured output the schema goes into the system prompt (see
    ``taskloom.agents.structured``)."""

    name = "anthropic"

    def __init__(self, *, api_key: str, base_url: str | None = None, max_retries: int = 0) -> None:
        http = http_client(anthropic)
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            http_client=http,
        )
        self.shards = shards_for(http)
        """How many clients like this one are worth spreading calls over."""
        self.endpoint = endpoint(self.name, self.client.base_url)
        """Who serves its calls: the provider and base URL, without secrets."""
        # its tracing imports OpenTelemetry's propagators on the first request
        warm_models(anthropic, _SAMPLES, calls=["anthropic._tracing:trace_context_injector"])

    async def aclose(self) -> None:
        """Close the SDK client's connections."""
        await self.client.close()

    async def complete(
        self, request: LLMRequest, *, stream: TokenSink | None = None
    ) -> LLMResponse:
        """One call; see :class:`taskloom.agents.llm.Provider`."""
        params = self._params(request)
        try:
            if stream is None:
                raw = await self.client.messages.with_raw_response.create(**params)
                return self._response(await parsed(raw), dict(raw.headers))
            return await self._stream(params, stream)
        except Exception as exc:
            error = sdk_error(self, exc, sdk=anthropic, model=params["model"])
            if error is None:
                raise
            raise error from exc

    def _params(self, request: LLMRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "messages": _messages(request.messages),
            "max_tokens": request.max_tokens,
            "timeout": request.timeout,
        }
        if request.system:
            params["system"] = request.system
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        return params

    def _response(self, message: Any, headers: dict[str, str]) -> LLMResponse:
        text = "".join(b.text for b in message.content if b.type == "text")
        calls = tuple(
            ToolCall(id=b.id, name=b.name, arguments=dict(b.input or {}))
            for b in message.content
            if b.type == "tool_use"
        )
        return LLMResponse(
            text=text,
            finish=_FINISH.get(message.stop_reason or "", "other"),  # type: ignore[arg-type]
            usage=Usage(message.usage.input_tokens, message.usage.output_tokens),
            tool_calls=calls,
            model=message.model or "",
            headers=kept_headers(headers),
        )

    async def _stream(self, params: dict[str, Any], sink: TokenSink) -> LLMResponse:
        async with self.client.messages.stream(**params) as stream:
            async for text in stream.text_stream:
                await sink(text)
            message = await stream.get_final_message()
            headers = dict(stream.response.headers)
        return self._response(message, headers)


def _messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Anthropic's turns: tool results are ``user`` turns of ``tool_result`` blocks, and
    consecutive ones are merged (parallel tool calls answered in one turn)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id,
                "content": m.content,
                "is_error": m.is_error,
            }
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.role == "assistant" and m.tool_calls:
            blocks: list[dict[str, Any]] = (
                [{"type": "text", "text": m.content}] if m.content else []
            )
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in m.tool_calls
            ]
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": m.role, "content": m.content})
    return out
