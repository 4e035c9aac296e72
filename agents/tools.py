"""Tools: plain typed Python functions the model may call, in a bounded loop.

    @tool
    def get_weather(city: str, unit: Literal["C", "F"] = "C") -> dict:
        \"\"\"Current weather for a city.\"\"\"
        ...

    response, transcript = await run_tool_loop(provider, request, [get_weather])

The JSON schema of a tool comes from its signature (pydantic); the model's arguments
are validated against it before the call. Several calls in one turn run concurrently
(sync tools in threads). A tool that raises, or arguments that do not validate, are
reported back to the model as an error result, so it can correct itself; the loop
ends when the model answers without calling a tool, or fails after ``max_turns``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .errors import LLMOutputError, UserError, validation_problems
from .llm import LLMRequest, LLMResponse, Message, Provider, TokenSink, ToolCall, ToolSpec, Usage
from .structured import json_schema

__all__ = ["Tool", "ToolLoopResult", "run_tool_loop", "tool"]


@dataclass(frozen=True)
class Tool:
    """A function the model may call."""

    name: str
    description: str
    fn: Callable[..., Any]
    arguments: type[BaseModel]

    @property
    def spec(self) -> ToolSpec:
        """What the model is told about it."""
        return ToolSpec(self.name, self.description, json_schema(self.arguments))

    async def call(self, arguments: dict[str, Any]) -> Any:
        """Validate ``arguments`` and call the function (a sync one in a thread)."""
        values = self.arguments.model_validate(arguments)
        kwargs = {k: getattr(values, k) for k in type(values).model_fields}
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**kwargs)
        return await asyncio.to_thread(self.fn, **kwargs)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a tool of a typed function; its docstring describes it to the model."""

    def wrap(f: Callable[..., Any]) -> Tool:
        hints = get_type_hints(f)
        fields: dict[str, Any] = {}
        for pname, param in inspect.signature(f).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise UserError(f"tool {f.__name__!r}: *args and **kwargs cannot be described")
            if pname not in hints:
                raise UserError(
                    f"tool {f.__name__!r}: parameter {pname!r} needs a type annotation (the "
                    f"model is told its JSON schema)"
                )
            default = ... if param.default is param.empty else param.default
            fields[pname] = (hints[pname], default)
        model = create_model(
            f"{f.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        doc = description or inspect.getdoc(f) or ""
        return Tool(name=name or f.__name__, description=doc, fn=f, arguments=model)

    return wrap(fn) if fn is not None else wrap


@dataclass(frozen=True)
class ToolLoopResult:
    """The model's last answer, the conversation that led to it, and its cost."""

    response: LLMResponse
    messages: tuple[Message, ...]
    usage: Usage
    turns: int
    tool_calls: int


async def run_tool_loop(
    provider: Provider,
    request: LLMRequest,
    tools: Sequence[Tool],
    *,
    max_turns: int = 8,
    stream: TokenSink | None = None,
) -> ToolLoopResult:
    """Call the model, run the tools it asks for, feed the results back, repeat."""
    by_name = {t.name: t for t in tools}
    if len(by_name) != len(tools):
        raise UserError("two tools share a name; give one of them tool(name=...)")
    messages = list(request.messages)
    usage, calls = Usage(), 0
    for turn in range(1, max_turns + 1):
        ask = replace(request, messages=tuple(messages), tools=tuple(t.spec for t in tools))
        response = await provider.complete(ask, stream=stream)
        usage = Usage(
            usage.input_tokens + response.usage.input_tokens,
            usage.output_tokens + response.usage.output_tokens,
        )
        if not response.tool_calls:
            return ToolLoopResult(response, tuple(messages), usage, turn, calls)
        messages.append(
            Message(role="assistant", content=response.text, tool_calls=response.tool_calls)
        )
        results = await asyncio.gather(*(_run(by_name, c) for c in response.tool_calls))
        messages += results
        calls += len(results)
    raise LLMOutputError(
        f"{provider.name}:{request.model} was still calling tools after {max_turns} turns; "
        f"raise max_turns or give it fewer tools"
    )


async def _run(tools: dict[str, Tool], call: ToolCall) -> Message:
    """One call's result message; errors become results the model can read."""
    found = tools.get(call.name)
    if found is None:
        known = ", ".join(sorted(tools))
        return _error(call, f"there is no tool {call.name!r}; the tools are: {known}")
    if "__malformed__" in call.arguments:
        return _error(
            call, f"the arguments were not a JSON object: {call.arguments['__malformed__']!r}"
        )
    try:
        value = await found.call(call.arguments)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, whole=""))
        return _error(call, f"invalid arguments for {call.name}: {problems}")
    except Exception as exc:  # a tool's failure is information for the model
        return _error(call, f"{call.name} raised {type(exc).__name__}: {exc}")
    content = value if isinstance(value, str) else json.dumps(value, default=_jsonable)
    return Message(role="tool", content=content, tool_call_id=call.id)


def _error(call: ToolCall, text: str) -> Message:
    return Message(role="tool", content=text, tool_call_id=call.id, is_error=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)
