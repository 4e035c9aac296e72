"""Structured output that degrades gracefully, validated by pydantic.

For an output type (a pydantic model) a call tries the provider's JSON-schema mode,
then JSON mode, then plain text with the JSON extracted from it, remembering in
``refused`` (one per :class:`~taskloom.agents.agent.AgentRunner`) which mode a server refused,
per (provider, base URL, model): several local servers reject ``response_format:
json_schema``, and the same model name behind another base URL may not. The answer
is validated; if it does not validate, the model gets one repair turn with the
validation error; if that fails too, the attempt fails with a retryable
:class:`~taskloom.agents.errors.LLMOutputError`. Output cut off by the token limit (finish
reason ``length``) is detected, not parsed.

    result = await complete_structured(provider, request, Summary)
    result.value          # a Summary
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import MutableMapping
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import LLMOutputError, LLMRequestError, validation_problems
from .llm import LLMRequest, LLMResponse, Message, OutputMode, Provider, TokenSink, Usage

__all__ = [
    "LAST_ANSWER",
    "LAST_ANSWER_CHARS",
    "MODES",
    "RefusedModes",
    "StructuredResult",
    "complete_structured",
    "extract_json",
    "json_schema",
    "server_key",
]

LAST_ANSWER = "\nIts last answer was:\n"
"""Where an :class:`LLMOutputError`'s message gives the model's last (invalid) answer,
so a person deciding what to do sees what the model produced."""
LAST_ANSWER_CHARS = 4000

T = TypeVar("T", bound=BaseModel)

MODES: tuple[OutputMode, ...] = ("json_schema", "json_object", "text")

RefusedModes = MutableMapping[tuple[str, str, str], set[str]]
"""(provider, endpoint, model) -> the output modes that server refused."""

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


@dataclass(frozen=True)
class StructuredResult(Generic[T]):
    """A validated value, with what it cost to get."""

    value: T
    text: str
    usage: Usage
    calls: int
    mode: OutputMode
    repaired: bool


def extract_json(text: str) -> Any:
    """The JSON value in ``text``: the whole text, a fenced block, or the first balanced
    object or array. Raises ValueError if there is none."""
    candidates = [text.strip(), *(m.strip() for m in _FENCE.findall(text))]
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start >= 0:
        candidates.append(_balanced(text, start))
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
    raise ValueError("no JSON value found in the output")


def _balanced(text: str, start: int) -> str:
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            escaped = not escaped and c == "\\"
            if c == '"' and not escaped:
                in_string = False
            continue
        if c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:]


def _instructions(schema: dict[str, Any]) -> str:
    return (
        "Answer with one JSON value only, no prose and no code fence, that follows this "
        f"JSON schema:\n{json.dumps(schema, separators=(',', ':'))}"
    )


@functools.lru_cache(maxsize=512)
def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema, made once per class (pydantic builds it anew on every
    call, a millisecond for a plan-sized model). Shared: do not mutate it."""
    return model.model_json_schema()


@functools.lru_cache(maxsize=512)
def json_schema_text(model: type[BaseModel]) -> str:
    """:func:`json_schema` as compact JSON text (for prompts)."""
    return json.dumps(json_schema(model))


async def complete_structured(
    provider: Provider,
    request: LLMRequest,
    output: type[T],
    *,
    stream: TokenSink | None = None,
    refused: RefusedModes | None = None,
) -> StructuredResult[T]:
    """Call the model until it gives a valid ``output`` (see the module docstring).

    ``refused`` remembers across calls which modes a server refused (an
    :class:`~taskloom.agents.agent.AgentRunner` keeps one); ``None``: this call alone."""
    schema = json_schema(output)
    refused = {} if refused is None else refused
    key = server_key(provider, request.model)
    usage, calls = Usage(), 0
    json_modes = ("json_schema", "json_object") if provider.name != "anthropic" else ()
    modes = [m for m in (*json_modes, "text") if m not in refused.get(key, set())]
    for i, mode in enumerate(modes):
        system = request.system if mode == "json_schema" else _join(request.system, schema)
        attempt = replace(
            request, output=mode, schema=schema, schema_name=output.__name__, system=system
        )
        try:
            response = await provider.complete(attempt, stream=stream)
        except LLMRequestError as exc:
            if mode != "text" and i + 1 < len(modes) and _refuses(exc, mode):
                refused.setdefault(key, set()).add(mode)  # this server: never again
                continue
            raise
        calls += 1
        usage = _add(usage, response.usage)
        value, problem = _validate(response, output)
        if value is not None:
            return StructuredResult(value, response.text, usage, calls, mode, repaired=False)
        repair = replace(
            attempt,
            messages=(
                *attempt.messages,
                Message(role="assistant", content=response.text),
                Message(
                    role="user",
                    content=f"That answer was invalid: {problem}. Answer again with corrected "
                    f"JSON only.",
                ),
            ),
        )
        response = await provider.complete(repair, stream=stream)
        calls += 1
        usage = _add(usage, response.usage)
        value, problem = _validate(response, output)
        if value is not None:
            return StructuredResult(value, response.text, usage, calls, mode, repaired=True)
        raise LLMOutputError(
            f"{provider.name}:{request.model} gave no valid {output.__name__} after a repair "
            f"turn: {problem}{LAST_ANSWER}{response.text[:LAST_ANSWER_CHARS]}"
        )
    raise LLMOutputError(f"{provider.name}:{request.model}: no output mode left to try")


def server_key(provider: Provider, model: str) -> tuple[str, str, str]:
    """``(provider, endpoint, model)``: one server's model, as :data:`RefusedModes`
    keys it (the endpoint is the provider's base URL, where it has one)."""
    return provider.name, str(getattr(provider, "endpoint", provider.name)), model


def _validate(response: LLMResponse, output: type[T]) -> tuple[T | None, str]:
    if response.finish == "length":
        raise LLMOutputError(
            f"the output was cut off at the token limit ({response.usage.output_tokens} "
            f"tokens, finish reason 'length'): raise max_tokens or ask for less"
        )
    try:
        data = extract_json(response.text)
    except ValueError as exc:
        return None, f"{exc}; the output began {response.text[:80]!r}"
    try:
        return output.model_validate(data), ""
    except ValidationError as exc:
        return None, _short(exc)


def _short(exc: ValidationError) -> str:
    return "; ".join(validation_problems(exc, whole="(root)")[:8])


def _refuses(exc: LLMRequestError, mode: str) -> bool:
    text = str(exc).lower()
    return "response_format" in text or mode in text or "json" in text


def _join(system: str, schema: dict[str, Any]) -> str:
    return f"{system}\n\n{_instructions(schema)}" if system else _instructions(schema)


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens)
