"""What the two protocol modules share: the resolved answer and the wire interface."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from ._steps import ErrorReply, Finish, RateLimit, ScriptedToolCall

__all__ = ["Outcome", "Wire", "split_text"]

_WORDS = re.compile(r"\S*\s*")
ARGUMENT_CHUNK = 16


@dataclass(frozen=True)
class Outcome:
    """A :class:`~taskloom.agents.fake_llm.Reply` resolved against one request: truncation
    applied, tokens counted."""

    index: int
    model: str
    text: str
    tool_calls: tuple[ScriptedToolCall, ...]
    finish: Finish
    input_tokens: int
    output_tokens: int
    created: int


def split_text(text: str) -> list[str]:
    """Text as streamed: word by word, each with its trailing whitespace."""
    return [w for w in _WORDS.findall(text) if w]


def split_arguments(arguments: str) -> list[str]:
    """Tool-call arguments as streamed: fixed-size pieces."""
    return [arguments[i : i + ARGUMENT_CHUNK] for i in range(0, len(arguments), ARGUMENT_CHUNK)]


class Wire(Protocol):
    """One provider's HTTP protocol."""

    def validate(self, body: dict[str, Any]) -> str | None:
        """Why the request is malformed, or ``None``."""
        ...

    def max_output_tokens(self, body: dict[str, Any]) -> int | None:
        """The request's cap on generated tokens."""
        ...

    def response(self, outcome: Outcome) -> dict[str, Any]:
        """The non-streamed answer."""
        ...

    def events(self, outcome: Outcome, body: dict[str, Any]) -> list[bytes]:
        """The streamed answer, as encoded server-sent events."""
        ...

    def error_body(self, err: ErrorReply, *, model: str, index: int) -> Any:
        """The provider-shaped body of an error."""
        ...

    def headers(self, index: int, rate_limit: RateLimit | None) -> dict[str, str]:
        """Headers every answer carries (request id, rate-limit state)."""
        ...
