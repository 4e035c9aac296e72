"""Claims: which worker runs which activity right now, and what it keeps while running.

Before it runs an activity a worker claims the step (``start.lua``): a key per
``(run, seq)`` with a TTL that the worker extends while the attempt runs, so two copies
of one activity never run side by side. Beside the claims: the heartbeat details a running
attempt saves for the attempt that may replace it, and whether a run stopped so its
activities can stop too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from taskloom.engine import serde
from taskloom.engine.keys import TERMINAL_STATUSES
from taskloom.engine.store._base import StoreBase, group_by_run, raise_first

__all__ = ["Claims"]


class Claims(StoreBase):
    """The store's claims on running activities, their heartbeats, their runs' stops."""

    async def start_activities(
        self, tasks: Sequence[tuple[str, str]], worker: str, *, ttl_ms: int
    ) -> list[str]:
        """Claim ``(run_id, seq)`` tasks in one round trip: 'ok', 'done' or 'busy' each."""
        by_run = group_by_run(tasks)

        def build(pipe: Any) -> None:
            for run_id, positions in by_run.items():
                seqs = [tasks[i][1] for i in positions]
                claims = [self.keys.claim(run_id, seq) for seq in seqs]
                self.scripts.queue(
                    pipe,
                    "start",
                    [self.keys.meta(run_id), self.keys.steps(run_id), *claims],
                    [worker, ttl_ms, *seqs],
                )

        replies = raise_first(await self.scripts.pipeline(build))
        out = [""] * len(tasks)
        for positions, reply in zip(by_run.values(), replies, strict=True):
            for i, state in zip(positions, reply, strict=True):
                out[i] = str(state)
        return out

    async def unclaim(self, tasks: Sequence[tuple[str, str]], worker: str) -> None:
        """Release ``worker``'s claims on ``(run_id, seq)`` tasks it hands back."""
        if not tasks:
            return
        by_run = group_by_run(tasks)

        def build(pipe: Any) -> None:
            for run_id, positions in by_run.items():
                claims = [self.keys.claim(run_id, tasks[i][1]) for i in positions]
                self.scripts.queue(pipe, "unclaim", claims, [worker])

        raise_first(await self.scripts.pipeline(build))

    async def renew_claims(self, claims: Iterable[tuple[str, str]], *, ttl_ms: int) -> None:
        """Extend the claims on activities this worker is running."""
        pipe = self.raw.pipeline(transaction=False)
        for run_id, seq in claims:
            pipe.pexpire(self.keys.claim(run_id, seq), ttl_ms)
        await pipe.execute()

    async def stopped_runs(self, run_ids: Iterable[str]) -> set[str]:
        """Which of ``run_ids`` were cancelled or have ended (their activities may stop)."""
        ids = list(run_ids)
        pipe = self.raw.pipeline(transaction=False)
        for run_id in ids:
            pipe.hmget(self.keys.meta(run_id), "status", "cancel")
        rows = await pipe.execute()
        return {
            r for r, (status, cancel) in zip(ids, rows, strict=True)
            if cancel == "1" or status in TERMINAL_STATUSES or status is None
        }  # fmt: skip

    async def save_heartbeats(self, details: Iterable[tuple[str, str, Any]]) -> None:
        """Keep the last heartbeat details of running attempts ``(run_id, seq, details)``
        so an attempt that replaces a dead one can resume from them."""
        pipe = self.raw.pipeline(transaction=False)
        for run_id, seq, value in details:
            pipe.hset(self.keys.beats(run_id), seq, serde.dumps(value))
        await pipe.execute()

    async def load_heartbeats(self, steps: Sequence[tuple[str, str]]) -> list[Any]:
        """The saved heartbeat details of ``(run_id, seq)`` steps (``None``: none)."""
        pipe = self.raw.pipeline(transaction=False)
        for run_id, seq in steps:
            pipe.hget(self.keys.beats(run_id), seq)
        return [None if v is None else serde.loads(v) for v in await pipe.execute()]
