"""The fake server: listens on loopback, answers each request with the next scripted
step, and records what it saw."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeAlias

from taskloom.agents.errors import UserError

from ._anthropic import AnthropicWire
from ._http import MAX_HEAD, HttpConnection, HttpRequest
from ._openai import OpenAIWire, json_mode_rejection
from ._records import (
    CHARS_PER_TOKEN,
    Protocol,
    Request,
    TokenCounter,
    TokenEvent,
    estimate_input_tokens,
    estimate_tokens,
)
from ._steps import Disconnect, ErrorReply, Reply, Step
from ._wire import Outcome, Wire

__all__ = ["FakeLLM", "Script"]

Script: TypeAlias = Sequence[Step] | Callable[[Request], Step | Awaitable[Step]]
"""Steps answered in order, or a function of the request (sync or async) that
returns the step; it may be called concurrently."""

_ROUTES: dict[str, tuple[Protocol, Wire]] = {
    "/v1/chat/completions": ("openai", OpenAIWire()),
    "/v1/messages": ("anthropic", AnthropicWire()),
}
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "x-goog-api-key"}
)
_STEP_TYPES = (Reply, ErrorReply, Disconnect)


def _check_step(step: object, where: str) -> Step:
    if not isinstance(step, _STEP_TYPES):
        raise UserError(
            f"{where}: {step!r} is not a step; build steps with reply(), tool_calls(), "
            "error(), rate_limited(), disconnect() ..."
        )
    return step


class FakeLLM:
    """An HTTP server on 127.0.0.1 that speaks OpenAI Chat Completions
    (``POST /v1/chat/completions``) and Anthropic Messages (``POST /v1/messages``),
    answering from a script, so tests drive the official SDKs without a network.

    ``script`` is a list of steps used in order (:meth:`add` appends more), or a
    function of the :class:`Request` returning the step (sync or async; it may run
    concurrently). A list and a function combine: the function answers once the
    list is used up. A request that finds no step gets a 400 the SDKs do not retry,
    and :meth:`assert_complete` reports it.

    ``reject_json_schema`` / ``reject_json_object`` make ``/v1/chat/completions``
    answer 400 to that ``response_format``, as some local servers do; such requests
    use no step. With ``enforce_max_tokens`` a text reply longer than the request's
    max tokens is cut there, with finish reason ``length`` / ``max_tokens``.
    ``clock`` stamps requests and token counts (default ``time.monotonic``).

    Use it from async code on the running loop, or from sync code on a thread of its
    own (then sync SDK clients work too, and async script functions run there)::

        async with FakeLLM([reply("Paris")]) as fake:
            client = openai.AsyncOpenAI(base_url=fake.openai_url, api_key="test")
            ...
            fake.assert_complete()

        with FakeLLM([reply("Paris")]) as fake:   # or fake.start() ... fake.stop()
            anthropic.Anthropic(base_url=fake.anthropic_url, api_key="test")
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        reject_json_schema: bool = False,
        reject_json_object: bool = False,
        enforce_max_tokens: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reject_json_schema = reject_json_schema
        self.reject_json_object = reject_json_object
        self.enforce_max_tokens = enforce_max_tokens
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: deque[tuple[int, Step]] = deque()
        self._added = 0
        self._fallback: Callable[[Request], Step | Awaitable[Step]] | None = None
        self._requests: list[Request] = []
        self._problems: list[str] = []
        self._tokens = TokenCounter()
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None
        if callable(script):
            self._fallback = script
        elif script is not None:
            self.add(*script)

    # -- script -----------------------------------------------------------------

    def add(self, *steps: Step) -> None:
        """Append steps to the script.

        Example::

            fake.add(rate_limited(retry_after=0.1), reply("ok"))
        """
        checked = [_check_step(s, "FakeLLM.add()") for s in steps]
        with self._lock:
            for step in checked:
                self._queue.append((self._added, step))
                self._added += 1

    def answer_with(self, script: Callable[[Request], Step | Awaitable[Step]]) -> None:
        """Answer with ``script(request)`` once the listed steps are used up (as if it
        had been given to the constructor), e.g. from a fixture that made the server.

        Example::

            fake.answer_with(lambda request: reply(f"seen {request.model}"))
        """
        if not callable(script):
            raise UserError("FakeLLM.answer_with() takes a function of the request")
        self._fallback = script

    @property
    def pending(self) -> list[Step]:
        """Scripted steps not used yet."""
        with self._lock:
            return [step for _, step in self._queue]

    def assert_complete(self) -> None:
        """Raise AssertionError if scripted steps were left unused, or if a request
        found no step, hit an unknown path, or the script function failed."""
        with self._lock:
            pending = list(self._queue)
            problems = list(self._problems)
        if not pending and not problems:
            return
        lines = ["the fake LLM's script was not followed:"]
        if pending:
            lines.append(f"{len(pending)} scripted step(s) never used:")
            lines += [f"  step {pos}: {step!r}" for pos, step in pending]
        if problems:
            lines.append(f"{len(problems)} problem(s) while serving:")
            lines += [f"  {p}" for p in problems]
        raise AssertionError("\n".join(lines))

    # -- records ----------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> Request:
        """The latest request (AssertionError if none arrived)."""
        with self._lock:
            if not self._requests:
                raise AssertionError("the fake LLM has received no request")
            return self._requests[-1]

    @property
    def tokens(self) -> TokenCounter:
        """Tokens billed per model, with timestamps."""
        return self._tokens

    # -- addresses --------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on (UserError before it is started)."""
        if self._port is None:
            raise UserError("the FakeLLM is not running: use `async with FakeLLM()` or start()")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """The ``base_url`` for ``openai.OpenAI`` / ``AsyncOpenAI`` (ends in ``/v1``)."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_url(self) -> str:
        """The ``base_url`` for ``anthropic.Anthropic`` / ``AsyncAnthropic``."""
        return self.base_url

    # -- lifecycle --------------------------------------------------------------

    async def astart(self) -> None:
        """Serve on the running event loop."""
        if self._server is not None or self._thread is not None:
            raise UserError("this FakeLLM is already running")
        await self._open()

    async def _open(self) -> None:
        # A large backlog: a burst of 100+ new connections must not wait for SYN retries.
        self._server = await asyncio.start_server(
            self._on_connection, host="127.0.0.1", port=0, backlog=1024, limit=MAX_HEAD
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def astop(self) -> None:
        """Stop serving: close the listener and every open connection."""
        if self._thread is not None:
            raise UserError("this FakeLLM runs on its own thread (start()): stop it with stop()")
        await self._close()

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    def start(self) -> None:
        """Serve on a background thread with its own event loop."""
        if self._server is not None or self._thread is not None:
            raise UserError("this FakeLLM is already running")
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                asyncio.run(self._serve_in_thread(ready))
            except BaseException as e:  # reported to start()
                failure.append(e)
                ready.set()

        self._thread = threading.Thread(target=main, name="taskloom-fake-llm", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]

    def stop(self) -> None:
        """Stop the background thread started by :meth:`start`."""
        thread, loop, stop = self._thread, self._thread_loop, self._thread_stop
        if thread is None or loop is None or stop is None:
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = self._thread_loop = self._thread_stop = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _serve_in_thread(self, ready: threading.Event) -> None:
        self._thread_stop = asyncio.Event()
        self._thread_loop = asyncio.get_running_loop()
        await self._open()
        ready.set()
        try:
            await self._thread_stop.wait()
        finally:
            await self._close()

    # -- serving ----------------------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        conn = HttpConnection(reader, writer)
        try:
            while (http := await conn.next_request()) is not None:
                await self._handle(http, conn)
        except ConnectionError:
            pass  # the client went away
        except Exception as e:  # a bug in the fake: make the test fail, not hang
            self._problem(f"the fake LLM failed while serving: {e!r}")
        except asyncio.CancelledError:
            # Only astop() (or the loop's shutdown) cancels this task, which the server
            # owns; ending it quietly keeps Python 3.11's StreamReaderProtocol from
            # logging a traceback for a cancelled connection callback.
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    def _problem(self, text: str) -> None:
        with self._lock:
            self._problems.append(text)

    def _update(self, req: Request, **changes: Any) -> Request:
        updated = dataclasses.replace(req, **changes)
        with self._lock:
            self._requests[req.index] = updated
        return updated

    async def _handle(self, http: HttpRequest, conn: HttpConnection) -> None:
        """Answer one request."""
        route = _ROUTES.get(http.path)
        if http.method != "POST" or route is None:
            self._problem(f"unexpected request {http.method} {http.path}")
            body = {
                "error": {
                    "message": f"no route for {http.method} {http.path}",
                    "code": "unknown_url",
                }
            }
            await conn.send_json(404, body, {})
            return
        protocol, wire = route
        try:
            body = json.loads(http.body)
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as e:
            self._problem(f"{http.path}: the request body is not a JSON object ({e})")
            error = {
                "error": {"message": f"invalid JSON body: {e}", "type": "invalid_request_error"}
            }
            await conn.send_json(400, error, {})
            return
        headers = {k: "<redacted>" if k in _SECRET_HEADERS else v for k, v in http.headers.items()}
        with self._lock:
            req = Request(
                index=len(self._requests),
                protocol=protocol,
                method=http.method,
                path=http.path,
                body=body,
                headers=headers,
                received_at=self._clock(),
            )
            self._requests.append(req)
        await self._answer(req, wire, conn)

    async def _refuse(
        self,
        req: Request,
        wire: Wire,
        conn: HttpConnection,
        body: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._update(req, status=400)
        all_headers = wire.headers(req.index, None) | (headers or {})
        await conn.send_json(400, body, all_headers)

    async def _answer(self, req: Request, wire: Wire, conn: HttpConnection) -> None:
        invalid = wire.validate(req.body)
        if invalid is not None:
            err = ErrorReply(status=400, message=invalid)
            await self._refuse(
                req, wire, conn, wire.error_body(err, model=req.model, index=req.index)
            )
            return
        if req.protocol == "openai":
            rejection = json_mode_rejection(
                req.body,
                reject_json_schema=self.reject_json_schema,
                reject_json_object=self.reject_json_object,
            )
            if rejection is not None:
                await self._refuse(req, wire, conn, rejection)
                return
        step = await self._next_step(req)
        if isinstance(step, str):
            self._problem(step)
            err = ErrorReply(status=400, message=f"fake LLM: {step}")
            body = wire.error_body(err, model=req.model, index=req.index)
            await self._refuse(req, wire, conn, body, {"x-should-retry": "false"})
            return
        req = self._update(req, step=step)
        if step.latency:
            await asyncio.sleep(step.latency)
        if isinstance(step, Disconnect):
            await self._disconnect(req, wire, step, conn)
        elif isinstance(step, ErrorReply):
            await self._error(req, wire, step, conn)
        else:
            await self._reply(req, wire, step, conn)

    async def _next_step(self, req: Request) -> Step | str:
        """The step that answers ``req``, or what went wrong."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()[1]
            fallback = self._fallback
        where = f"request {req.index} ({req.method} {req.path}, model {req.model!r})"
        if fallback is None:
            return f"{where}: the script has no step left; add steps or a script function"
        try:
            result = fallback(req)
            step = await result if inspect.isawaitable(result) else result
            return _check_step(step, "the script function")
        except Exception as e:
            return f"{where}: the script function failed: {e!r}"

    async def _error(
        self,
        req: Request,
        wire: Wire,
        step: ErrorReply,
        conn: HttpConnection,
    ) -> None:
        headers = wire.headers(req.index, step.rate_limit)
        if step.retry_after is not None:
            headers["retry-after"] = f"{step.retry_after:g}"
        headers |= step.headers
        self._update(req, status=step.status)
        body = wire.error_body(step, model=req.model, index=req.index)
        await conn.send_json(step.status, body, headers)

    def _resolve(self, req: Request, wire: Wire, step: Reply) -> Outcome:
        text, finish, output_tokens = step.text, step.finish_reason, step.output_tokens
        limit = wire.max_output_tokens(req.body)
        if (
            self.enforce_max_tokens
            and limit is not None
            and step.finish is None
            and not step.tool_calls
            and output_tokens is None
            and estimate_tokens(text) > limit
        ):
            text, finish, output_tokens = text[: limit * CHARS_PER_TOKEN], "length", limit
        if output_tokens is None:
            calls = sum(estimate_tokens(c.name + c.arguments_json()) for c in step.tool_calls)
            output_tokens = max(1, estimate_tokens(text) + calls)
        input_tokens = step.input_tokens
        if input_tokens is None:
            input_tokens = estimate_input_tokens(req.body)
        return Outcome(
            index=req.index,
            model=req.model,
            text=text,
            tool_calls=step.tool_calls,
            finish=finish,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            created=int(time.time()),
        )

    async def _reply(self, req: Request, wire: Wire, step: Reply, conn: HttpConnection) -> None:
        outcome = self._resolve(req, wire, step)
        headers = wire.headers(req.index, step.rate_limit) | dict(step.headers)
        if not req.stream:
            try:
                body = wire.response(outcome)
            except ValueError as e:
                self._problem(f"request {req.index}: cannot send step {step!r}: {e}")
                err = ErrorReply(status=400, message=f"fake LLM: {e}")
                body = wire.error_body(err, model=req.model, index=req.index)
                await self._refuse(req, wire, conn, body)
                return
        self._bill(req, outcome)
        self._update(req, status=200)
        if not req.stream:
            await conn.send_json(200, body, headers)
            return
        await conn.start_stream(headers)
        for i, event in enumerate(wire.events(outcome, req.body)):
            if i and step.chunk_delay:
                await asyncio.sleep(step.chunk_delay)
            await conn.send_event(event)
        await conn.end_stream()

    def _bill(self, req: Request, outcome: Outcome) -> None:
        self._tokens._add(
            TokenEvent(
                at=req.received_at,
                model=req.model,
                protocol=req.protocol,
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
            )
        )

    async def _disconnect(
        self, req: Request, wire: Wire, step: Disconnect, conn: HttpConnection
    ) -> None:
        if req.stream and step.after_chunks is not None:
            outcome = self._resolve(req, wire, Reply(text=step.text))
            self._update(req, status=200)
            await conn.start_stream(wire.headers(req.index, None), close=True)
            for event in wire.events(outcome, req.body)[: step.after_chunks]:
                await conn.send_event(event)
        conn.abort()
