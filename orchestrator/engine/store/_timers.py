"""Durable timers: runs to wake at a time, found through sorted sets by due time.

A run that waits only on a timer leaves memory; its owner puts the run id in a timer
set, scored by when it is due (``ZADD LT``: the earliest of its timers), and whichever
worker finds it due puts the run on the run queue, where any worker takes it and
replays it up to the timer, which fires.

The timers are spread over *timer partitions* (``partitions``, the worker's
``TASKLOOM_QUEUE_PARTITIONS``; :class:`~taskloom.engine.partitions.TimerPartitions` says
how writers and readers agree on their number): a run's timers go to the partition its
id hashes to (:func:`timer_partition`). Partition 0 is the one set there always was,
in the run queue's slot: one script fires its due timers. Partition ``i > 0`` has a slot
of its own, so firing is at least once in three steps: ``take_timers.lua`` moves the due
run ids to the partition's firing set, scored ``now + again_ms``; they are added to the
run queue; ``drop_timers.lua`` forgets them. A taker that dies between the steps leaves
them in the firing set, and the next take fires them again once ``again_ms`` has
passed. A run put on the run queue twice is harmless: the worker that takes it replays
it, and a timer already fired is in its log once (a ``timer_fired`` is recorded once
per step).
"""

from __future__ import annotations

import zlib
from typing import Any

from taskloom.engine.store._base import StoreBase, now_ms

__all__ = ["FIRE_AGAIN_MS", "Timers", "timer_partition"]

FIRE_AGAIN_MS = 10_000
"""How long after it was taken a timer of partition ``i > 0`` is fired again when its
taker never said it was on the run queue (it died in between)."""


def timer_partition(run_id: str, partitions: int) -> int:
    """The timer partition of ``run_id``'s timers, of ``partitions`` (stable: CRC-32)."""
    if partitions <= 1:
        return 0
    return zlib.crc32(run_id.encode()) % partitions


class Timers(StoreBase):
    """The store's durable timers, over one or more timer partitions."""

    async def add_timer(self, run_id: str, due_ms: int, *, partitions: int = 1) -> None:
        """Make sure the run is woken at ``due_ms`` (keeps the earliest), in its partition
        of ``partitions``."""
        key = self.keys.timer_set(timer_partition(run_id, partitions))
        await self.raw.zadd(key, {run_id: due_ms}, lt=True)

    async def pop_timers(
        self,
        *,
        now: int | None = None,
        limit: int = 100,
        partitions: int = 1,
        again_ms: int = FIRE_AGAIN_MS,
    ) -> int:
        """Move timers due by ``now`` (ms; default: the real time) to the run queue, at
        most ``limit`` of each of the first ``partitions`` partitions; returns how many
        fired. A partition whose node failed is raised from after the others fired."""
        at = now_ms() if now is None else now
        again = at + again_ms

        def take(pipe: Any) -> None:
            keys = self.keys
            self.scripts.queue(pipe, "pop_timers", [keys.timers, keys.runq], [at, limit])
            for i in range(1, partitions):
                sets = [keys.timer_set(i), keys.timers_firing(i)]
                self.scripts.queue(pipe, "take_timers", sets, [at, limit, again])

        replies = await self.scripts.pipeline(take)
        taken = {
            i: list(dict.fromkeys(reply))
            for i, reply in enumerate(replies)
            if i and reply and not isinstance(reply, Exception)
        }
        if taken:
            await self._fire(taken)
            await self._forget(taken, again)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return int(replies[0]) + sum(len(runs) for runs in taken.values())

    async def _fire(self, taken: dict[int, list[str]]) -> None:
        """Put the runs taken from each partition on the run queue."""
        pipe = self.raw.pipeline(transaction=False)
        for runs in taken.values():
            for run_id in runs:
                pipe.xadd(self.keys.runq, {"run": run_id, "why": "timer"})
        await pipe.execute()

    async def _forget(self, taken: dict[int, list[str]], again: int) -> None:
        """Forget the timers :meth:`_fire` put on the run queue (only then: should it
        fail, they are fired again once ``again`` has passed)."""

        def drop(pipe: Any) -> None:
            for i, runs in taken.items():
                firing = [self.keys.timers_firing(i)]
                self.scripts.queue(pipe, "drop_timers", firing, [again, *runs])

        await self.scripts.pipeline(drop)
