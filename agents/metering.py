"""What one agent run was served: every request it sent, counted as it comes back.

An agent run may send several requests (structured output's repair turn, a tool loop's
turns) and fail after some of them were answered: invalid after the repair, cut off at
the token limit, still calling tools after ``max_turns``. The tokens of the answered
requests were served and billed all the same, so :class:`MeteredProvider` wraps the
provider for one run and adds up the usage of every reply as it arrives; the runner
settles budgets, rate limits and metrics with that sum whether the run returned or
raised.

A request cancelled before its reply arrived (the attempt was stopped: a timeout, a
cancelled run, a worker shutting down) is counted at its estimate, the prompt at
about four characters a token plus ``max_tokens``: the provider may well have
generated the answer, and the estimate is the most it can cost, the amount the run
held for it. A request the provider refused (an error status: 429, 4xx, 5xx) or that
never reached it is billed nothing and counted as nothing.

    metered = MeteredProvider(provider)
    try:
        await complete_structured(metered, request, Summary)
    finally:
        charge = metered.usage       # every reply's usage, failed or not
"""

from __future__ import annotations

import asyncio

from . import telemetry
from .llm import LLMRequest, LLMResponse, Provider, TokenSink, Usage

__all__ = ["MeteredProvider", "request_estimate"]


def request_estimate(request: LLMRequest) -> Usage:
    """The most ``request`` may cost: its prompt at about four characters a token,
    and ``max_tokens`` of answer."""
    chars = len(request.system) + sum(len(m.content) for m in request.messages)
    chars += sum(len(str(c.arguments)) for m in request.messages for c in m.tool_calls)
    return Usage(chars // 4 + 1, request.max_tokens)


class MeteredProvider:
    """``inner``, counting the usage of every request sent through it (see the module
    docstring): :attr:`usage` and :attr:`requests` so far."""

    def __init__(self, inner: Provider, *, price: telemetry.Pricer | None = None) -> None:
        self.inner = inner
        self.price = price
        """What a call's usage costs, for its span (see :mod:`taskloom.agents.telemetry`)."""
        self.name = inner.name
        self.endpoint: str = getattr(inner, "endpoint", inner.name)
        """The wrapped provider's endpoint (see :class:`~taskloom.agents.llm.Provider`)."""
        self.usage = Usage()
        self.requests = 0
        """Requests sent (answered or not)."""

    async def aclose(self) -> None:
        """Close the wrapped provider."""
        await self.inner.aclose()

    async def complete(
        self, request: LLMRequest, *, stream: TokenSink | None = None
    ) -> LLMResponse:
        """Send ``request`` through the wrapped provider and count what it cost."""
        self.requests += 1
        span = telemetry.call_started(self.name, request)
        if span is not None:
            return await self._traced(request, stream, span)
        try:
            response = await self.inner.complete(request, stream=stream)
        except asyncio.CancelledError:
            self._add(request_estimate(request))  # sent, and maybe served: the most it costs
            raise
        self._add(response.usage)
        return response

    async def _traced(
        self, request: LLMRequest, stream: TokenSink | None, span: telemetry.Span
    ) -> LLMResponse:
        """:meth:`complete` inside the model call's span (tracing is on)."""
        from opentelemetry.trace import use_span

        with use_span(span, end_on_exit=False):
            try:
                response = await self.inner.complete(request, stream=stream)
            except asyncio.CancelledError as exc:
                estimate = request_estimate(request)
                self._add(estimate)
                telemetry.call_ended(span, usage=estimate, price=self.price, error=exc)
                raise
            except BaseException as exc:
                telemetry.call_ended(span, error=exc)
                raise
        self._add(response.usage)
        telemetry.call_ended(span, response=response, price=self.price)
        return response

    def _add(self, usage: Usage) -> None:
        self.usage = Usage(
            self.usage.input_tokens + usage.input_tokens,
            self.usage.output_tokens + usage.output_tokens,
        )
