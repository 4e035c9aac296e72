"""Time for policies: backoff, activity timeouts, human-task SLAs.

The worker reads the time and sets its wake-ups through a :class:`Clock`, so a test can
move time forward instead of sleeping through a real backoff or a 24-hour SLA::

    clock = ManualClock()
    worker = Worker(store, ..., clock=clock)
    ...
    clock.advance(3600)        # an hour passes; due wake-ups fire at once

Leases, claims and heartbeats stay on real time: they guard against dead processes,
and Redis expires them on its own clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock:
    """Wall-clock milliseconds and wake-ups at a time; the base is the system clock."""

    def now_ms(self) -> int:
        """Milliseconds since the epoch."""
        return int(time.time() * 1000)

    def call_at(self, when_ms: int, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on the running loop once the clock reaches ``when_ms``;
        returns a function that cancels it."""
        loop = asyncio.get_running_loop()
        handle = loop.call_later(max(0.0, (when_ms - self.now_ms()) / 1000), callback)
        return handle.cancel


class SystemClock(Clock):
    """The real clock."""


class ManualClock(Clock):
    """A clock that moves only when told to: :meth:`advance` fires what falls due."""

    def __init__(self, start_ms: int | None = None) -> None:
        self._now = int(time.time() * 1000) if start_ms is None else start_ms
        self._due: list[tuple[int, int, Callable[[], None]]] = []
        self._ids = itertools.count()
        self._cancelled: set[int] = set()

    def now_ms(self) -> int:
        return self._now

    def call_at(self, when_ms: int, callback: Callable[[], None]) -> Callable[[], None]:
        if when_ms <= self._now:
            handle = asyncio.get_running_loop().call_soon(callback)
            return handle.cancel
        key = next(self._ids)
        heapq.heappush(self._due, (when_ms, key, callback))
        return lambda: self._cancelled.add(key)

    def advance(self, seconds: float) -> None:
        """Move time forward and run (on the loop, soon) every callback now due."""
        self._now += int(seconds * 1000)
        while self._due and self._due[0][0] <= self._now:
            _, key, callback = heapq.heappop(self._due)
            if key in self._cancelled:
                self._cancelled.discard(key)
                continue
            callback()
