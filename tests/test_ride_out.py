"""``ride_out``, the retry loop of everything that must outlive a Redis outage: it says
so once an outage (and again every half minute of it), not at every miss; and a loop
that rode out one outage meets the next with its backoff started over.

The misses are injected at the call (a redis-py ConnectionError, as the client raises
once its own retries are spent); the outages themselves are drilled against real
servers in tests/test_outage_recovery.py."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from taskloom.engine.store import _base
from taskloom.engine.store._base import RIDE_OUT_REMIND_S, ride_out
from tests.test_limits import ManualTime

pytestmark = pytest.mark.anyio

log = logging.getLogger("tests.ride_out")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualTime:
    """``_base``'s ``time.monotonic`` and ``asyncio.sleep``, moved by hand."""
    fake = ManualTime(start=1000.0)
    # The module's own names only: the event loop keeps the real clock.
    monkeypatch.setattr(_base, "time", SimpleNamespace(monotonic=fake.now, time=time.time))
    monkeypatch.setattr(_base, "asyncio", SimpleNamespace(sleep=fake.sleep))
    return fake


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_an_outage_is_said_once_and_again_every_half_minute(
    clock: ManualTime, caplog: pytest.LogCaptureFixture
) -> None:
    misses = 20  # each try takes the client's own retries, ~5 s: 100 s of outage

    async def call() -> str:
        nonlocal misses
        clock.t += 5.0
        if misses:
            misses -= 1
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379")
        return "recorded"

    with caplog.at_level(logging.DEBUG, logger=log.name):
        assert await ride_out(call, what="run r step 1: cannot record yet", log=log) == "recorded"
    said = warnings(caplog)
    outage = clock.t - 1000.0
    assert 1 < len(said) <= 1 + outage // RIDE_OUT_REMIND_S, said
    assert said[0].startswith("run r step 1: cannot record yet (Error 111")
    assert len([r for r in caplog.records if r.name == log.name]) == 20  # all at DEBUG


async def test_the_backoff_starts_over_for_an_outage_long_after_the_last(
    clock: ManualTime, caplog: pytest.LogCaptureFixture
) -> None:
    script: list[Any] = [5.0] * 8 + [3600.0] + [5.0] * 2  # a long outage; an hour; another

    async def body() -> None:
        clock.t += script.pop(0)
        if script:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379")

    with caplog.at_level(logging.WARNING, logger=log.name):
        await ride_out(body, what="worker w: Redis error", log=log)
    assert clock.slept[7] == 5.0  # the first outage's backoff reached its cap
    assert clock.slept[8] == 0.05  # the next outage's first retry comes at once
    said = warnings(caplog)  # the first outage (~46 s): at its start and 30 s on
    assert [m.endswith("retrying in 0.05s") for m in said] == [True, False, True], said
