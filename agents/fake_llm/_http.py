"""Just enough HTTP/1.1 for the SDKs: keep-alive, Content-Length or chunked request
bodies, JSON responses, and chunked server-sent-event streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

__all__ = ["HttpError", "HttpRequest", "SseStream", "read_request", "send_json", "sse_event"]

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
SERVER = "taskloom-fake-llm"
_REASONS = {529: "Overloaded"}


class HttpError(Exception):
    """The bytes on the wire are not an HTTP request we can answer."""


@dataclass(frozen=True)
class HttpRequest:
    """One parsed request."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            # Trailers, if any, end with an empty line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
        if len(body) > MAX_BODY:
            raise HttpError("request body too large")


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> HttpRequest | None:
    """The next request on a connection, or ``None`` when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise HttpError("connection closed mid-request") from e
        return None
    except asyncio.LimitOverrunError as e:
        raise HttpError("request head too large") from e
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as e:
        raise HttpError(f"bad request line {lines[0]!r}") from e
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(f"bad header line {line!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        length = int(headers.get("content-length", "0") or "0")
        if length > MAX_BODY:
            raise HttpError("request body too large")
        body = await reader.readexactly(length) if length else b""
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return HttpRequest(
        method=method.upper(),
        path=target.split("?", 1)[0],
        headers=headers,
        body=body,
        keep_alive=keep_alive,
    )


def _head(status: int, headers: Mapping[str, str], *, keep_alive: bool) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = _REASONS.get(status, "Error")
    lines = [f"HTTP/1.1 {status} {reason}", f"server: {SERVER}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"connection: {'keep-alive' if keep_alive else 'close'}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send_json(
    writer: asyncio.StreamWriter,
    status: int,
    body: Any,
    headers: Mapping[str, str],
    *,
    keep_alive: bool,
) -> None:
    """Answer with a JSON body (``Content-Length`` framed)."""
    payload = json.dumps(body).encode()
    all_headers = {
        "content-type": "application/json",
        "content-length": str(len(payload)),
        **headers,
    }
    writer.write(_head(status, all_headers, keep_alive=keep_alive) + payload)
    await writer.drain()


def sse_event(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless it is a string."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {text}\n\n".encode()


class SseStream:
    """A ``text/event-stream`` response sent as HTTP chunks, one event per chunk."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def start(self, headers: Mapping[str, str], *, keep_alive: bool) -> None:
        """Send the response head."""
        all_headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
            **headers,
        }
        self._writer.write(_head(200, all_headers, keep_alive=keep_alive))
        await self._writer.drain()

    async def send(self, event: bytes) -> None:
        """Send one encoded event."""
        self._writer.write(f"{len(event):X}\r\n".encode() + event + b"\r\n")
        await self._writer.drain()

    async def end(self) -> None:
        """Send the last (empty) chunk: the response is complete."""
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()
