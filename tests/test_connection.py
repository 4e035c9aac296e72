"""The Redis client taskloom makes: values round-trip through its command packer."""

from __future__ import annotations

import pytest
from redis.exceptions import DataError

from orchestrator.connection import make_client

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
