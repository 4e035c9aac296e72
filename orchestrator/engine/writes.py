"""The writes of one run's owner: buffered per event-loop tick, flushed in order, and
checked against a rolled-back Redis.

An :class:`~taskloom.engine.execution.Execution` owns a :class:`Writes`: workflow code's
steps append to its batch, and one flush task per tick writes the batch with one fenced
script call, so a ``gather`` of a thousand activities is one call, not a thousand. It
also keeps the log entries the owner built on (:meth:`Writes.known`), which every write,
read and lease renewal checks so that a Redis that lost the tail of its AOF is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from taskloom import tracing
from taskloom.engine.batch import Batch, split_after_last_local
from taskloom.engine.ending import child_outcome, deliver
from taskloom.errors import LeaseLostError, StoreRolledBackError

if TYPE_CHECKING:
    from taskloom.engine.execution import Execution

__all__ = ["Writes"]

log = logging.getLogger("taskloom.engine.execution")


class Writes:
    """One execution's write buffer, its flush task, and the entries it built on."""

    def __init__(self, execution: Execution) -> None:
        self._ex = execution
        self.batch = Batch()
        self._flush_queued = False
        self.flushing: asyncio.Task[None] | None = None
        self.known_id = ""  # the newest log entry this owner saw written (see saw)
        self.unverified: list[str] = []  # ID=SEQ of outcomes recorded here (see apply_all)

    # -- the entries the owner built on -------------------------------------------------
    def saw(self, entry_id: str) -> None:
        """Note that the log holds ``entry_id`` and everything before it (read in order,
        or written by a fenced append that checked :meth:`known`)."""
        if _entry_key(entry_id) > _entry_key(self.known_id):
            self.known_id = entry_id

    def known(self) -> list[str]:
        """The log entries to check before building on this owner's view: the newest it
        saw with all before it, and the outcomes recorded here since. Redis loses writes
        only as the tail of its AOF, so while it holds these it holds all the owner
        built on; every write, read and lease renewal of the owner checks them.

        An outcome comes as ``ID=SEQ``: the script that wrote entry ID also wrote the
        steps hash's SEQ, in the same atomic write, so one HMGET of the steps hash checks
        them all (a lookup of each entry in the log was one command apiece)."""
        return [self.known_id, *self.unverified] if self.known_id else list(self.unverified)

    def verified(self, checked: list[str]) -> None:
        """The entries of :meth:`known` were there: they need no checking again."""
        for entry_id in checked:
            self.saw(entry_id.partition("=")[0])
        done = set(checked)
        self.unverified = [e for e in self.unverified if e not in done]

    # -- flushing buffered writes -------------------------------------------------------
    def queue_flush(self) -> None:
        """Write the batch once this tick's callbacks have run."""
        if not self._flush_queued:
            self._flush_queued = True
            task = asyncio.get_running_loop().create_task(self._flush_tick(self.flushing))
            task.add_done_callback(lambda _: self._ex._check_evictable())
            self.flushing = task

    async def _flush_tick(self, previous: asyncio.Task[None] | None) -> None:
        """Write the batch of this tick: the task's first step runs once the tick's
        callbacks have run, so it takes everything they buffered; writes stay in order
        (each waits for the one before)."""
        self._flush_queued = False
        batch, self.batch = self.batch, Batch()
        if previous is not None:
            with contextlib.suppress(BaseException):
                await previous
        for part in split_after_last_local(batch):
            await self._flush(part)

    async def drain(self) -> None:
        """Wait until every queued write has been flushed (or failed)."""
        while self.flushing is not None and not self.flushing.done():
            with contextlib.suppress(Exception):
                await self.flushing

    async def _flush(self, batch: Batch) -> None:
        ex = self._ex
        store, host = ex.host.store, ex.host
        known = self.known()
        sent = time.monotonic()  # when the claims of steps run here went out
        try:
            results = (
                await store.append(
                    ex.run_id,
                    host.worker_id,
                    ex.epoch,
                    batch.ops,
                    claim_ttl_ms=host.claim_ttl_ms,
                    tasks=host.partitions.route(batch.tasks),
                    known=known,
                )
                if batch.ops
                else []
            )
        except (LeaseLostError, RedisError) as exc:
            for _ in batch.local:
                host.give_slot()
            log.warning("run %s: dropping it from this worker: %s", ex.run_id, exc)
            if isinstance(exc, StoreRolledBackError):
                ex.host.rolled_back(ex)  # it replays what Redis holds at once
                return
            ex.host.finished(ex)  # its lease lapses; whoever takes it next replays it
            if ex.task is not None:
                ex.task.cancel()
            return
        if batch.ops:
            self.verified(known)
        for res in reversed(results):  # entries of one append come in log order:
            if "-" in res:  # the newest says the log holds them all
                self.saw(res)
                break
        for op, res in zip(batch.ops, results, strict=True):
            if op.seq in batch.local and op.mode == "sched":
                if res in ("busy", "done"):
                    host.give_slot()
                else:
                    name, args, kwargs = batch.local[op.seq]
                    host.run_local(ex.run_id, op.seq, name, args, kwargs, claimed=sent)
        for item in batch.after:
            await self._after(item)

    async def _after(self, item: tuple[Any, ...]) -> None:
        ex = self._ex
        if item[0] == "human":
            await ex.host.human_tasks.open(item[1])  # with the operator's default SLA
            return
        _, seq, child_id, workflow, input_json = item
        store = ex.host.store
        created, status = await store.create_run(
            child_id,
            workflow=workflow,
            input_json=input_json,
            parent={"run_id": ex.run_id, "seq": seq},
            trace=tracing.new_run(ex.trace),
        )
        if created or status == "pending":
            await store.enqueue_run(child_id, "new")
        elif status in ("completed", "failed", "cancelled"):  # it ended while we were away
            info = await store.run_info(child_id)
            await deliver(
                store,
                ex.run_id,
                seq,
                child_outcome(seq, workflow, status, info.result),
                ex.host.worker_id,
            )


def _entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``) as a sortable pair; ``""`` sorts first."""
    if not entry_id:
        return (-1, -1)
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq or 0))
