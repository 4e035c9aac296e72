"""Leases: one owner per run, fenced by an epoch.

A worker owns a run under a lease with a TTL (``acquire.lua``); each acquisition bumps
the run's epoch, the fencing token that the log's appends check. Owners renew their
leases in one round trip per heartbeat and release a run when it waits or ends; the
leases sorted set, by expiry, is how a sweep finds the runs of a dead owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from taskloom.engine.store._base import now_ms, raise_first
from taskloom.engine.store._runs import RunRecords

__all__ = ["Leases"]


class Leases(RunRecords):
    """The store's leases: acquire, renew, release, find the expired (a lease moves the
    run in the status index, hence :class:`RunRecords` beneath)."""

    async def acquire(self, run_id: str, worker: str, *, ttl_ms: int) -> tuple[str, str]:
        """Try to own a run: ``('acquired', epoch)``, ``('held', owner)``, ``('terminal'|
        'missing', ...)``."""
        ts = now_ms()
        res = await self._call("acquire", [self.keys.meta(run_id)], [worker, ts, ttl_ms])
        if res[0] == "acquired":

            def follow_up(pipe: Any) -> None:
                pipe.zadd(self.keys.leases, {run_id: ts + ttl_ms})
                if res[2] != "running":
                    self.queue_index(pipe, run_id, "running")

            raise_first(await self.scripts.pipeline(follow_up))
        return str(res[0]), str(res[1]) if len(res) > 1 else ""

    async def renew(
        self,
        leases: Iterable[tuple[str, str]],
        worker: str,
        *,
        ttl_ms: int,
        known: Mapping[str, Sequence[str]] | None = None,
    ) -> list[bool]:
        """Renew ``(run_id, epoch)`` leases in one round trip; ``False`` where lost.

        ``known``: per run, log entries its owner saw; a run whose log lost one (Redis
        rolled back) is not renewed either: its owner must replay it.
        """
        leases = list(leases)
        if not leases:
            return []
        ts = now_ms()
        known = known or {}

        def build(pipe: Any) -> None:
            for run_id, epoch in leases:
                self.scripts.queue(
                    pipe,
                    "renew",
                    [self.keys.meta(run_id), self.keys.log(run_id), self.keys.steps(run_id)],
                    [worker, epoch, ts, ttl_ms, " ".join(known.get(run_id, ()))],
                )
            pipe.zadd(self.keys.leases, {run_id: ts + ttl_ms for run_id, _ in leases})

        res = raise_first(await self.scripts.pipeline(build))
        return [int(r) == 1 for r in res[:-1]]

    async def release(
        self, run_id: str, worker: str, epoch: str, *, last_seen: str, status: str
    ) -> int:
        """Give up a run: 1 released, 0 not ours any more, -1 unseen events arrived."""
        meta, log, _ = self.keys.run_keys(run_id)
        res = int(
            await self._call("release", [meta, log], [worker, epoch, last_seen, status, now_ms()])
        )
        if res == 1:

            def follow_up(pipe: Any) -> None:
                pipe.zrem(self.keys.leases, run_id)
                self.queue_index(pipe, run_id, status)

            raise_first(await self.scripts.pipeline(follow_up))
        return res

    async def expired_leases(self, *, limit: int = 100) -> list[str]:
        """Run ids whose lease has passed its expiry (their owner may be dead)."""
        rows: list[str] = await self.raw.zrangebyscore(
            self.keys.leases, "-inf", now_ms(), start=0, num=limit
        )
        return rows
