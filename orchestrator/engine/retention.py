"""Deleting runs: every key a run owns, for the retention sweep and ``orch.delete``.

One piece of code deletes a run, whoever asks. A run's keys live in three hash slots,
so a deletion is several scripts, in an order that a crash between them can only
leave for the next sweep to finish (the status index entry goes last, and it is what
the sweep finds runs by):

1. its human tasks (``{inbox}`` slot, ``lua/inbox_forget.lua``), decided or still open:
   found as ``RUN/SEQ`` for each step the run recorded or tried, and among the open ones;
   and its dead-letter entries (each queue's slot, ``lua/dlq_forget.lua``), read from the
   dead letters of every queue that has any;
2. its own keys (``{run_id}`` slot, ``lua/run_delete.lua``, refusing a run that has not
   ended): meta, log, steps, attempts, heartbeats, blob set, last write, sent events,
   the LLM layer's budget keys, and the claim and live token stream of each step
   (:meth:`Keys.owned <taskloom.engine.keys.Keys.owned>`);
3. its status index entry (``{idx}`` slot).

Expiry is driven by due time: a finished run's terminal status index scores it by
when it ended, so with one retention for all runs the oldest entries are exactly the
runs due first, read a batch at a time (:meth:`RunDeleter.due`) however many there are.
The blobs a deleted run referenced are left to the blob collection (a blob another run
may be writing at that moment is kept for a grace period), except for
:meth:`RunDeleter.delete_one`, which deletes those no other run references.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from taskloom.engine.blobs import BlobStore
from taskloom.engine.keys import ACTIVE_STATUSES, STATUSES, TERMINAL_STATUSES
from taskloom.engine.partitions import timer_partitions_in_use
from taskloom.engine.store import Store
from taskloom.engine.store._base import raise_first
from taskloom.errors import RunActiveError, RunNotFoundError

__all__ = ["BATCH", "Deleted", "RunDeleter"]

log = logging.getLogger("taskloom.engine.retention")

BATCH = 200
"""Runs deleted per batch: one read pipeline, one pipeline of scripts, one index trim."""
_INBOX_CHUNK = 1000
"""Task (or dead-letter entry) keys per ``inbox_forget`` (``dlq_forget``) call, so no
one script holds the server for long."""


@dataclass(frozen=True)
class Deleted:
    """What deleting one run found: its status before (``""``: its meta was gone) and
    the blob references it held; ``active``: it had not ended, so nothing was deleted."""

    run_id: str
    status: str
    blobs: frozenset[str]
    active: bool = False


class RunDeleter:
    """Deletes runs of ``store`` and everything they own."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def due(self, *, ended_before_ms: int, limit: int = BATCH) -> list[str]:
        """The (at most ``limit``) runs that ended longest ago, before ``ended_before_ms``."""
        keys, pipe = self.store.keys, self.store.raw.pipeline(transaction=False)
        for status in TERMINAL_STATUSES:
            pipe.zrangebyscore(
                keys.index(status), "-inf", ended_before_ms, 0, limit, withscores=True
            )
        rows = [(score, run_id) for found in await pipe.execute() for run_id, score in found]
        return [run_id for _, run_id in sorted(rows)[:limit]]

    async def oldest_end_ms(self) -> int | None:
        """When the run that ended longest ago ended (ms), if any did."""
        keys, pipe = self.store.keys, self.store.raw.pipeline(transaction=False)
        for status in TERMINAL_STATUSES:
            pipe.zrange(keys.index(status), 0, 0, withscores=True)
        scores = [int(score) for found in await pipe.execute() for _, score in found]
        return min(scores) if scores else None

    async def delete(self, run_ids: Sequence[str]) -> list[Deleted]:
        """Delete the runs ``run_ids`` and everything they own; a run that has not ended
        is left alone (``active``). Safe to repeat: what is gone already is skipped."""
        if not run_ids:
            return []
        store, keys = self.store, self.store.keys
        pipe = store.raw.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hget(keys.meta(run_id), "status")
            pipe.hkeys(keys.steps(run_id))
            pipe.hkeys(keys.attempts(run_id))
            pipe.smembers(keys.blobs(run_id))
        pipe.zrange(keys.inbox_open, 0, -1)
        replies = await pipe.execute()
        open_tasks: list[str] = replies.pop()
        seqs: dict[str, list[str]] = {}
        blobs: dict[str, frozenset[str]] = {}
        ended: list[str] = []
        for i, run_id in enumerate(run_ids):
            status, steps, attempts, refs = replies[4 * i : 4 * i + 4]
            if status in ACTIVE_STATUSES:
                continue  # refused by the script below too; its tasks stay
            ended.append(run_id)
            seqs[run_id] = sorted(set(steps) | set(attempts))
            blobs[run_id] = frozenset(refs)
        await self._forget_tasks(ended, seqs, open_tasks)
        await self._forget_dead_letters(ended)

        def build(pipe: Any) -> None:
            for run_id in run_ids:
                owned = keys.owned(run_id, seqs.get(run_id, ()))
                store.scripts.queue(pipe, "run_delete", owned, [])

        outcomes = raise_first(await store.scripts.pipeline(build))
        gone = [
            Deleted(run_id, str(status), blobs.get(run_id, frozenset()), verdict == "active")
            for run_id, (verdict, status) in zip(run_ids, outcomes, strict=True)
        ]
        done = [d.run_id for d in gone if not d.active]
        if done:  # last: the entry is how a sweep finds a run it has to finish deleting
            # A run that ended while a durable timer of its was set (cancelled in a
            # sleep, say) leaves the timer until it falls due, maybe days on: forgotten
            # here, in every timer partition any worker has used (which one a run's timer
            # is in depends on the partitions of the worker that set it).
            partitions = await timer_partitions_in_use(store)
            pipe = store.raw.pipeline(transaction=False)
            for i in range(partitions):
                pipe.zrem(keys.timer_set(i), *done)
                if i:
                    pipe.zrem(keys.timers_firing(i), *done)
            for status in STATUSES:
                if status not in ACTIVE_STATUSES:
                    pipe.zrem(keys.index(status), *done)
            await pipe.execute()
        return gone

    async def _forget_tasks(
        self, run_ids: list[str], seqs: dict[str, list[str]], open_tasks: list[str]
    ) -> None:
        """Delete the human tasks of ``run_ids``: ``RUN/SEQ`` of each step they recorded
        or tried (a decided task's step is recorded), and the open ones they left."""
        wanted = set(run_ids)
        ids = {f"{run_id}/{seq}" for run_id in run_ids for seq in seqs[run_id]}
        ids.update(t for t in open_tasks if t.split("/", 1)[0] in wanted)
        if not ids:
            return
        keys, ordered = self.store.keys, sorted(ids)
        fixed = [keys.inbox_open, keys.inbox_sla, keys.inbox_assignees]

        def build(pipe: Any) -> None:
            for i in range(0, len(ordered), _INBOX_CHUNK):
                chunk = ordered[i : i + _INBOX_CHUNK]
                task_keys = [keys.inbox_task(t) for t in chunk]
                self.store.scripts.queue(pipe, "inbox_forget", fixed + task_keys, chunk)

        raise_first(await self.store.scripts.pipeline(build))

    async def _forget_dead_letters(self, run_ids: list[str]) -> None:
        """Delete the dead-letter entries of ``run_ids`` (``RUN/SEQ``) in every queue.
        One read of the queues' sizes when no queue has dead letters (the usual case)."""
        if not run_ids:
            return
        store, keys, wanted = self.store, self.store.keys, set(run_ids)
        queues = sorted(await store.raw.smembers(keys.queues))
        if not queues:
            return
        pipe = store.raw.pipeline(transaction=False)
        for queue in queues:
            pipe.zcard(keys.dlq(queue))
        holding = [q for q, n in zip(queues, await pipe.execute(), strict=True) if n]
        if not holding:
            return
        pipe = store.raw.pipeline(transaction=False)
        for queue in holding:
            pipe.zrange(keys.dlq(queue), 0, -1)
        found = {
            queue: [i for i in ids if i.split("/", 1)[0] in wanted]
            for queue, ids in zip(holding, await pipe.execute(), strict=True)
        }

        def build(pipe: Any) -> None:
            for queue, ids in found.items():
                for i in range(0, len(ids), _INBOX_CHUNK):
                    chunk = ids[i : i + _INBOX_CHUNK]
                    entries = [keys.dlq_entry(queue, entry_id) for entry_id in chunk]
                    store.scripts.queue(pipe, "dlq_forget", [keys.dlq(queue), *entries], chunk)

        if any(found.values()):
            raise_first(await store.scripts.pipeline(build))

    async def expire(
        self,
        *,
        ended_before_ms: int,
        batch: int = BATCH,
        keep_going: Callable[[], Awaitable[bool]] | None = None,
    ) -> int:
        """Delete every run that ended before ``ended_before_ms``, a batch at a time
        until a batch comes back short (or ``keep_going()``, asked between batches, says
        no); returns how many were deleted."""
        total = 0
        while True:
            run_ids = await self.due(ended_before_ms=ended_before_ms, limit=batch)
            gone = await self.delete(run_ids)
            total += sum(1 for d in gone if not d.active)
            for d in gone:  # the index lags its status: move it where it belongs
                if d.active:
                    await self.store.set_index(d.run_id, d.status)
            if len(run_ids) < batch or (keep_going is not None and not await keep_going()):
                return total

    async def delete_one(self, run_id: str, *, blobs: BlobStore | None) -> Deleted:
        """Delete one ended run, its human tasks, and the blobs (in ``blobs``) that no
        other run references.

        Raises:
            RunNotFoundError: there is no run ``run_id``.
            RunActiveError: the run has not ended: cancel it first.
        """
        status = await self.store.raw.hget(self.store.keys.meta(run_id), "status")
        if status is None:
            raise RunNotFoundError(
                f"no run {run_id!r}: check the id (`taskloom runs` lists them); it may have "
                f"been deleted already, by hand or after its retention"
            )
        [deleted] = await self.delete([run_id])
        if deleted.active:
            raise RunActiveError(
                f"run {run_id} is {deleted.status}: only an ended run can be deleted. Cancel "
                f"it first (`taskloom cancel {run_id}` or handle.cancel()), then delete it "
                f"once it is cancelled"
            )
        if blobs is not None and deleted.blobs:
            for ref in deleted.blobs - await self._referenced(deleted.blobs):
                await blobs.delete(ref)
        return deleted

    async def _referenced(self, refs: frozenset[str]) -> set[str]:
        """Those of ``refs`` that any run in the status indexes still references."""
        store, keys, wanted = self.store, self.store.keys, sorted(refs)
        pipe = store.raw.pipeline(transaction=False)
        for status in STATUSES:
            pipe.zrange(keys.index(status), 0, -1)
        runs = {run_id for found in await pipe.execute() for run_id in found}
        held: set[str] = set()
        ordered = sorted(runs)
        for i in range(0, len(ordered), 1000):
            pipe = store.raw.pipeline(transaction=False)
            for run_id in ordered[i : i + 1000]:
                pipe.smismember(keys.blobs(run_id), wanted)
            for flags in await pipe.execute():
                held.update(ref for ref, flag in zip(wanted, flags, strict=True) if flag)
        return held
