"""OpenTelemetry traces of runs: one trace per run, across every process that works on it.

Off unless switched on: ``TASKLOOM_TRACES=otlp`` exports over OTLP (http/protobuf, to
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, named by
``OTEL_SERVICE_NAME``; the ``otel`` extra installs the SDK), and :func:`enable` takes an
application's own tracer provider (Logfire's, a test's in-memory one). While off,
nothing of OpenTelemetry is imported and each activity pays one global lookup.

The spans of a run::

    taskloom.run <workflow>                 submit -> end, emitted by the worker that ends it
    ├── taskloom.activity <name>            one per attempt: run id, seq, attempt, outcome
    │   ├── chat <model>                    each model call (GenAI attributes, cost)
    │   └── taskloom.verification           a verify activity's checks: verifiers, verdict
    │       └── chat <judge model>
    └── taskloom.run <child workflow>       a child run, in the same trace

How one trace spans processes: the run's record carries its context. When a run is
created, its trace id and the span id of its ``taskloom.run`` span are chosen and
stored in the run's meta hash as a W3C ``traceparent`` (with, in ``trace_parent``, the
span id of the span that was current where it was submitted: an application's own
request span, or a parent run's). Every worker that runs an attempt of the run reads it
and makes the attempt span a child of the run span. The run span itself cannot stay
open across processes, so the worker that records the run's end emits it, with the
recorded span id, the creation time as its start and the end as its end: Jaeger and
Tempo show one tree per run whose root lasts as long as the run. Until the run ends
its attempts show under a parent that has not arrived yet. A run created by a client
with traces off has no context in its record; traced workers then derive its ids from
the run id (:meth:`RunTrace.of_run`), so it is still one trace.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import random
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from taskloom.agents import telemetry
from taskloom.errors import ConfigurationError
from taskloom.version import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "RunTrace",
    "attempt_span",
    "configure",
    "disable",
    "enable",
    "enabled",
    "end_run",
    "flush",
    "new_run",
    "outcome",
    "verdict",
    "verification_span",
]

MODES = ("off", "otlp")
"""What ``TASKLOOM_TRACES`` may say."""

_tracer: Tracer | None = None
_provider: Any = None  # the SDK provider taskloom made (TASKLOOM_TRACES=otlp), to flush
_forced: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "taskloom_forced_ids", default=None
)


class RunTrace:
    """A run's trace context as its record keeps it: ``traceparent`` (the run span's
    W3C context) and ``parent`` (the hex span id it hangs under, or ``""``: a root)."""

    __slots__ = ("parent", "traceparent")

    def __init__(self, traceparent: str, parent: str = "") -> None:
        self.traceparent = traceparent
        self.parent = parent

    @property
    def ids(self) -> tuple[int, int, int]:
        """``(trace id, span id, flags)`` of the run span."""
        _, trace_id, span_id, flags = self.traceparent.split("-")
        return int(trace_id, 16), int(span_id, 16), int(flags, 16)

    @classmethod
    def of_run(cls, run_id: str) -> RunTrace:
        """The context of a run created while its client had traces off: ids derived
        from its run id, so the workers that trace it still put it in one trace."""
        digest = hashlib.sha256(f"taskloom.run {run_id}".encode()).digest()
        trace_id = int.from_bytes(digest[:16], "big") or 1
        span_id = int.from_bytes(digest[16:24], "big") or 1
        return cls(_traceparent(trace_id, span_id, 1))

    @classmethod
    def from_meta(cls, meta: Mapping[str, str]) -> RunTrace | None:
        """The context a run's meta hash holds; ``None``: it was created untraced."""
        traceparent = meta.get("traceparent") or ""
        if traceparent.count("-") != 3:
            return None
        return cls(traceparent, meta.get("trace_parent") or "")


def enabled() -> bool:
    """Whether spans are being made."""
    return _tracer is not None


def configure(mode: str | None = None, *, env: Mapping[str, str] | None = None) -> bool:
    """Switch traces on as ``mode`` (else ``TASKLOOM_TRACES``) says: ``otlp`` exports over
    OTLP with the SDK (the ``OTEL_*`` variables configure it); ``off`` or unset leaves
    things as they are. Returns whether traces are on. Called by the client and workers;
    only the first call that switches them on does anything."""
    env = os.environ if env is None else env
    mode = (mode or env.get("TASKLOOM_TRACES") or "off").strip().lower()
    if mode not in MODES:
        raise ConfigurationError(
            f"TASKLOOM_TRACES={mode!r}: say 'otlp' to export traces over OTLP, or 'off'"
        )
    if mode == "off" or _tracer is not None:
        return _tracer is not None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigurationError(
            f"TASKLOOM_TRACES=otlp needs the OpenTelemetry SDK and OTLP exporter: "
            f"pip install 'taskloom[otel]' ({exc})"
        ) from None
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "taskloom"})
    provider = SdkTracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    enable(provider)
    global _provider
    _provider = provider
    return True


def enable(provider: TracerProvider | None = None) -> None:
    """Make spans with ``provider`` (default: the global one an application set, e.g.
    with ``logfire.configure()``), model calls' included."""
    from opentelemetry import trace

    tracer = (provider or trace.get_tracer_provider()).get_tracer("taskloom", __version__)
    inner = getattr(tracer, "id_generator", None)
    if inner is not None:  # the SDK's: the run span keeps the id its record was given
        tracer.id_generator = _RunSpanIds(inner)  # type: ignore[attr-defined]
    global _tracer
    _tracer = tracer
    telemetry.set_tracer(tracer)


def disable() -> None:
    """Stop making spans (those already made are exported as their provider does)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None
    telemetry.set_tracer(None)


def flush(timeout_s: float = 5.0) -> None:
    """Export the spans taskloom's own provider still holds (a worker stopping)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


class _RunSpanIds:
    """An SDK id generator that gives the run span the ids its record was created with."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def generate_span_id(self) -> int:
        forced = _forced.get()
        return forced[1] if forced is not None else int(self.inner.generate_span_id())

    def generate_trace_id(self) -> int:
        forced = _forced.get()
        return forced[0] if forced is not None else int(self.inner.generate_trace_id())

    def is_trace_id_random(self) -> bool:
        return bool(self.inner.is_trace_id_random())


def new_run(parent: RunTrace | None = None) -> RunTrace | None:
    """The trace context to record for a run being created; ``None`` while off.

    A child run (``parent``: the parent run's) joins its parent's trace under the parent's
    run span; a run submitted inside a span of the application joins that span's trace;
    any other starts a trace of its own."""
    if _tracer is None:
        return None
    span_id = random.getrandbits(64) or 1
    if parent is not None:
        trace_id, parent_span, flags = parent.ids
        return RunTrace(_traceparent(trace_id, span_id, flags), f"{parent_span:016x}")
    from opentelemetry import trace

    current = trace.get_current_span().get_span_context()
    if current.is_valid:
        tp = _traceparent(current.trace_id, span_id, int(current.trace_flags))
        return RunTrace(tp, f"{current.span_id:016x}")
    return RunTrace(_traceparent(random.getrandbits(128) or 1, span_id, 1))


def _traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def _context(trace_id: int, span_id: int, flags: int) -> Any:
    """An OpenTelemetry context whose current span is the remote span given."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(remote))


@contextlib.contextmanager
def attempt_span(
    run: RunTrace | None, *, run_id: str, seq: str, name: str, attempt: int, worker: str
) -> Iterator[Span | None]:
    """The current span while one attempt of activity ``name`` runs, a child of its run's
    span (``None``: traces are off). The caller sets ``taskloom.outcome`` on it."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    context = _context(*run.ids) if run is not None else None
    attributes: dict[str, Any] = {
        "taskloom.run_id": run_id,
        "taskloom.seq": seq,
        "taskloom.activity": name,
        "taskloom.attempt": attempt,
        "taskloom.worker": worker,
    }
    with tracer.start_as_current_span(
        f"taskloom.activity {name}",
        context=context,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def outcome(span: Span | None, event: Mapping[str, Any], stop_reason: str = "") -> None:
    """Put an attempt's outcome (its recorded event) on its span."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if event.get("type") == "activity_completed":
        span.set_attribute("taskloom.outcome", "completed")
        return
    error = event.get("error") or {}
    span.set_attribute("taskloom.outcome", "cancelled" if stop_reason == "cancelled" else "failed")
    span.set_attribute("error.type", str(error.get("type", "Error")))
    span.set_status(Status(StatusCode.ERROR, str(error.get("message", ""))[:500]))


def end_run(
    run: RunTrace | None,
    *,
    run_id: str,
    workflow: str,
    created_ms: int,
    status: str,
    error: Mapping[str, Any] | None = None,
) -> None:
    """Emit the span of a run that just ended, with the ids its record was created with
    (see the module docstring); nothing while off or for a run created untraced."""
    tracer = _tracer
    if tracer is None or run is None:
        return
    from opentelemetry.trace import Status, StatusCode

    trace_id, span_id, flags = run.ids
    context = _context(trace_id, int(run.parent, 16), flags) if run.parent else None
    token = _forced.set((trace_id, span_id))
    try:
        span = tracer.start_span(
            f"taskloom.run {workflow}",
            context=context,
            start_time=created_ms * 1_000_000,
            attributes={
                "taskloom.run_id": run_id,
                "taskloom.workflow": workflow,
                "taskloom.status": status,
            },
        )
    finally:
        _forced.reset(token)
    if status != "completed":
        message = str((error or {}).get("message", status))[:500]
        span.set_status(Status(StatusCode.ERROR, message))
        if error:
            span.set_attribute("error.type", str(error.get("type", "Error")))
    span.end(end_time=time.time_ns())


@contextlib.contextmanager
def verification_span(*, activity: str, verifiers: list[str]) -> Iterator[Span | None]:
    """The current span while one output's verifiers run (``None``: traces are off);
    the caller sets the verdict with :func:`verdict`."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    attributes: dict[str, Any] = {"taskloom.activity": activity, "taskloom.verifiers": verifiers}
    with tracer.start_as_current_span("taskloom.verification", attributes=attributes) as span:
        yield span


def verdict(span: Span | None, status: str, verdicts: list[tuple[str, str]]) -> None:
    """Put the combined verdict ``status`` and each verifier's ``(name, status)`` on a
    verification span."""
    if span is None:
        return
    span.set_attribute("taskloom.verdict", status)
    for name, each in verdicts:
        span.set_attribute(f"taskloom.verdict.{name}", each)
