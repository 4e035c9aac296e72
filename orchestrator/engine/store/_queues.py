"""Queues, wake-ups and timers: how activities and runs reach a worker.

Activities travel on one stream per queue (consumer group :attr:`Keys.GROUP`); a
retry waits in the queue's retry set, a sorted set by due time, until it is moved back
onto the stream. Runs that need an owner go to the run queue; a run's live owner is woken
on its own wake stream instead (:class:`Routing` says which). Durable timers, which put
runs on the run queue when they fall due, are ``_timers``'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from taskloom.engine.keys import Keys
from taskloom.engine.store._base import StoreBase, now_ms

__all__ = ["Queues", "Routing", "parse_routing"]


@dataclass(frozen=True, slots=True)
class Routing:
    """Where to send the wake-up after an outcome was recorded on a run."""

    status: str  # ok | dup | late | missing | terminal
    entry_id: str = ""
    owner: str = ""
    lease_until: int = 0


def parse_routing(res: Any) -> Routing:
    """The :class:`Routing` of a script's reply (``record``, ``attempt``, ``external``)."""
    if res[0] != "ok":
        return Routing(status=str(res[0]))
    return Routing(
        status="ok", entry_id=str(res[1]), owner=str(res[2] or ""), lease_until=int(res[3] or 0)
    )


class Queues(StoreBase):
    """The store's queues: consumer groups, the run queue, wake-ups and retries."""

    async def ensure_groups(self, queue: str) -> None:
        """Create the consumer groups (idempotent)."""
        for stream in (self.keys.queue(queue), self.keys.runq):
            await self.ensure_group(stream, Keys.GROUP)

    async def ensure_group(self, stream: str, group: str, *, start: str = "0") -> None:
        """Create consumer group ``group`` of ``stream`` (and the stream) reading from
        ``start`` unless it exists; any other error is raised."""
        try:
            await self.raw.xgroup_create(stream, group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue_run(self, run_id: str, why: str) -> None:
        """Ask any worker to take ``run_id``."""
        await self.raw.xadd(self.keys.runq, {"run": run_id, "why": why})

    async def wake(self, run_id: str, routing: Routing) -> None:
        """Wake whoever should read a recorded outcome: the run's live owner, else the
        run queue (one XADD, sent on its own)."""
        if routing.owner and routing.lease_until > now_ms():
            await self.raw.xadd(
                self.keys.wake(routing.owner), {"run": run_id}, maxlen=10_000, approximate=True
            )
        else:
            await self.raw.xadd(self.keys.runq, {"run": run_id, "why": "event"})

    async def move_due_retries(self, queue: str, *, now_ms: int, limit: int = 500) -> int:
        """Move retries due by ``now_ms`` onto ``queue``; returns how many moved."""
        moved = 0
        while True:
            n = int(
                await self._call(
                    "due_retries",
                    [self.keys.retries(queue), self.keys.queue(queue)],
                    [now_ms, limit],
                )
            )
            moved += n
            if n < limit:
                return moved

    async def next_retry_ms(self, queue: str) -> int | None:
        """When the earliest retry of ``queue`` is due, if any is waiting."""
        rows = await self.raw.zrange(self.keys.retries(queue), 0, 0, withscores=True)
        return int(rows[0][1]) if rows else None
