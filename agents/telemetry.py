"""Model-call spans (OpenTelemetry, GenAI semantic conventions), off unless switched on.

The LLM layer knows nothing of runs: it only opens a ``chat <model>`` span around each
request it sends, as a child of whatever span is current (an activity attempt's, when
the engine runs the agent). :func:`set_tracer` switches the spans on; taskloom's
:mod:`taskloom.tracing` does it when traces are configured. While no tracer is set,
nothing is imported and a call pays one global lookup.

Attributes follow the GenAI conventions: ``gen_ai.operation.name`` (``chat``),
``gen_ai.provider.name`` and its older name ``gen_ai.system``, ``gen_ai.request.model``,
``gen_ai.request.max_tokens``, ``gen_ai.request.temperature``, ``gen_ai.response.model``,
``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens`` and
``gen_ai.usage.output_tokens``; taskloom adds ``taskloom.cost_usd`` (from the price table).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from .llm import LLMRequest, LLMResponse, Usage
else:  # imported only when spans are on
    Span = Tracer = Any

__all__ = ["Pricer", "Span", "call_ended", "call_started", "set_tracer", "tracer"]

Pricer = Callable[["Usage"], Decimal]  # the name: a worker of plain code loads no LLM types
"""The cost of a call's usage (the runner's price table for its model)."""

_tracer: Tracer | None = None


def set_tracer(value: Tracer | None) -> None:
    """Switch model-call spans on (a tracer) or off (``None``)."""
    global _tracer
    _tracer = value


def tracer() -> Tracer | None:
    """The tracer model calls use; ``None``: spans are off."""
    return _tracer


def call_started(provider: str, request: LLMRequest) -> Span | None:
    """Open the span of one model call, the current span's child; ``None`` when off.
    The caller makes it current while the call runs and ends it with :func:`call_ended`."""
    t = _tracer
    if t is None:
        return None
    from opentelemetry.trace import SpanKind

    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": request.model,
        "gen_ai.request.max_tokens": request.max_tokens,
    }
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    return t.start_span(f"chat {request.model}", kind=SpanKind.CLIENT, attributes=attributes)


def call_ended(
    span: Span,
    *,
    response: LLMResponse | None = None,
    usage: Usage | None = None,
    price: Pricer | None = None,
    error: BaseException | None = None,
) -> None:
    """End a model call's span with what it was served (``usage``: counted without a
    ``response``, as for a cancelled call) and what that cost."""
    from opentelemetry.trace import Status, StatusCode

    if response is not None:
        usage = response.usage
        span.set_attribute("gen_ai.response.finish_reasons", [response.finish])
        if response.model:
            span.set_attribute("gen_ai.response.model", response.model)
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        if price is not None:
            span.set_attribute("taskloom.cost_usd", float(price(usage)))
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, str(error)[:500]))
    span.end()
