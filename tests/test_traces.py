"""OpenTelemetry traces (issue 16): one trace per run across the submitting client and
the workers, the run span parent of its attempts, model calls with GenAI attributes,
verifications with their verdicts; OTLP export from a worker process to a receiver on
loopback; and nothing at all while traces are off."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskloom import Orchestrator, tracing
from taskloom.agents import telemetry
from taskloom.agents.fake_llm import FakeLLM
from taskloom.testing.simulated import SimulatedTeam
from taskloom.verifiers import FunctionVerifier
from tests.helpers import act, running, wait_until

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Traces on, into the SDK's in-memory exporter; off again after the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    yield exporter
    tracing.disable()
    provider.shutdown()


def _hex(n: int, width: int) -> str:
    return f"{n:0{width}x}"


async def _recorded(orch: Orchestrator, run_id: str) -> tuple[str, str]:
    """``(trace id, run span id)`` as the run's record holds them."""
    traceparent = await orch.store.raw.hget(orch.store.keys.meta(run_id), "traceparent")
    _, trace_id, span_id, _ = traceparent.split("-")
    return trace_id, span_id


async def test_each_run_is_one_trace_with_attempts_model_calls_and_verifications_under_it(
    spans: InMemorySpanExporter, fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {"activities": [act("a", verify={"custom": ["house"]}), act("b", "a")]}
    fake.answer_with(SimulatedTeam(plans=[plan, plan]))
    house = FunctionVerifier(lambda output: True, name="house")
    async with running(orch.worker(verifiers={"house": house})):
        first = await orch.submit("write two parts", model=MODEL)
        second = await orch.submit("write two more parts", model=MODEL)
        await first.result(timeout=30)
        await second.result(timeout=30)

        def run_spans() -> list[ReadableSpan]:
            done = [s for s in spans.get_finished_spans() if s.name.startswith("taskloom.run")]
            return done if len(done) == 2 else []

        # The run span is emitted just after the run's end is recorded.
        await wait_until(run_spans, "both runs' spans")
    finished = spans.get_finished_spans()
    by_trace: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        assert span.context is not None
        by_trace.setdefault(_hex(span.context.trace_id, 32), []).append(span)
    assert len(by_trace) == 2  # one trace per run, nothing outside them
    for handle in (first, second):
        trace_id, run_span_id = await _recorded(orch, handle.run_id)
        trace = by_trace[trace_id]
        ids = {s.context.span_id: s for s in trace if s.context is not None}
        (root,) = [s for s in trace if s.parent is None]
        assert root.name == "taskloom.run taskloom.pipeline"
        assert root.context is not None and _hex(root.context.span_id, 16) == run_span_id
        assert root.attributes is not None and root.attributes["taskloom.run_id"] == handle.run_id
        assert root.attributes["taskloom.status"] == "completed"
        # every other span hangs, through its parents, under the run span
        for span in trace:
            walk = span
            while walk.parent is not None:
                walk = ids[walk.parent.span_id]
            assert walk is root, f"{span.name} is not under the run span"
        attempts = [s for s in trace if s.name.startswith("taskloom.activity ")]
        assert attempts and all(
            a.parent and a.parent.span_id == root.context.span_id for a in attempts
        )
        for a in attempts:
            assert a.attributes is not None
            assert a.attributes["taskloom.run_id"] == handle.run_id
            assert a.attributes["taskloom.outcome"] == "completed"
            assert a.attributes["taskloom.attempt"] >= 1 and a.attributes["taskloom.seq"]
        chats = [s for s in trace if s.name == "chat gpt-4.1-mini"]
        assert len(chats) >= 4  # planner, two subagents, integrator
        for chat in chats:
            attrs = chat.attributes
            assert attrs is not None and chat.parent is not None
            assert ids[chat.parent.span_id].name.startswith("taskloom.activity ")
            assert attrs["gen_ai.operation.name"] == "chat"
            assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
            assert attrs["gen_ai.request.model"] == "gpt-4.1-mini"
            assert attrs["gen_ai.usage.input_tokens"] > 0
            assert attrs["gen_ai.usage.output_tokens"] > 0
            assert attrs["taskloom.cost_usd"] > 0
        checks = [s for s in trace if s.name == "taskloom.verification"]
        for check in checks:
            assert check.attributes is not None and check.parent is not None
            assert ids[check.parent.span_id].name == "taskloom.activity taskloom.verify"
            assert check.attributes["taskloom.verdict"] in ("pass", "fail", "uncertain")
        (check,) = [c for c in checks if "house" in (c.attributes or {})["taskloom.verifiers"]]
        assert check.attributes is not None and check.attributes["taskloom.activity"] == "a"
        assert check.attributes["taskloom.verdict"] == "pass"
        assert check.attributes["taskloom.verdict.house"] == "pass"


async def test_a_run_submitted_inside_a_span_joins_that_trace(
    spans: InMemorySpanExporter, orch: Orchestrator
) -> None:
    from opentelemetry.trace import get_tracer

    from tests.worker_workflows import slow_chain

    tracer = get_tracer("app", tracer_provider=_provider_of(spans))
    with tracer.start_as_current_span("POST /reports") as request:
        handle = await orch.start(slow_chain, 1, "/dev/null")
    async with running(orch.worker(modules=["tests.worker_workflows"])):
        await handle.result(timeout=20)
        await wait_until(
            lambda: [s for s in spans.get_finished_spans() if s.name.startswith("taskloom.run")],
            "the run span",
        )
    (run,) = [s for s in spans.get_finished_spans() if s.name.startswith("taskloom.run")]
    assert run.context is not None and run.parent is not None
    assert run.context.trace_id == request.get_span_context().trace_id
    assert run.parent.span_id == request.get_span_context().span_id


def _provider_of(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def test_with_traces_off_no_context_is_recorded_and_no_span_is_made(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    fake.answer_with(SimulatedTeam(plans=[{"activities": [act("a")]}]))
    async with running(orch.worker()):
        handle = await orch.submit("one part", model=MODEL, plan={"activities": [act("a")]})
        await handle.result(timeout=30)
    assert not tracing.enabled() and telemetry.tracer() is None
    meta = await orch.store.get_meta(handle.run_id)
    assert "traceparent" not in meta


async def test_a_run_created_untraced_is_still_one_trace_on_traced_workers(
    spans: InMemorySpanExporter, orch: Orchestrator
) -> None:
    tracing.disable()  # the submitting side has traces off
    handle = await orch.start("slow_chain", 2, "/dev/null")
    assert "traceparent" not in await orch.store.get_meta(handle.run_id)
    tracing.enable(_provider_of(spans))  # the workers' side has them on
    async with running(orch.worker(modules=["tests.worker_workflows"])):
        await handle.result(timeout=20)
        await wait_until(
            lambda: [s for s in spans.get_finished_spans() if s.name.startswith("taskloom.run")],
            "the run span",
        )
    finished = spans.get_finished_spans()
    assert len({s.context.trace_id for s in finished if s.context is not None}) == 1
    (run,) = [s for s in finished if s.name == "taskloom.run slow_chain"]
    steps = [s for s in finished if s.name == "taskloom.activity slow_step"]
    assert len(steps) == 2 and run.parent is None and run.context is not None
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in steps)


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: POST /v1/traces with a protobuf body."""

    received: list[ExportTraceServiceRequest]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            self.server.received.append(request)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.received  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


async def test_a_worker_process_exports_its_spans_over_otlp_into_the_runs_trace(
    spans: InMemorySpanExporter,
    orch: Orchestrator,
    receiver: tuple[str, list[ExportTraceServiceRequest]],
    spawn_worker: Any,
    tmp_path: Any,
) -> None:
    url, received = receiver
    spawn_worker(
        "tests.worker_workflows",
        TASKLOOM_TRACES="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=url,
        OTEL_SERVICE_NAME="taskloom-test-worker",
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
    handle = await orch.start("slow_chain", 2, str(tmp_path / "log"))
    assert await handle.result(timeout=30) == [0, 1]
    trace_id, run_span_id = await _recorded(orch, handle.run_id)

    def exported() -> dict[str, Any]:
        found: dict[str, Any] = {}
        for request in received:
            for resource in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource.resource.attributes}
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        found[span.name + span.span_id.hex()] = (service, span)
        names = [s.name for _, s in found.values()]
        return (
            found
            if "taskloom.run slow_chain" in names
            and names.count("taskloom.activity slow_step") == 2
            else {}
        )

    found = await wait_until(exported, "the worker's spans at the receiver", timeout=30)
    for service, span in found.values():
        assert service["service.name"] == "taskloom-test-worker"
        assert span.trace_id.hex() == trace_id
    (run,) = [s for _, s in found.values() if s.name == "taskloom.run slow_chain"]
    assert run.span_id.hex() == run_span_id and run.parent_span_id == b""
    for _, span in found.values():
        if span.name == "taskloom.activity slow_step":
            assert span.parent_span_id.hex() == run_span_id
