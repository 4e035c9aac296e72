"""How the fake answers one HTTP request: route it to its protocol, record it, refuse
what a provider would refuse, take the next step of the script and play it (a reply,
plain or streamed, an error, or a dropped connection)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Protocol

from ._anthropic import AnthropicWire
from ._http import HttpConnection, HttpRequest
from ._journal import Journal
from ._openai import OpenAIWire, json_mode_rejection
from ._records import CHARS_PER_TOKEN, Request, estimate_input_tokens, estimate_tokens
from ._records import Protocol as WireProtocol
from ._script import ScriptedSteps
from ._steps import Disconnect, ErrorReply, Reply
from ._wire import Outcome, Wire

__all__ = ["Quirks", "Responder"]

_ROUTES: dict[str, tuple[WireProtocol, Wire]] = {
    "/v1/chat/completions": ("openai", OpenAIWire()),
    "/v1/messages": ("anthropic", AnthropicWire()),
}


class Quirks(Protocol):
    """The server behaviours a test may switch (read at each request, so a change
    applies to the next one): the :class:`~taskloom.agents.fake_llm.FakeLLM` options."""

    reject_json_schema: bool
    reject_json_object: bool
    enforce_max_tokens: bool


class Responder:
    """Answers requests from ``script``, recording them in ``journal``."""

    def __init__(self, *, script: ScriptedSteps, journal: Journal, quirks: Quirks) -> None:
        self._script = script
        self._journal = journal
        self._quirks = quirks

    async def handle(self, http: HttpRequest, conn: HttpConnection) -> None:
        """Answer one request."""
        route = _ROUTES.get(http.path)
        if http.method != "POST" or route is None:
            self._journal.problem(f"unexpected request {http.method} {http.path}")
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
            self._journal.problem(f"{http.path}: the request body is not a JSON object ({e})")
            error = {
                "error": {"message": f"invalid JSON body: {e}", "type": "invalid_request_error"}
            }
            await conn.send_json(400, error, {})
            return
        req = self._journal.record(http, protocol=protocol, body=body)
        await self._answer(req, wire, conn)

    async def _refuse(
        self,
        req: Request,
        wire: Wire,
        conn: HttpConnection,
        body: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._journal.update(req, status=400)
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
                reject_json_schema=self._quirks.reject_json_schema,
                reject_json_object=self._quirks.reject_json_object,
            )
            if rejection is not None:
                await self._refuse(req, wire, conn, rejection)
                return
        step = await self._script.next_step(req)
        if isinstance(step, str):
            self._journal.problem(step)
            err = ErrorReply(status=400, message=f"fake LLM: {step}")
            body = wire.error_body(err, model=req.model, index=req.index)
            await self._refuse(req, wire, conn, body, {"x-should-retry": "false"})
            return
        req = self._journal.update(req, step=step)
        if step.latency:
            await asyncio.sleep(step.latency)
        if isinstance(step, Disconnect):
            await self._disconnect(req, wire, step, conn)
        elif isinstance(step, ErrorReply):
            await self._error(req, wire, step, conn)
        else:
            await self._reply(req, wire, step, conn)

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
        self._journal.update(req, status=step.status)
        body = wire.error_body(step, model=req.model, index=req.index)
        await conn.send_json(step.status, body, headers)

    def _resolve(self, req: Request, wire: Wire, step: Reply) -> Outcome:
        text, finish, output_tokens = step.text, step.finish_reason, step.output_tokens
        limit = wire.max_output_tokens(req.body)
        if (
            self._quirks.enforce_max_tokens
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
                self._journal.problem(f"request {req.index}: cannot send step {step!r}: {e}")
                err = ErrorReply(status=400, message=f"fake LLM: {e}")
                body = wire.error_body(err, model=req.model, index=req.index)
                await self._refuse(req, wire, conn, body)
                return
        self._journal.bill(req, outcome)
        self._journal.update(req, status=200)
        if not req.stream:
            await conn.send_json(200, body, headers)
            return
        await conn.start_stream(headers)
        for i, event in enumerate(wire.events(outcome, req.body)):
            if i and step.chunk_delay:
                await asyncio.sleep(step.chunk_delay)
            await conn.send_event(event)
        await conn.end_stream()

    async def _disconnect(
        self, req: Request, wire: Wire, step: Disconnect, conn: HttpConnection
    ) -> None:
        if req.stream and step.after_chunks is not None:
            outcome = self._resolve(req, wire, Reply(text=step.text))
            self._journal.update(req, status=200)
            await conn.start_stream(wire.headers(req.index, None), close=True)
            for event in wire.events(outcome, req.body)[: step.after_chunks]:
                await conn.send_event(event)
        conn.abort()
