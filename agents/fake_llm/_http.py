"""The fake's HTTP/1.1, framed by h11 (a sans-IO protocol library): requests are read
whole (Content-Length or chunked bodies, ``Expect: 100-continue``), answers are JSON
bodies or server-sent-event streams (chunked, or close-delimited to an HTTP/1.0
client), and h11 decides whether the connection is kept alive."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h11

__all__ = ["HttpConnection", "HttpRequest", "sse_event"]

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
SERVER = b"taskloom-fake-llm"
_REASONS = {529: "Overloaded"}
_READ = 64 * 1024


@dataclass(frozen=True)
class HttpRequest:
    """One parsed request; header names are lower case, repeated headers joined."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return _REASONS.get(status, "Error").encode()


class HttpConnection:
    """The server's side of one connection: :meth:`next_request`, then one answer
    (:meth:`send_json`, or :meth:`start_stream` / :meth:`send_event` / :meth:`end_stream`),
    then :meth:`next_request` again while the connection stays open."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)

    async def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self._h11.they_are_waiting_for_100_continue:
                await self._send(
                    h11.InformationalResponse(status_code=100, reason=b"Continue", headers=[])
                )
            self._h11.receive_data(await self._reader.read(_READ))

    async def next_request(self) -> HttpRequest | None:
        """The next request, or ``None`` when the connection is over: the client
        closed it, the last answer closed it, or the bytes were not a request (those
        get a 400 first)."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        elif self._h11.our_state is not h11.IDLE:
            return None  # h11 decided the connection ends after the last answer
        try:
            head = await self._next_event()
            if not isinstance(head, h11.Request):
                return None  # ConnectionClosed, or PAUSED after a closing request
            body = bytearray()
            while not isinstance(event := await self._next_event(), h11.EndOfMessage):
                assert isinstance(event, h11.Data), event
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large")
        except h11.RemoteProtocolError as e:
            if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                error = {"message": f"bad HTTP request: {e}", "type": "invalid_request_error"}
                await self.send_json(400, {"error": error}, {"connection": "close"})
            return None
        headers: dict[str, str] = {}
        for name, value in head.headers:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return HttpRequest(
            method=head.method.decode("ascii").upper(),
            path=head.target.decode("latin-1").split("?", 1)[0],
            headers=headers,
            body=bytes(body),
        )

    async def _send(self, *events: h11.Event) -> None:
        self._writer.write(b"".join(self._h11.send(e) or b"" for e in events))
        await self._writer.drain()

    def _response(self, status: int, headers: Mapping[str, str]) -> h11.Response:
        return h11.Response(
            status_code=status,
            reason=_reason(status),
            headers=[(b"server", SERVER), *((k.encode(), v.encode()) for k, v in headers.items())],
        )

    async def send_json(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        """Answer with a JSON body (``Content-Length`` framed)."""
        payload = json.dumps(body).encode()
        all_headers = {
            "content-type": "application/json",
            "content-length": str(len(payload)),
            **headers,
        }
        await self._send(
            self._response(status, all_headers), h11.Data(data=payload), h11.EndOfMessage()
        )

    async def start_stream(self, headers: Mapping[str, str], *, close: bool = False) -> None:
        """Send the head of a ``text/event-stream`` answer; with ``close``, announce
        that the connection ends after it."""
        all_headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            **headers,
            **({"connection": "close"} if close else {}),
        }
        await self._send(self._response(200, all_headers))

    async def send_event(self, event: bytes) -> None:
        """Send one encoded event (one HTTP chunk)."""
        await self._send(h11.Data(data=event))

    async def end_stream(self) -> None:
        """End the stream: the answer is complete."""
        await self._send(h11.EndOfMessage())

    def abort(self) -> None:
        """Drop the connection, whatever the answer's state (a scripted fault)."""
        self._writer.close()


def sse_event(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless it is a string."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {text}\n\n".encode()
