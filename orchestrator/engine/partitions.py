"""Queue partitions: one activity queue spread over several streams, and the durable
timers over several sorted sets (``TASKLOOM_QUEUE_PARTITIONS``).

With one partition (the default) a queue is one stream, as it always was. With ``N``
partitions each gets keys of its own hash tag (its *lane*, :func:`~taskloom.engine.keys.lane`:
``name`` for partition 0, ``name:i`` for the others), so on a Redis Cluster the deliveries
of one queue are served by several masters instead of one. A task goes to the partition
its ``(run_id, seq)`` hashes to (the same step always to the same partition); a retry
waits in the retry set of the partition its delivery came from; dead letters of every
partition stay with partition 0, where a redrive puts the task back.

Producers and consumers need not agree on ``N``: Redis keeps, per queue, the most
partitions any worker has served it with (:attr:`Keys.queue_partitions`, a sorted set
raised with ``ZADD GT``, never lowered). A worker writes to its own ``N`` partitions and
reads every partition below that high-water mark, which it reads again at every
maintenance tick; so a task is never left on a partition nobody reads, whichever
workers start, stop or change their setting. (Lowering ``N`` only stops the writes to
the upper partitions: the workers keep reading them.)

The same setting spreads the durable timers over ``N`` sorted sets of their own hash tags
(:class:`TimerPartitions`; partition 0 is the one set there always was): one knob for
one concern, so that no one key of the scheduler's is the hot spot of a cluster. Their
high-water mark is the member ``{timers}`` of the same sorted set (:data:`TIMERS_MARK`),
raised by every worker to its ``N`` before it writes a timer and read by every worker
at each maintenance tick; each pops every timer partition below it.

In a worker, a delivery is named by its *delivery id*: the stream message id, with
``@i`` after it for partition ``i > 0`` (two partitions' streams may hand out the same
message id).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from taskloom.engine.keys import Keys, lane
from taskloom.errors import ConfigurationError

if TYPE_CHECKING:
    from taskloom.engine.store import Store

__all__ = [
    "TIMERS_MARK",
    "QueuePartitions",
    "TimerPartitions",
    "by_partition",
    "delivery_id",
    "partition_of",
    "pick",
    "split_delivery",
    "timer_partitions_in_use",
]

TIMERS_MARK = "{timers}"
"""The member of :attr:`Keys.queue_partitions` that holds the timer partitions' mark
(a queue's name has no brace)."""


def pick(run_id: str, seq: str, partitions: int) -> int:
    """The partition the task of step ``seq`` of ``run_id`` goes to (stable: CRC-32)."""
    if partitions <= 1:
        return 0
    return zlib.crc32(f"{run_id}/{seq}".encode()) % partitions


def delivery_id(partition: int, msg_id: str) -> str:
    """A worker's name for message ``msg_id`` of ``partition``."""
    return msg_id if partition == 0 else f"{msg_id}@{partition}"


def split_delivery(delivery: str) -> tuple[int, str]:
    """``(partition, message id)`` of a delivery id."""
    msg_id, _, part = delivery.partition("@")
    return (int(part) if part else 0), msg_id


def partition_of(queue: str, delivery: str) -> tuple[str, str]:
    """``(lane, message id)`` of a delivery of ``queue``: what an ack names."""
    part, msg_id = split_delivery(delivery)
    return lane(queue, part), msg_id


def by_partition(deliveries: Iterable[str]) -> dict[int, list[str]]:
    """Message ids of ``deliveries``, by partition."""
    out: dict[int, list[str]] = {}
    for delivery in deliveries:
        part, msg_id = split_delivery(delivery)
        out.setdefault(part, []).append(msg_id)
    return out


async def _high_water_mark(store: Store, member: str, count: int) -> int:
    """Raise the high-water mark of ``member`` (a queue, or :data:`TIMERS_MARK`) in
    :attr:`Keys.queue_partitions` to ``count`` (with one partition, only read it) and
    return it: the partitions to read, at least ``count``."""
    key = store.keys.queue_partitions
    if count > 1:
        pipe = store.raw.pipeline(transaction=False)
        pipe.zadd(key, {member: count}, gt=True)
        pipe.zscore(key, member)
        _, mark = await pipe.execute()
    else:
        mark = await store.raw.zscore(key, member)
    return max(count, int(mark or 1))


async def timer_partitions_in_use(store: Store) -> int:
    """How many timer partitions hold timers: the most any worker has written to (the
    high-water mark, read only)."""
    return await _high_water_mark(store, TIMERS_MARK, 1)


class QueuePartitions:
    """One worker's view of its queue's partitions: how many it writes to
    (:attr:`count`) and how many it reads (:attr:`readable`, at least as many)."""

    def __init__(self, store: Store, queue: str, count: int) -> None:
        if count < 1:
            raise ConfigurationError(f"queue partitions must be >= 1 (got {count})")
        if count > 1 and any(c in queue for c in "{}:"):
            raise ConfigurationError(
                f"queue {queue!r} cannot be partitioned: its name has a brace or a colon "
                f"(partition i of queue q is named q:i); rename the queue"
            )
        self.store = store
        self.queue = queue
        self.count = count
        """Partitions this worker writes tasks to (its setting)."""
        self.readable = count
        """Partitions this worker reads: the queue's high-water mark in Redis."""
        self.grew = asyncio.Event()
        """Set when :attr:`readable` grew (the cluster readers start one more)."""

    def lanes(self) -> list[str]:
        """The lanes this worker reads, partition 0 first."""
        return [lane(self.queue, i) for i in range(self.readable)]

    def route(self, tasks: Sequence[dict[str, str]]) -> list[tuple[str, dict[str, str]]]:
        """``(lane, fields)`` of each task: the partition its step hashes to."""
        if self.count == 1:
            return [(self.queue, task) for task in tasks]
        return [(lane(self.queue, pick(t["run"], t["seq"], self.count)), t) for t in tasks]

    async def sync(self) -> bool:
        """Raise the queue's high-water mark in Redis to :attr:`count` (one worker with
        one partition only reads it), read it back, and make the consumer groups of the
        partitions this worker did not read before. Whether :attr:`readable` grew."""
        store = self.store
        readable = await _high_water_mark(store, self.queue, self.count)
        if readable <= self.readable:
            return False
        for i in range(self.readable, readable):
            await store.ensure_group(store.keys.queue(lane(self.queue, i)), Keys.GROUP)
        self.readable = readable
        self.grew.set()
        return True

    async def ensure_groups(self) -> None:
        """Create the consumer groups of every partition read here (idempotent)."""
        for name in self.lanes():
            await self.store.ensure_group(self.store.keys.queue(name), Keys.GROUP)

    def parse_read(self, reply: Any) -> list[tuple[str, dict[str, str]]]:
        """The deliveries of an XREADGROUP reply over lanes of this queue, named by
        delivery id."""
        parts = {self.store.keys.queue(name): i for i, name in enumerate(self.lanes())}
        out: list[tuple[str, dict[str, str]]] = []
        for stream, messages in reply or []:
            part = parts[stream]
            out += [(delivery_id(part, m), f) for m, f in messages]
        return out


class TimerPartitions:
    """One worker's view of the timer partitions: how many it writes timers to
    (:attr:`count`, its setting) and how many it pops (:attr:`readable`, at least as
    many: the most any worker has written to)."""

    def __init__(self, store: Store, count: int) -> None:
        if count < 1:
            raise ConfigurationError(f"timer partitions must be >= 1 (got {count})")
        self.store = store
        self.count = count
        """Partitions this worker writes timers to."""
        self.readable = count
        """Partitions this worker pops: the high-water mark in Redis."""

    async def sync(self) -> None:
        """Raise the timers' high-water mark in Redis to :attr:`count` (one worker with
        one partition only reads it) and read it back into :attr:`readable`."""
        self.readable = await _high_water_mark(self.store, TIMERS_MARK, self.count)
