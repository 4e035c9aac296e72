"""Batching writes: many small writes of one event-loop tick become one round trip.

An :class:`Execution` buffers its log writes in a :class:`Batch` flushed once per
tick (a ``gather`` of a thousand activities is one fenced script call, not a
thousand); a worker's :class:`Batcher` records the outcomes finished in one tick
together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from taskloom.engine.store import Op

__all__ = ["Batch", "Batcher", "split_after_last_local"]

SPLIT_MIN_REST = 64
"""A batch with at least this many steps after its last local one is written in two parts."""


@dataclass
class Batch:
    """A run's writes of one tick: log ops, queued tasks, steps to run here, and what to
    do once written (create child runs, open human tasks)."""

    ops: list[Op] = field(default_factory=list)
    tasks: list[dict[str, str]] = field(default_factory=list)
    local: dict[str, tuple[str, list[Any], dict[str, Any]]] = field(default_factory=dict)
    after: list[Any] = field(default_factory=list)


def split_after_last_local(batch: Batch) -> list[Batch]:
    """Cut a big batch after its last step to run here: that part is written first, so
    those steps start without waiting for the rest (hundreds of queued tasks) to be
    written. The parts are written in order, so the log's order is unchanged."""
    if not batch.local or not batch.tasks:
        return [batch]
    cut = max(i for i, op in enumerate(batch.ops) if op.mode == "sched" and op.claim) + 1
    if len(batch.ops) - cut < SPLIT_MIN_REST:
        return [batch]
    first = {op.seq for op in batch.ops[:cut]}
    return [
        Batch(
            ops=batch.ops[:cut],
            tasks=[t for t in batch.tasks if t["seq"] in first],
            local=batch.local,
        ),
        Batch(
            ops=batch.ops[cut:],
            tasks=[t for t in batch.tasks if t["seq"] not in first],
            after=batch.after,
        ),
    ]


class Batcher:
    """Collects items submitted in one event-loop tick and handles them in one call."""

    def __init__(self, handle: Callable[[list[Any]], Awaitable[list[Any]]]) -> None:
        self._handle = handle
        self._items: list[tuple[Any, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    def submit(self, item: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not self._items:  # the task starts after this tick: it takes all of the tick's items
            self._task = loop.create_task(self._flush())  # keep a reference: not GC'd
        self._items.append((item, fut))
        return fut

    async def _flush(self) -> None:
        items, self._items = self._items, []
        try:
            results = await self._handle([i for i, _ in items])
        except BaseException as exc:
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), res in zip(items, results, strict=True):
            if not fut.done():
                fut.set_result(res)
