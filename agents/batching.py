"""Pipelines of many callers sent as one: what the callers of one event-loop tick queue
goes to Redis in a single round trip.

A hundred model calls started together (``ctx.gather``) each want their holds before
they are sent, and each settles when its answer comes; one round trip apiece cost more
CPU than the rest of taskloom's work for the call (a loopback write wakes the server
every time). :class:`PipelineBatch` collects what they queue during one tick and sends
it in one pipeline; each caller gets the replies of its own commands::

    batch = PipelineBatch(scripts)
    replies = await batch.send(lambda pipe: scripts.queue(pipe, "budget_reserve", ...))

A read the callers of a tick all make (``shared=("EXISTS", block_key)``: is the model
blocked?) is sent once, and each of them gets its reply. A caller waits at most one tick
longer than alone. Every command must be safe to run twice: the pipeline's
``NOSCRIPT`` recovery runs them all again
(:meth:`LuaScripts.pipeline <taskloom.luascripts.LuaScripts.pipeline>`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from taskloom.luascripts import LuaScripts, queued_count

__all__ = ["Command", "PipelineBatch", "PipelineStep"]

PipelineStep = Callable[[Any], None]
"""Adds commands to a redis-py pipeline."""

Command = tuple[str, ...]
"""A Redis command and its arguments, e.g. ``("EXISTS", key)``."""


class PipelineBatch:
    """Sends the pipelines queued in one event-loop tick together, on ``scripts``'
    client (see the module)."""

    def __init__(self, scripts: LuaScripts) -> None:
        self._scripts = scripts
        self._queued: list[_Item] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def send(self, build: PipelineStep, *, shared: Command | None = None) -> list[Any]:
        """Run the commands ``build(pipe)`` adds, with those of the other callers of
        this tick; returns their replies (errors as exception objects, as
        :meth:`LuaScripts.pipeline <taskloom.luascripts.LuaScripts.pipeline>` does).

        ``shared``: a read-only command (``("EXISTS", key)``) sent once for all the
        callers of the tick that name it; its reply comes first in the list."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queued.append((build, shared, future))
        if len(self._queued) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        items, self._queued = self._queued, []
        task = asyncio.get_running_loop().create_task(self._send(items))
        self._sending.add(task)  # kept until done: the loop holds tasks weakly
        task.add_done_callback(self._sending.discard)

    async def _send(self, items: list[_Item]) -> None:
        spans: list[tuple[int, int]] = []
        shared_at: dict[Command, int] = {}

        def build_all(pipe: Any) -> None:
            spans.clear()  # built again after NOSCRIPT
            shared_at.clear()
            for _, shared, _ in items:
                if shared is not None and shared not in shared_at:
                    shared_at[shared] = queued_count(pipe)
                    pipe.execute_command(*shared)
            for build, _, _ in items:
                start = queued_count(pipe)
                build(pipe)
                spans.append((start, queued_count(pipe)))

        try:
            replies = await self._scripts.pipeline(build_all)
        except BaseException as exc:
            for _, _, future in items:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (start, end), (_, shared, future) in zip(spans, items, strict=True):
            if not future.done():
                first = [] if shared is None else [replies[shared_at[shared]]]
                future.set_result(first + replies[start:end])


_Item = tuple[PipelineStep, "Command | None", asyncio.Future[list[Any]]]
