"""What the fake server saw: every request, and the tokens it billed per model."""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ._steps import Step

__all__ = ["Protocol", "Request", "TokenCounter", "TokenEvent", "estimate_tokens"]

Protocol: TypeAlias = Literal["openai", "anthropic"]
TokenKind: TypeAlias = Literal["input", "output", "total"]

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """The fake's token estimate: one token per 4 characters, rounded up.

    Example::

        estimate_tokens("hello world")   # 3
    """
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """The estimated prompt size of a request: every string in ``system``,
    ``messages`` and ``tools`` (contents, roles, tool results, schemas), at least 1."""
    text = "".join(s for key in ("system", "messages", "tools") for s in _strings(body.get(key)))
    return max(1, estimate_tokens(text))


@dataclass(frozen=True)
class Request:
    """One request the fake received.

    ``headers`` are lower-cased, with secrets (``authorization``, ``x-api-key``, ...)
    replaced by ``"<redacted>"``. ``received_at`` is on the fake's clock
    (``time.monotonic`` unless ``FakeLLM(clock=...)``). ``step`` is the step that
    answered (``None`` while pending, or when the fake refused the request itself);
    ``status`` the HTTP status sent.
    """

    index: int
    protocol: Protocol
    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    received_at: float
    step: Step | None = None
    status: int | None = None

    @property
    def model(self) -> str:
        """The requested model ("" when absent)."""
        model = self.body.get("model")
        return model if isinstance(model, str) else ""

    @property
    def stream(self) -> bool:
        """Whether the client asked for a streamed answer."""
        return self.body.get("stream") is True

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's ``messages`` as sent."""
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []


@dataclass(frozen=True)
class TokenEvent:
    """Tokens billed for one answered request, at its arrival time."""

    at: float
    model: str
    protocol: Protocol
    input_tokens: int
    output_tokens: int

    def count(self, kind: TokenKind = "total") -> int:
        """``input``, ``output`` or ``total`` tokens."""
        if kind == "input":
            return self.input_tokens
        if kind == "output":
            return self.output_tokens
        return self.input_tokens + self.output_tokens


class TokenCounter:
    """Per-model token counts with timestamps, as the server saw them: one
    :class:`TokenEvent` per request answered with a reply (errors bill nothing).

    Example (a 60-second tokens-per-minute limit of 10,000 was never exceeded)::

        assert fake.tokens.max_in_window(60.0, model="gpt-4.1-mini") <= 10_000
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[TokenEvent] = []

    def _add(self, event: TokenEvent) -> None:
        with self._lock:
            self._events.append(event)

    def events(self, *, model: str | None = None) -> list[TokenEvent]:
        """The events, in arrival order, for one model or all."""
        with self._lock:
            events = list(self._events)
        events.sort(key=lambda e: e.at)
        return [e for e in events if model is None or e.model == model]

    def total(self, *, model: str | None = None, kind: TokenKind = "total") -> int:
        """All tokens billed (for ``model``, or every model)."""
        return sum(e.count(kind) for e in self.events(model=model))

    def in_window(
        self, start: float, end: float, *, model: str | None = None, kind: TokenKind = "total"
    ) -> int:
        """Tokens of requests that arrived in ``[start, end)``."""
        return sum(e.count(kind) for e in self.events(model=model) if start <= e.at < end)

    def max_in_window(
        self, window: float = 60.0, *, model: str | None = None, kind: TokenKind = "total"
    ) -> int:
        """The most tokens billed within any ``window`` seconds (a sliding window)."""
        return self._max_window(window, model, lambda e: e.count(kind))

    def max_requests_in_window(self, window: float = 60.0, *, model: str | None = None) -> int:
        """The most answered requests within any ``window`` seconds."""
        return self._max_window(window, model, lambda e: 1)

    def _max_window(
        self, window: float, model: str | None, weight: Callable[[TokenEvent], int]
    ) -> int:
        events = self.events(model=model)
        times = [e.at for e in events]
        best = running = 0
        # Every busiest window can be slid to start at some event: sum [t_i, t_i + window).
        prefix = [0]
        for e in events:
            running += weight(e)
            prefix.append(running)
        for i, t in enumerate(times):
            j = bisect.bisect_left(times, t + window)
            best = max(best, prefix[j] - prefix[i])
        return best
