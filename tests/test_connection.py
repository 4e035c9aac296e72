"""The Redis client taskloom makes: values round-trip through its command packer, and
a silent server is noticed."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskloom.engine.connection import make_client

pytestmark = pytest.mark.anyio


async def test_values_round_trip_and_unpackable_values_are_a_data_error(
    redis_url: str, prefix: str
) -> None:
    client = make_client(redis_url)
    key = f"{prefix}:packing"
    try:
        values = {"text": "héllo ✓", "int": -3, "float": 0.1, "big": 1e20, "bytes": b"caf\xc3\xa9"}
        await client.hset(key, mapping=values)
        stored = await client.hgetall(key)
        assert stored == {
            "text": "héllo ✓",
            "int": "-3",
            "float": "0.1",
            "big": "1e+20",
            "bytes": "café",
        }
        # A command name of two words is split as redis-py's own packer splits it.
        assert await client.execute_command("CONFIG GET", "maxmemory-policy")
        with pytest.raises(DataError):
            await client.set(key + ":none", None)  # type: ignore[arg-type]
        with pytest.raises(DataError):
            await client.set(key + ":bool", True)  # type: ignore[arg-type]
    finally:
        await client.delete(key)
        await client.aclose()


async def test_a_server_that_stops_answering_is_noticed_within_the_socket_timeout() -> None:
    """Writes skip redis-py's per-write ``wait_for``; reads keep the timeout."""
    heard = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)  # takes the command and never answers
        heard.set()
        await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = make_client(f"redis://127.0.0.1:{port}/0?protocol=2")
    conn = client.connection_pool.make_connection()
    conn.socket_timeout = 0.3
    conn.driver_info = None  # nothing to say on connect: the silent server can't reply
    try:
        await conn.connect()
        started = time.monotonic()
        await conn.send_command("PING", check_health=False)
        assert conn.socket_timeout == 0.3  # restored after the write
        with pytest.raises(RedisTimeoutError):
            await conn.read_response()
        assert heard.is_set()
        assert time.monotonic() - started < 3
    finally:
        await conn.disconnect()
        await client.aclose()
        server.close()
