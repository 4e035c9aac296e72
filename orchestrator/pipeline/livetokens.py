"""The live token streams of running subagents: one short-lived Redis stream per
activity step, beside the run's log (only the final output enters the log).

A streaming agent (``Agent(stream=True)``) appends each piece of text as it arrives,
tagged with the activity's attempt, and an end marker when the attempt ends. Readers:

::

    live = LiveTokens(store)
    async for piece in live.follow(run_id, step):        # from the start, to the end
        ...
    text = await live.latest(run_id, step, tail=2000)    # the end of the latest attempt's text
    changed = await live.watch(run_id, {step: text}, block_ms=1000)  # more, for many steps

``orch.live_tokens(run_id, step)`` is :meth:`LiveTokens.follow`; the web's run page
shows :meth:`latest` and keeps it growing with :meth:`watch`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from taskloom.agents.llm import TokenSink
from taskloom.engine.follow import Entry, StreamFollower
from taskloom.engine.store import Store

__all__ = ["LIVE_MAXLEN", "LIVE_TTL_S", "LiveText", "LiveTokens"]

LIVE_TTL_S = 3600
"""How long a live token stream outlives its last token."""
LIVE_MAXLEN = 10_000
"""Entries a live stream keeps (approximately); a follower that falls further behind
misses the oldest, and the final output in the log is complete in any case."""
_BATCH = 200


@dataclass
class LiveText:
    """The end of the text one step's latest attempt has streamed so far."""

    tail: int = 2000
    """The most characters kept (the latest ones)."""
    text: str = ""
    attempt: int = -1
    """The attempt the text is from (-1: none streamed yet)."""
    cursor: str = "0-0"
    """The stream entry read last."""
    ended: bool = False
    """The attempt finished its answer (one that failed is not ended: a retry may come)."""

    def add(self, entry_id: str, fields: Mapping[str, Any]) -> bool:
        """Fold one stream entry (in order) in; whether the text or its end changed."""
        self.cursor = entry_id
        attempt = int(fields.get("a", 0))
        if attempt < self.attempt:
            return False  # an earlier attempt's, read late
        if attempt > self.attempt:  # a retry starts its text again
            self.attempt, self.text, self.ended = attempt, "", False
        if "t" in fields:
            self.text = (self.text + str(fields["t"]))[-self.tail :]
            return True
        if "end" in fields and "failed" not in fields:
            self.ended = True
            return True
        return False


class LiveTokens:
    """The live token streams of running subagents (one Redis stream per activity).

    ``follower``: where :meth:`follow` waits, sharing connections with other waits
    (an :class:`Orchestrator`'s); without one, each follow reads on its own."""

    def __init__(self, store: Store, *, follower: StreamFollower | None = None) -> None:
        self.store = store
        self.follower = follower

    # -- writing (the worker running the agent) -------------------------------------------
    def sink(self, run_id: str, step: str, attempt: int) -> TokenSink:
        """A sink that appends each piece of text, tagged with the attempt, to the stream."""
        key = self.store.keys.live(run_id, step)
        fresh = True

        async def send(text: str) -> None:
            nonlocal fresh
            first, fresh = fresh, False
            await self._append(key, {"t": text, "a": attempt}, expire=first)

        return send

    async def finish(self, run_id: str, step: str, attempt: int, *, failed: bool = False) -> None:
        """Mark the attempt's stream finished: followers stop there, or, if it
        ``failed``, once the step has no further attempt to come."""
        fields: dict[str, str | int] = {"end": 1, "a": attempt}
        if failed:
            fields["failed"] = 1
        await self._append(self.store.keys.live(run_id, step), fields, expire=True)

    async def _append(self, key: str, fields: dict[str, str | int], *, expire: bool) -> None:
        """One entry on a live stream; ``expire``: (re)start the stream's time to live,
        in the same round trip. Each token is a lone XADD, not a pipeline of one."""
        if not expire:
            await self.store.raw.xadd(key, fields, maxlen=LIVE_MAXLEN, approximate=True)
            return
        pipe = self.store.raw.pipeline(transaction=False)
        pipe.xadd(key, fields, maxlen=LIVE_MAXLEN, approximate=True)
        pipe.expire(key, LIVE_TTL_S)
        await pipe.execute()

    # -- reading ------------------------------------------------------------------------
    async def follow(
        self, run_id: str, step: str, *, timeout: float | None = None
    ) -> AsyncIterator[str]:
        """Yield the step's text as it streams, from the start, until it finishes.

        A retried attempt starts its text again: the pieces of an earlier attempt are
        skipped once a later one appears. An attempt that failed is the end when the
        step has its outcome (no retry comes): checked whenever a second passes with
        nothing new, so a step that failed for good, or whose stream stopped with its
        worker, ends the iteration too. ``timeout``: seconds to wait for more before
        giving up (``None``: until the end).
        """
        key, last, current_attempt = self.store.keys.live(run_id, step), "0-0", -1
        steps = self.store.keys.steps(run_id)
        follower = self.follower or StreamFollower(self.store.client, lanes=1)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            block = 1000
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                block = max(1, min(block, int(left * 1000)))
            entries = await follower.read(key, last, block_ms=block)
            if not entries and await self.store.raw.hexists(steps, step):
                return  # the step has its outcome, and all its text has been read
            for entry_id, fields in entries:
                last = entry_id
                attempt = int(fields.get("a", 0))
                if attempt < current_attempt:
                    continue
                current_attempt = attempt
                if "end" in fields and "failed" not in fields:
                    return
                if "t" in fields:
                    yield fields["t"]

    async def latest(self, run_id: str, step: str, *, tail: int = 2000) -> LiveText:
        """The last ``tail`` characters the step's latest attempt has streamed, read
        backwards from the stream's end (at most about ``tail`` entries, however long
        the answer); empty if nothing streamed (the agent does not stream, or the
        stream expired)."""
        key = self.store.keys.live(run_id, step)
        newest: list[tuple[str, dict[str, Any]]] = []  # newest first
        size, upper, attempt = 0, "+", None
        while size < tail:
            batch = await self.store.raw.xrevrange(key, max=upper, min="-", count=_BATCH)
            for entry_id, fields in batch:
                a = int(fields.get("a", 0))
                attempt = a if attempt is None else attempt
                if a != attempt or size >= tail:
                    break
                newest.append((entry_id, fields))
                size += len(fields.get("t", ""))
            else:
                if len(batch) == _BATCH:
                    upper = "(" + batch[-1][0]
                    continue
            break
        text = LiveText(tail=tail)
        for entry_id, fields in reversed(newest):
            text.add(entry_id, fields)
        if newest:
            text.cursor = newest[0][0]
        return text

    async def watch(
        self, run_id: str, texts: Mapping[str, LiveText], *, block_ms: int
    ) -> list[str]:
        """Wait up to ``block_ms`` for more of any of several steps' text (by step:
        each read on from its ``cursor``, and updated in place); the steps whose text
        or end changed (none on time-out)."""
        texts = dict(texts)  # the caller may change its mapping meanwhile
        if not texts:
            return []
        keys = {self.store.keys.live(run_id, step): step for step in texts}
        streams = {key: texts[step].cursor for key, step in keys.items()}
        if self.follower is None:
            reply = await self.store.raw.xread(streams, block=block_ms, count=500)
        else:
            reply = await _read_any(self.follower, streams, block_ms=block_ms)
        changed: list[str] = []
        for key, entries in reply or ():
            step = keys[key]
            text = texts[step]
            if any([text.add(entry_id, fields) for entry_id, fields in entries]):
                changed.append(step)
        return changed


async def _read_any(
    follower: StreamFollower, streams: Mapping[str, str], *, block_ms: int
) -> list[tuple[str, list[Entry]]]:
    """:meth:`StreamFollower.read` on several streams at once: the entries of those that
    have some once the first answers (or none after ``block_ms``), as XREAD replies."""
    reads = {
        key: asyncio.ensure_future(follower.read(key, after, block_ms=block_ms))
        for key, after in streams.items()
    }
    try:
        await asyncio.wait(reads.values(), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for read in reads.values():
            read.cancel()
        await asyncio.gather(*reads.values(), return_exceptions=True)
    return [
        (key, read.result())
        for key, read in reads.items()
        if not read.cancelled() and read.exception() is None and read.result()
    ]
