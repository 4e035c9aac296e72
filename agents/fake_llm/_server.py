"""The fake server: its lifecycle (on the running loop or on a thread of its own), the
connections it accepts, and the face tests use. Each request is answered by the
responder (``_responder.py``) from the script (``_script.py``) and kept in the journal
(``_journal.py``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from taskloom.agents.errors import UserError

from ._http import MAX_HEAD, HttpConnection
from ._journal import Journal
from ._records import Request, TokenCounter
from ._responder import Responder
from ._script import Script, ScriptedSteps
from ._steps import Step

__all__ = ["FakeLLM", "Script"]


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
        self._script = ScriptedSteps(script)
        self._journal = Journal(clock=clock)
        self._responder = Responder(script=self._script, journal=self._journal, quirks=self)
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    # -- script -----------------------------------------------------------------

    def add(self, *steps: Step) -> None:
        """Append steps to the script.

        Example::

            fake.add(rate_limited(retry_after=0.1), reply("ok"))
        """
        self._script.add(*steps)

    def answer_with(self, script: Callable[[Request], Step | Awaitable[Step]]) -> None:
        """Answer with ``script(request)`` once the listed steps are used up (as if it
        had been given to the constructor), e.g. from a fixture that made the server.

        Example::

            fake.answer_with(lambda request: reply(f"seen {request.model}"))
        """
        self._script.answer_with(script)

    @property
    def pending(self) -> list[Step]:
        """Scripted steps not used yet."""
        return [step for _, step in self._script.unused()]

    def assert_complete(self) -> None:
        """Raise AssertionError if scripted steps were left unused, or if a request
        found no step, hit an unknown path, or the script function failed."""
        pending = self._script.unused()
        problems = self._journal.problems
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
        return self._journal.requests

    @property
    def last_request(self) -> Request:
        """The latest request (AssertionError if none arrived)."""
        return self._journal.last_request

    @property
    def tokens(self) -> TokenCounter:
        """Tokens billed per model, with timestamps."""
        return self._journal.tokens

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
                await self._responder.handle(http, conn)
        except ConnectionError:
            pass  # the client went away
        except Exception as e:  # a bug in the fake: make the test fail, not hang
            self._journal.problem(f"the fake LLM failed while serving: {e!r}")
        except asyncio.CancelledError:
            # Only astop() (or the loop's shutdown) cancels this task, which the server
            # owns; ending it quietly keeps Python 3.11's StreamReaderProtocol from
            # logging a traceback for a cancelled connection callback.
            pass
        finally:
            self._connections.discard(task)
            writer.close()
