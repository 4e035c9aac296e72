"""The fake LLM's HTTP framing on raw connections, where the SDKs would hide it."""

from __future__ import annotations

import asyncio
import json

import pytest

from taskloom.agents.fake_llm import FakeLLM, reply

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "hi"}]


async def _exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw`` and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await reader.read(-1)
    finally:
        writer.close()


async def test_an_http_1_0_client_gets_a_stream_it_can_read() -> None:
    # HTTP/1.0 has no chunked encoding: the stream is sent as is, ended by the close.
    body = json.dumps({"model": "m", "messages": USER, "stream": True}).encode()
    raw = (
        b"POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    async with FakeLLM([reply("two words")]) as fake:
        answer = await _exchange(fake.port, raw)
        fake.assert_complete()
    head, _, stream = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding" not in head.lower()
    events = [e for e in stream.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events), events
    assert events[-1] == b"data: [DONE]"
    deltas = [json.loads(e[6:])["choices"] for e in events[:-1]]
    text = "".join(c[0]["delta"].get("content") or "" for c in deltas if c)
    assert text == "two words"


async def test_bytes_that_are_not_http_get_a_400_and_a_closed_connection() -> None:
    async with FakeLLM([reply("still here")]) as fake:
        answer = await _exchange(fake.port, b"NOT HTTP AT ALL\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"connection: close" in head.lower()
        assert "bad HTTP request" in json.loads(body)["error"]["message"]
        # The server still answers the next connection.
        ok = json.dumps({"model": "m", "messages": USER}).encode()
        raw = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
            + f"content-length: {len(ok)}\r\n\r\n".encode()
            + ok
        )
        answer = await _exchange(fake.port, raw)
        fake.assert_complete()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"still here" in answer


async def test_a_client_that_expects_100_continue_gets_it_before_sending_the_body() -> None:
    body = json.dumps({"model": "m", "messages": USER}).encode()
    async with FakeLLM([reply("continued")]) as fake:
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
        )
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        fake.assert_complete()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
