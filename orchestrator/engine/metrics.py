"""Prometheus metrics for the engine, on a registry of their own.

A :class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry`, so several
can live in one process (one per worker, one per test) and importing this module changes
nothing. The worker calls the small typed methods; Prometheus scrapes ``GET /metrics``
from :meth:`Metrics.serve`::

    metrics = Metrics()
    server = await metrics.serve(port=9464)  # port=0 picks a free port: server.port
    metrics.activity_finished("summarize", 1.25)
    metrics.run_finished("completed")
    ...
    await server.close()

The metric names are a public contract: dashboards and ``orchestrator/alerts.yml`` use
them. Counters are declared by their base name; prometheus_client appends ``_total``.

The inbox families (``taskloom_inbox_*``) are cluster-wide: the scripts that open,
reassign and close human tasks keep them in Redis, whichever process (a worker, the web
inbox, a ``taskloom inbox decide``) made the change. The owner of a :class:`Metrics`
copies them in with :meth:`Metrics.set_inbox` (``await HumanTasks(store).stats()``)
before a scrape or every few seconds; every process then reports the same values, so
aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import IO, Any, Literal, Self, cast, get_args
from wsgiref.headers import Headers
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer, generate_latest
from prometheus_client.utils import floatToGoString as _untyped_go_float

from taskloom.engine.inboxstats import INBOX_LATENCY_BUCKETS, InboxStats
from taskloom.errors import UserError

__all__ = [
    "INBOX_LATENCY_BUCKETS",
    "LATENCY_BUCKETS",
    "InboxStats",
    "Metrics",
    "MetricsServer",
    "RunStatus",
]

RunStatus = Literal["completed", "failed", "cancelled"]
"""How a run ended, the ``status`` label of ``taskloom_runs_total``."""

LATENCY_BUCKETS: tuple[float, ...] = tuple(
    round(mantissa * 10.0**exponent, 6)
    for exponent in range(-3, 3)
    for mantissa in (1.0, 1.5, 2.5, 4.0, 6.0)
)
"""Histogram bucket bounds in seconds, 1 ms to 10 min.

Five per decade (1, 1.5, 2.5, 4, 6), so neighbouring bounds differ by 1.5-1.7x and a
p99 read with ``histogram_quantile`` is within that factor at any scale, from a cache
hit to a long LLM call.
"""

_STATUSES: frozenset[str] = frozenset(get_args(RunStatus))
_go_float: Callable[[float], str] = _untyped_go_float  # bucket bounds as Histogram writes them
_METRICS_PATH = "/metrics"
# A scrape is one small request; a client that takes longer than this is dropped so a
# stuck connection cannot pin a handler forever.
_REQUEST_TIMEOUT = 30.0
# How often the serving thread looks whether close() asked it to stop.
_POLL_INTERVAL = 0.1
_InetAddress = tuple[str, int] | tuple[str, int, int, int]


class Metrics:
    """The engine's Prometheus metrics, on a :class:`CollectorRegistry` of their own.

    Every method is cheap and thread-safe (prometheus_client locks internally), so the
    worker can call them from its event loop and from threads running sync activities.
    """

    def __init__(self) -> None:
        self._registry = CollectorRegistry()
        reg = self._registry
        self._runs = Counter(
            "taskloom_runs", "Runs that ended, by final status.", ["status"], registry=reg
        )
        for status in sorted(_STATUSES):
            # Every status exists from the start at 0, so rate() and ratios see the
            # first failure instead of a series that appears out of nowhere.
            self._runs.labels(status=status)
        self._activity_duration = Histogram(
            "taskloom_activity_duration_seconds",
            "Wall-clock time of one activity attempt, by activity name.",
            ["activity"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._queue_wait = Histogram(
            "taskloom_queue_wait_seconds",
            "Time a task waited in its queue before a worker picked it up, by queue.",
            ["queue"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._retries = Counter(
            "taskloom_activity_retries",
            "Activity attempts that failed and were scheduled again, by activity name.",
            ["activity"],
            registry=reg,
        )
        self._dead_letters = Gauge(
            "taskloom_dead_letters", "Entries currently in the dead-letter queue.", registry=reg
        )
        self._duplicates = Counter(
            "taskloom_duplicate_results",
            "Activity results that arrived for a step that already had one (discarded).",
            registry=reg,
        )
        self._in_flight = Gauge(
            "taskloom_activities_in_flight",
            "Activities this worker is running right now.",
            registry=reg,
        )
        self._human_open = Gauge(
            "taskloom_human_tasks_open", "Human tasks waiting for an answer.", registry=reg
        )
        self._sla_breaches = Counter(
            "taskloom_human_task_sla_breaches",
            "Human tasks that passed their SLA deadline without an answer.",
            registry=reg,
        )
        self._inbox = _InboxCollector()
        reg.register(self._inbox)

        self._llm_duration = Histogram(
            "taskloom_llm_request_duration_seconds",
            "Wall-clock time of one subagent run's model calls, by provider and model.",
            ["provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._llm_tokens = Counter(
            "taskloom_llm_tokens",
            "Tokens used by model calls, by provider, model and kind (input, output).",
            ["provider", "model", "kind"],
            registry=reg,
        )
        self._llm_cost = Counter(
            "taskloom_llm_cost_usd",
            "USD spent on model calls (from the price table), by provider and model.",
            ["provider", "model"],
            registry=reg,
        )
        self._loop_lag = Histogram(
            "taskloom_event_loop_lag_seconds",
            "How late the worker's event loop woke from a short sleep: time it was blocked.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._llm_limited = Counter(
            "taskloom_llm_rate_limited",
            "Model calls a provider answered with 429, by provider and model.",
            ["provider", "model"],
            registry=reg,
        )

    def llm_call(
        self,
        provider: str,
        model: str,
        seconds: float,
        *,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> None:
        """Record a subagent's model calls: duration, tokens and cost."""
        self._llm_duration.labels(provider=provider, model=model).observe(max(0.0, seconds))
        self._llm_tokens.labels(provider=provider, model=model, kind="input").inc(input_tokens)
        self._llm_tokens.labels(provider=provider, model=model, kind="output").inc(output_tokens)
        self._llm_cost.labels(provider=provider, model=model).inc(cost_usd)

    def llm_rate_limited(self, provider: str, model: str) -> None:
        """Count a 429 from a provider."""
        self._llm_limited.labels(provider=provider, model=model).inc()

    def loop_lag(self, seconds: float) -> None:
        """Record how late the event loop woke (see :mod:`taskloom.engine.looplag`)."""
        self._loop_lag.observe(_duration(seconds))

    @property
    def registry(self) -> CollectorRegistry:
        """This object's registry, e.g. to register more collectors next to ours."""
        return self._registry

    def run_finished(self, status: RunStatus) -> None:
        """Count a run that ended as ``completed``, ``failed`` or ``cancelled``."""
        if status not in _STATUSES:
            raise UserError(
                f"unknown run status {status!r}: use one of {', '.join(sorted(_STATUSES))}"
            )
        self._runs.labels(status=status).inc()

    def activity_finished(self, activity: str, seconds: float) -> None:
        """Record how long one attempt of ``activity`` ran, successful or not."""
        seconds = _duration(seconds)  # before labels(), which creates the series
        self._activity_duration.labels(activity=activity).observe(seconds)

    def queue_wait(self, queue: str, seconds: float) -> None:
        """Record how long a task waited in ``queue`` before a worker took it.

        A negative wait (enqueue and dequeue clocks on different hosts) counts as 0.
        """
        seconds = _duration(seconds)
        self._queue_wait.labels(queue=queue).observe(seconds)

    def retry(self, activity: str) -> None:
        """Count one retry of ``activity``."""
        self._retries.labels(activity=activity).inc()

    def duplicate(self, n: int = 1) -> None:
        """Count ``n`` duplicate results (a step that already had a result got another)."""
        self._duplicates.inc(_count(n, "duplicate(n)"))

    def sla_breach(self, n: int = 1) -> None:
        """Count ``n`` human tasks that just passed their SLA deadline."""
        self._sla_breaches.inc(_count(n, "sla_breach(n)"))

    def set_in_flight(self, n: int) -> None:
        """Set how many activities this worker is running now."""
        self._in_flight.set(_count(n, "set_in_flight(n)"))

    def set_dead_letters(self, n: int) -> None:
        """Set how many entries the dead-letter queue holds now."""
        self._dead_letters.set(_count(n, "set_dead_letters(n)"))

    def set_human_tasks_open(self, n: int) -> None:
        """Set how many human tasks are waiting for an answer now."""
        self._human_open.set(_count(n, "set_human_tasks_open(n)"))

    def set_inbox(self, stats: InboxStats) -> None:
        """Set the inbox families (open items per assignee, decisions, decision latency,
        dead notifications) to ``stats``, read from Redis by
        :meth:`~taskloom.HumanTasks.stats`."""
        if len(stats.latency_counts) not in (0, len(INBOX_LATENCY_BUCKETS) + 1):
            raise UserError(
                f"latency_counts needs {len(INBOX_LATENCY_BUCKETS) + 1} buckets "
                f"(got {len(stats.latency_counts)})"
            )
        self._inbox.stats = stats
        if stats.open is not None:
            self.set_human_tasks_open(stats.open)

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format."""
        return generate_latest(self._registry)

    async def serve(
        self, *, host: str = "127.0.0.1", port: int, token: str | None = None
    ) -> MetricsServer:
        """Serve ``GET /metrics`` on ``host:port`` until the returned server is closed.

        With ``token`` (TASKLOOM_METRICS_TOKEN), a request without
        ``Authorization: Bearer <token>`` gets 401, as Prometheus's ``authorization``
        (or ``bearer_token_file``) scrape option sends it. The default ``host`` is
        loopback: this machine only.

        ``port=0`` binds a free port; read it from :attr:`MetricsServer.port`. A ``host``
        name that resolves to several addresses binds the first (IPv4 or IPv6); give an
        address to choose. The server is also an async context manager::

            async with await metrics.serve(port=0) as server:
                print(server.url)
        """
        server = MetricsServer(self._registry, token=token)
        await server._start(host=host, port=port)
        return server


class _InboxCollector:
    """Exposes the last :class:`InboxStats` given to :meth:`Metrics.set_inbox`."""

    def __init__(self) -> None:
        self.stats = InboxStats()

    def describe(self) -> Iterator[Metric]:
        return self._families(InboxStats())

    def collect(self) -> Iterator[Metric]:
        return self._families(self.stats)

    def _families(self, stats: InboxStats) -> Iterator[Metric]:
        cluster = " Cluster-wide (from Redis): aggregate with max, not sum."
        # By whether a person holds the item, never by who: assignees are often e-mail
        # addresses, and a label would copy them into every scraper and dashboard.
        items = GaugeMetricFamily(
            "taskloom_inbox_open_items",
            "Inbox items waiting for a decision, by assigned (yes: a person holds it; "
            "no: nobody, or a group only)." + cluster,
            labels=["assigned"],
        )
        held = sum(n for assignee, n in stats.open_by_assignee.items() if assignee)
        items.add_metric(["yes"], held)
        items.add_metric(["no"], stats.open_by_assignee.get("", 0))
        yield items
        decisions = CounterMetricFamily(
            "taskloom_inbox_decisions",
            "Inbox items decided, by decision (fallback decisions included)." + cluster,
            labels=["decision"],
        )
        for decision, n in sorted(stats.decisions.items()):
            decisions.add_metric([decision], n)
        yield decisions
        counts = stats.latency_counts or (0,) * (len(INBOX_LATENCY_BUCKETS) + 1)
        cumulative, buckets = 0, []
        for bound, n in zip((*INBOX_LATENCY_BUCKETS, math.inf), counts, strict=True):
            cumulative += n
            buckets.append((_go_float(bound), float(cumulative)))
        yield HistogramMetricFamily(
            "taskloom_inbox_decision_latency_seconds",
            "Time from an inbox item's opening to its decision." + cluster,
            buckets=buckets,
            sum_value=stats.latency_sum,
        )
        yield GaugeMetricFamily(
            "taskloom_inbox_notifications_dead",
            "Inbox notifications (webhooks, e-mail) given up on after their retries." + cluster,
            value=stats.notifications_dead,
        )


class MetricsServer:
    """A running ``/metrics`` endpoint: prometheus_client's WSGI app behind a bearer check.

    Created by :meth:`Metrics.serve`. prometheus_client's own app answers the scrape, so
    the ``Accept`` header picks the text or OpenMetrics format and ``Accept-Encoding:
    gzip`` compresses it, as with ``start_http_server``; its threading WSGI server runs in
    a daemon thread with a thread per connection, so a scrape never waits on the worker's
    event loop or on another scraper. Any path but ``/metrics`` is a 404, a method other
    than ``GET``, ``HEAD`` or ``OPTIONS`` a 405.
    """

    def __init__(self, registry: CollectorRegistry, *, token: str | None = None) -> None:
        self._app = _guarded(make_wsgi_app(registry), token=token.encode() if token else None)
        self._httpd: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None
        self._host = ""
        self._port = 0

    async def _start(self, *, host: str, port: int) -> None:
        # Binding looks the host up, which may wait on DNS: not on the event loop.
        httpd = await asyncio.to_thread(_ThreadingServer, host, port, self._app)
        self._host, self._port = httpd.socket.getsockname()[:2]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"taskloom-metrics-{self._port}",
            daemon=True,
        )
        self._httpd = httpd
        self._thread.start()

    @property
    def host(self) -> str:
        """The address the server is bound to."""
        return self._host

    @property
    def port(self) -> int:
        """The port the server is bound to (the real one when started with ``port=0``)."""
        return self._port

    @property
    def url(self) -> str:
        """The full URL of the metrics endpoint, e.g. ``http://127.0.0.1:9464/metrics``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}{_METRICS_PATH}"

    async def close(self) -> None:
        """Stop listening, drop open connections and wait until every handler is done."""
        httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
        if httpd is not None and thread is not None:
            await asyncio.to_thread(httpd.stop, thread)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _guarded(app: WSGIApplication, *, token: bytes | None) -> WSGIApplication:
    """``app`` on ``/metrics`` only, behind ``Authorization: Bearer <token>`` if given."""

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != _METRICS_PATH:
            return _plain(start_response, "404 Not Found", b"not found: try /metrics\n")
        if token is not None and not _bearer_ok(environ.get("HTTP_AUTHORIZATION", ""), token):
            return _plain(
                start_response,
                "401 Unauthorized",
                b"send Authorization: Bearer <TASKLOOM_METRICS_TOKEN>\n",
                ("WWW-Authenticate", 'Bearer realm="taskloom"'),
            )
        if environ.get("REQUEST_METHOD") == "HEAD":  # prometheus_client's app answers 405
            return _head(app, environ, start_response)
        return app(environ, start_response)

    return guarded


def _bearer_ok(authorization: str, token: bytes) -> bool:
    scheme, _, credentials = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode("latin-1", "replace"), token
    )


def _head(
    app: WSGIApplication, environ: WSGIEnvironment, start_response: StartResponse
) -> list[bytes]:
    """The status and headers ``app`` gives a GET, with its length, and no body."""
    answers: list[tuple[str, list[tuple[str, str]]]] = []

    def record(status: str, headers: list[tuple[str, str]], _exc_info: object = None) -> Any:
        answers.append((status, headers))
        return lambda _data: None

    body = b"".join(app({**environ, "REQUEST_METHOD": "GET"}, record))
    ((status, headers),) = answers
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return []


def _plain(
    start_response: StartResponse, status: str, body: bytes, *headers: tuple[str, str]
) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *headers])
    return [body]


class _ResponseWriter(ServerHandler):
    """wsgiref's response writer, speaking HTTP/1.1 and closing after each response."""

    http_version = "1.1"
    headers: Headers  # the response's, set by start_response

    def cleanup_headers(self) -> None:
        super().cleanup_headers()
        # One request per connection (see _RequestHandler.handle); a hop-by-hop header,
        # which the WSGI app itself may not set.
        self.headers["Connection"] = "close"


class _RequestHandler(WSGIRequestHandler):
    """One request per connection, read within ``_REQUEST_TIMEOUT``, nothing logged."""

    protocol_version = "HTTP/1.1"  # the status line of http.server's own errors (400, 414)
    default_request_version = "HTTP/1.0"  # no HTTP/0.9: every answer has a status line
    timeout = _REQUEST_TIMEOUT  # a stuck client cannot pin its thread forever

    def handle(self) -> None:
        # WSGIRequestHandler.handle, with _ResponseWriter; a client that timed out or
        # went away ends its thread quietly.
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline, self.request_version, self.command = "", "", ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            elif self.parse_request():  # else http.server has answered
                writer = _ResponseWriter(
                    self.rfile, cast(IO[bytes], self.wfile), self.get_stderr(), self.get_environ()
                )
                writer.request_handler = self  # type: ignore[attr-defined]  # for its log
                app = cast(WSGIServer, self.server).get_app()
                assert app is not None  # _ThreadingServer sets it before serving
                writer.run(app)
        except (TimeoutError, ConnectionError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: a scrape every few seconds would flood the worker's output."""


class _ThreadingServer(ThreadingWSGIServer):
    """prometheus_client's thread-per-connection WSGI server (``start_http_server``'s),
    bound to IPv4 or IPv6 as the host resolves, able to drop its connections on close."""

    def __init__(self, host: str, port: int, app: WSGIApplication) -> None:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self.address_family = family
        self._open: set[socket.socket] = set()
        self._changed = threading.Condition()
        # AF_INET or AF_INET6, asked for above: (host, port[, flow, scope]).
        super().__init__(cast(_InetAddress, sockaddr), _RequestHandler)
        self.set_app(app)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._changed:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        with self._changed:
            self._open.discard(request)
            self._changed.notify_all()

    def stop(self, thread: threading.Thread) -> None:
        """Stop serving (``thread`` runs :meth:`serve_forever`), end every open
        connection, wait for their handlers and close the listening socket."""
        self.shutdown()  # serve_forever has returned: nothing new is accepted
        with self._changed:
            for connection in self._open:
                # Ends a handler's read or write at once; close() would leave it blocked.
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            # Only a collector stuck in a scrape can outlast this; its thread is a daemon.
            self._changed.wait_for(lambda: not self._open, timeout=_REQUEST_TIMEOUT)
        self.server_close()
        thread.join()


def _duration(seconds: float) -> float:
    if not math.isfinite(seconds):
        raise UserError(f"a duration must be a finite number of seconds, got {seconds!r}")
    # Clocks on different hosts can disagree by a little; a metric must never break
    # the engine over it.
    return max(seconds, 0.0)


def _count(n: int, what: str) -> int:
    if n < 0:
        raise UserError(f"{what} must be >= 0, got {n}")
    return n
