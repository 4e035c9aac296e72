"""What a model call's budget costs Redis (taskloom.agents.budget): its reservation and
its settlement are one hash read and one hash write each, counted on a redis-server of
this module's own (INFO commandstats counts the commands scripts run)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from taskloom.agents.budget import Budgets
from tests.helpers import own_socket_redis

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def own_socket() -> Iterator[Path]:
    with own_socket_redis() as sock:
        yield sock


@pytest.fixture
async def own(own_socket: Path) -> AsyncIterator[Redis]:
    client = Redis(unix_socket_path=str(own_socket), decode_responses=True)
    yield client
    await client.aclose()


async def _commands(client: Redis) -> Counter[str]:
    stats: dict[str, Any] = await client.info("commandstats")
    return Counter(
        {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    ) - Counter({"info": 10**9})


@pytest.mark.parametrize(("limits", "key"), [(False, None), (False, "k"), (True, "k")])
async def test_a_reservation_and_its_settlement_cost_a_hash_read_and_write_each(
    own: Redis, limits: bool, key: str | None
) -> None:
    budgets = Budgets(own, prefix=f"c{int(limits)}{key}")
    if limits:
        await budgets.set_limits("run", max_usd="100", max_tokens=10**6)
    r = await budgets.reserve("run", est_tokens=10, est_usd="0.01", key=key)  # scripts loaded
    await budgets.settle(r, actual_tokens=5, actual_usd="0.005")
    before = await _commands(own)
    for i in range(10):
        name = None if key is None else f"{key}{i}"
        r = await budgets.reserve("run", est_tokens=10, est_usd="0.01", key=name)
        await budgets.settle(r, actual_tokens=5, actual_usd="0.005")
    used = await _commands(own) - before
    expected = {"evalsha": 2, "hmget": 2, "hset": 2}
    if limits:  # the clock, the sweep for lapsed holds (none lapsed), the hold's expiry
        expected |= {"time": 1, "zrangebyscore": 1, "zadd": 1}
    assert used == Counter({k: 10 * v for k, v in expected.items()})
    usage = await budgets.usage("run")
    assert (usage.held_tokens, usage.spent_tokens, usage.spent_usd) == (0, 55, Decimal("0.055"))
