"""OpenAI Chat Completions (and any server that speaks it) through the official SDK."""

from __future__ import annotations

import json
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ..llm import LLMRequest, LLMResponse, Message, TokenSink, ToolCall, Usage
from ._classify import kept_headers, sdk_error
from ._transport import endpoint, http_client, parsed, shards_for, warm_models

__all__ = ["OpenAIProvider"]

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


_SAMPLES: list[tuple[Any, dict[str, Any]]] = [
    (
        ChatCompletion,
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "service_tier": "default",
            "system_fingerprint": "fp",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "logprobs": None,
                    "message": {
                        "role": "assistant",
                        "content": "hi",
                        "refusal": None,
                        "annotations": [],
                        "tool_calls": [
                            {
                                "id": "t",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                }
            ],
            "usage": {
                "prompt_tokens": 1,
                "completion_tokens": 1,
                "total_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
        },
    ),
    (
        ChatCompletionChunk,
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "service_tier": "default",
            "system_fingerprint": "fp",
            "usage": None,
            "choices": [
                {
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": None,
                    "delta": {
                        "role": "assistant",
                        "content": "h",
                        "refusal": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "t",
                                "type": "function",
                                "function": {"name": "f", "arguments": ""},
                            }
                        ],
                    },
                }
            ],
        },
    ),
]
"""Minimal responses of the types the SDK parses (see :func:`warm_models`)."""


class OpenAIProvider:
    """Chat Completions on :class:`openai.AsyncOpenAI`."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        max_retries: int = 0,
        name: str = "openai",
    ) -> None:
        self.name = name
        http = http_client(openai)
        self.client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            http_client=http,
        )
        self.shards = shards_for(http)
        """How many clients like this one are worth spreading calls over."""
        self.endpoint = endpoint(name, self.client.base_url)
        """Who serves its calls: the provider and base URL, without secrets."""
        warm_models(openai, _SAMPLES)

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
                return await self._complete(params)
            return await self._stream(params, stream)
        except Exception as exc:
            error = sdk_error(self, exc, sdk=openai, model=params["model"])
            if error is None:
                raise
            raise error from exc

    async def _complete(self, params: dict[str, Any]) -> LLMResponse:
        """One call without streaming, sent with the SDK's ``post`` (its documented way
        to make a request of your own) rather than ``chat.completions.create``.

        ``create`` walks every parameter against the SDK's type hints to transform it,
        which for plain JSON messages changes nothing and cost a judge call (a JSON
        schema in ``response_format``) about a third of a millisecond of CPU; the
        request, its retries and errors, and the parsed ``ChatCompletion`` are the
        same. What this path does not give back is the response's headers, which
        taskloom reads only from errors (429's ``Retry-After``, ``x-ratelimit-*``).
        """
        body = {k: v for k, v in params.items() if k != "timeout"}
        completion = await self.client.post(
            "/chat/completions",
            body=body,
            cast_to=ChatCompletion,
            options={"timeout": params["timeout"]},
        )
        return self._response(completion, {})

    def _params(self, request: LLMRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages += [_message(m) for m in request.messages]
        params: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "timeout": request.timeout,
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        if request.output == "json_schema" and request.schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": request.schema,
                    "strict": False,
                },
            }
        elif request.output == "json_object":
            params["response_format"] = {"type": "json_object"}
        return params

    def _response(self, completion: Any, headers: dict[str, str]) -> LLMResponse:
        choice = completion.choices[0]
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=_arguments(c.function.arguments))
            for c in (choice.message.tool_calls or [])
            if getattr(c, "function", None) is not None
        )
        usage = completion.usage
        return LLMResponse(
            text=choice.message.content or "",
            finish=_FINISH.get(choice.finish_reason or "", "other"),  # type: ignore[arg-type]
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
            tool_calls=calls,
            model=completion.model or "",
            headers=kept_headers(headers),
        )

    async def _stream(self, params: dict[str, Any], sink: TokenSink) -> LLMResponse:
        params = params | {"stream": True, "stream_options": {"include_usage": True}}
        raw = await self.client.chat.completions.with_raw_response.create(**params)
        headers, chunks = dict(raw.headers), await parsed(raw)
        text, finish, usage, model = [], "other", Usage(), ""
        calls: dict[int, dict[str, str]] = {}
        async for chunk in chunks:
            model = chunk.model or model
            if chunk.usage is not None:
                usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
            for choice in chunk.choices:
                delta = choice.delta
                if delta.content:
                    text.append(delta.content)
                    await sink(delta.content)
                for tc in delta.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    slot["id"] = tc.id or slot["id"]
                    if tc.function is not None:
                        slot["name"] += tc.function.name or ""
                        slot["arguments"] += tc.function.arguments or ""
                if choice.finish_reason:
                    finish = _FINISH.get(choice.finish_reason, "other")
        return LLMResponse(
            text="".join(text),
            finish=finish,  # type: ignore[arg-type]
            usage=usage,
            tool_calls=tuple(
                ToolCall(id=c["id"], name=c["name"], arguments=_arguments(c["arguments"]))
                for _, c in sorted(calls.items())
            ),
            model=model,
            headers=kept_headers(headers),
        )


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in m.tool_calls
        ]
    return out


def _arguments(text: str) -> dict[str, Any]:
    """A tool call's arguments; malformed JSON is kept for the tool loop to report."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {"__malformed__": text}
    return value if isinstance(value, dict) else {"__malformed__": text}
