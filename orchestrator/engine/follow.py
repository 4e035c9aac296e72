"""Waiting on Redis streams together: many waiters, a few blocking reads.

A waiter wants the entries of one stream after an id and waits until there are some:
``RunHandle.result()`` and ``RunHandle.events()`` on a run's log, a subagent's live
tokens. Each in an ``XREAD BLOCK`` of its own held a pooled connection while it
waited, so a process waiting on a thousand runs needed a thousand connections, and
redis-py's pool refused the 257th. A :class:`StreamFollower` reads every stream
waited on with a few blocking ``XREAD`` calls over many keys each (*lanes*, at most
``lanes`` at a time, so at most that many connections) and hands each waiter the
entries after its id.

A waiter on a key that no read in flight covers starts a lane while fewer than
``lanes`` are out, so it is served at once; otherwise its key joins the next read of
the first lane to come back, within ``block_ms``. A lane that comes back reads again
the keys that still have waiters, with every key waiting for a lane. A waiter that
gives up (its time-out, its task cancelled) leaves the others as they were; a Redis
error in a read goes to the waiters of that read, as their own XREAD's would have.

On a Redis Cluster one command reads keys of one hash slot only. A lane whose keys all
share a slot (one run's) blocks as above; one over several slots reads them without
blocking, a read per slot in one cluster pipeline (a round trip per node, the nodes in
parallel), and when nothing came, waits :func:`poll_interval` before reading again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from taskloom.errors import UserError

__all__ = ["KEYS_PER_SECOND", "Entry", "StreamFollower", "poll_interval"]

Entry = tuple[str, dict[str, str]]
"""A stream entry as redis-py returns it: ``(entry id, fields)``."""

_Id = tuple[int, int]
KEYS_PER_SECOND = 100_000
"""About how many stream keys a lane re-reads a second at most, when news keeps coming:
after a read that returned entries, a lane over ``n`` keys waits ``n`` / this (at most
0.1 s) before its next read, so that one read collects the news of many keys."""


def poll_interval(slots: int) -> float:
    """Seconds a lane over ``slots`` hash slots of a cluster waits between reads that
    found nothing: 20 ms, longer for many slots (each costs a read), at most 0.25 s."""
    return min(max(0.02, slots / 10_000), 0.25)


def _parse_id(text: str) -> _Id:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False, slots=True)
class _Waiter:
    key: str
    after: _Id
    future: asyncio.Future[list[Entry]]


class StreamFollower:
    """Waits on many Redis streams for many waiters with at most ``lanes`` blocking
    ``XREAD`` calls (connections) at a time; see the module.

    ``block_ms``: how long one read blocks (below the client's socket timeout);
    ``count``: the most entries one read returns per stream (a waiter asks again for
    more).

    Example::

        follower = StreamFollower(client)
        entries = await follower.read("tl:run:{r1}:log", after="0-0", block_ms=5000)
    """

    def __init__(
        self, client: Redis, *, lanes: int = 4, block_ms: int = 1000, count: int = 500
    ) -> None:
        if lanes < 1 or block_ms < 1 or count < 1:
            raise UserError(
                f"StreamFollower needs lanes, block_ms and count of at least 1 (got "
                f"{lanes}, {block_ms}, {count})"
            )
        self._raw: Any = client
        self._cluster = hasattr(client, "keyslot") and hasattr(client, "nodes_manager")
        self.lanes = lanes
        self.block_ms = block_ms
        self.count = count
        self._waiters: dict[str, list[_Waiter]] = {}
        self._reading: dict[str, tuple[int, _Id]] = {}  # key -> (lane, id it reads after)
        self._unread: set[str] = set()  # keys with a waiter no read in flight covers
        self._lanes: set[asyncio.Task[None]] = set()
        self._starting = False  # a lane was started and has not taken the keys yet
        self._numbers = itertools.count(1)
        self._closed = False

    @property
    def waiting(self) -> int:
        """How many waiters wait right now."""
        return sum(len(waiters) for waiters in self._waiters.values())

    @property
    def reading(self) -> int:
        """How many blocking reads (lanes) are out right now."""
        return len(self._lanes)

    async def read(self, key: str, after: str, *, block_ms: int) -> list[Entry]:
        """The entries of stream ``key`` after entry id ``after`` (``"0-0"``: from the
        start), waiting up to ``block_ms`` for the first; ``[]`` if none came."""
        if self._closed:
            raise UserError("this StreamFollower was closed (its Orchestrator was closed)")
        waiter = _Waiter(key, _parse_id(after or "0-0"), asyncio.get_running_loop().create_future())
        self._waiters.setdefault(key, []).append(waiter)
        reading = self._reading.get(key)
        if reading is None or reading[1] > waiter.after:
            self._unread.add(key)
            self._start_lane()
        try:
            await asyncio.wait({waiter.future}, timeout=block_ms / 1000)
        finally:
            self._forget(waiter)
            if waiter.future.done() and not waiter.future.cancelled():
                waiter.future.exception()  # seen, even if this waiter was cancelled
        if not waiter.future.done():
            waiter.future.cancel()
            return []
        return waiter.future.result()

    async def aclose(self) -> None:
        """Stop the reads; whoever still waits gets a :class:`UserError`."""
        self._closed = True
        lanes = list(self._lanes)
        for lane in lanes:
            lane.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        closed = UserError("the Orchestrator was closed while this waited on Redis")
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.future.done():
                    waiter.future.set_exception(closed)
        self._waiters.clear()
        self._unread.clear()

    # -- lanes ---------------------------------------------------------------------------
    def _start_lane(self) -> None:
        if self._starting or len(self._lanes) >= self.lanes:
            return  # the one starting takes this key too; else the next lane back does
        self._starting = True
        lane = asyncio.get_running_loop().create_task(self._lane(next(self._numbers)))
        self._lanes.add(lane)
        lane.add_done_callback(self._lanes.discard)

    async def _lane(self, number: int) -> None:
        """Read the unread keys, hand out what came, again until no key is unread."""
        self._starting = False
        streams = self._take_unread(number)
        while streams:
            try:
                reply = await self._read(streams)
                self._deliver(reply)
                if reply and len(streams) > 1:
                    # Each read costs as much as it has keys: let news of more keys
                    # gather first (their waiters wait for this lane meanwhile).
                    await asyncio.sleep(min(len(streams) / KEYS_PER_SECOND, 0.1))
            except Exception as exc:  # as each waiter's own XREAD would have raised
                self._fail(streams, exc)
            finally:
                self._done_reading(number, streams)
            streams = self._take_unread(number)

    async def _read(self, streams: dict[str, str]) -> Any:
        """One read of ``streams``: a blocking XREAD, or on a cluster with keys in
        several slots, a pipeline of non-blocking reads (see the module)."""
        if not self._cluster:
            return await self._raw.xread(streams, block=self.block_ms, count=self.count)
        by_slot: dict[int, dict[str, str]] = {}
        for key, after in streams.items():
            by_slot.setdefault(self._raw.keyslot(key), {})[key] = after
        if len(by_slot) == 1:
            return await self._raw.xread(streams, block=self.block_ms, count=self.count)
        pipe = self._raw.pipeline(transaction=False)
        for group in by_slot.values():
            pipe.xread(group, count=self.count)
        reply = [
            item
            for one in await pipe.execute()
            for item in (one.items() if isinstance(one, dict) else one or ())
        ]
        if not reply:
            await asyncio.sleep(poll_interval(len(by_slot)))
        return reply

    def _take_unread(self, number: int) -> dict[str, str]:
        """The unread keys that still have waiters, each from its earliest waiter's id,
        marked as read by lane ``number``."""
        streams: dict[str, str] = {}
        for key in self._unread:
            waiters = self._waiters.get(key)
            if waiters:  # all waiting: a waiter is forgotten once served or gone
                after = min(w.after for w in waiters) if len(waiters) > 1 else waiters[0].after
                streams[key] = f"{after[0]}-{after[1]}"
                self._reading[key] = (number, after)
        self._unread.clear()
        return streams

    def _done_reading(self, number: int, streams: dict[str, str]) -> None:
        """Lane ``number``'s read of ``streams`` is back: keys still waited on are unread."""
        for key in streams:
            if self._reading.get(key, (0,))[0] == number:
                del self._reading[key]
                if key in self._waiters:
                    self._unread.add(key)

    def _deliver(self, reply: Any) -> None:
        """Hand each waiter of a key in ``reply`` the entries after its id."""
        for key, entries in reply.items() if isinstance(reply, dict) else reply or ():
            if not entries:
                continue
            waiters = self._waiters.get(key, [])
            last = _parse_id(entries[-1][0])
            for waiter in [w for w in waiters if w.after < last]:
                new = [e for e in entries if _parse_id(e[0]) > waiter.after]
                if not waiter.future.done():
                    waiter.future.set_result(new)
                self._forget(waiter)

    def _fail(self, streams: dict[str, str], exc: Exception) -> None:
        for key in streams:
            for waiter in self._waiters.pop(key, []):
                if not waiter.future.done():
                    waiter.future.set_exception(exc)
            self._unread.discard(key)

    def _forget(self, waiter: _Waiter) -> None:
        waiters = self._waiters.get(waiter.key)
        if waiters is None:
            return
        with contextlib.suppress(ValueError):
            waiters.remove(waiter)
        if not waiters:
            del self._waiters[waiter.key]
            self._unread.discard(waiter.key)
