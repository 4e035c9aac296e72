"""The provider-neutral shape of one LLM call: what goes in, what comes out.

Providers (:mod:`taskloom.agents.providers`) translate an :class:`LLMRequest` into their wire
protocol through the official SDKs and their answer back into an :class:`LLMResponse`,
so everything above them (structured output, tools, limits, cost) is written once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "LLMRequest",
    "LLMResponse",
    "Message",
    "OutputMode",
    "Provider",
    "TokenSink",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

OutputMode = Literal["text", "json_schema", "json_object"]
TokenSink = Callable[[str], Awaitable[None]]
"""Receives streamed text as it arrives."""


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, its JSON-schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """The model asks for ``name(**arguments)``; ``id`` pairs the call with its result."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Message:
    """One turn of a conversation.

    ``role`` is ``user``, ``assistant`` (text and/or ``tool_calls``) or ``tool`` (the
    result of the call ``tool_call_id``, in ``content``). The system prompt is not a
    message: it is :attr:`LLMRequest.system`.
    """

    role: Literal["user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    is_error: bool = False
    """For a ``tool`` message: the tool raised, and ``content`` says how."""


@dataclass(frozen=True)
class Usage:
    """Tokens a call consumed."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        """Input and output together."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class LLMRequest:
    """One call to a model (``model`` without its provider prefix)."""

    model: str
    messages: tuple[Message, ...]
    system: str = ""
    tools: tuple[ToolSpec, ...] = ()
    output: OutputMode = "text"
    schema: dict[str, Any] | None = None
    """The JSON schema the output must follow (for ``json_schema``; a hint otherwise)."""
    schema_name: str = "output"
    max_tokens: int = 1024
    temperature: float | None = None
    timeout: float = 60.0


@dataclass(frozen=True)
class LLMResponse:
    """What the model answered."""

    text: str
    finish: Literal["stop", "length", "tool_calls", "other"]
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    model: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers worth keeping (``x-ratelimit-*``, ``retry-after``) where the
    provider's call path exposes them: streamed calls and Anthropic's; OpenAI calls
    without streaming leave it empty (see ``OpenAIProvider._complete``)."""


class Provider(Protocol):
    """One LLM API, behind the official SDK.

    The built-in providers also have an ``endpoint`` attribute (provider and base URL,
    without secrets), which results record as who served a call; one without it is
    recorded by its ``name``."""

    name: str

    async def aclose(self) -> None:
        """Close its connections."""
        ...

    async def complete(
        self, request: LLMRequest, *, stream: TokenSink | None = None
    ) -> LLMResponse:
        """Send ``request``; with ``stream``, text is passed to it as it arrives.

        Raises the errors of :mod:`taskloom.agents.errors`: retryable ones (rate limits, 5xx,
        timeouts, connection errors) and non-retryable ones (bad request, auth, context
        length), never an SDK exception.
        """
        ...
