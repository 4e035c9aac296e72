"""W4's raw loop: a worker process on plain redis-py, what W4's taskloom worker is
measured against (:func:`benchmarks.redis_baseline.raw_crash`).

It imports nothing but redis-py and the standard library. It runs up to
``concurrency`` tasks at a time, each an ``asyncio.sleep`` then one line appended to
``path`` (as :func:`benchmarks.workloads.crash_step`), stores the result and
acknowledges the delivery in one pipeline, and pushes to ``KEY:done`` once all ``n``
results are stored (to ``KEY:ready`` once it has connected). Every ``lease_ttl / 4``
seconds (taskloom's maintenance period) it XAUTOCLAIMs the deliveries idle for
``lease_ttl`` (taskloom's lease TTL), which is how a restarted one takes over what a
killed one was running::

    python -m benchmarks.raw_worker REDIS_URL KEY N CONCURRENCY SECONDS PATH LEASE_TTL
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

__all__ = ["GROUP", "command", "serve"]

GROUP = "g"


async def serve(
    redis_url: str, key: str, n: int, concurrency: int, seconds: float, path: str, lease_ttl: float
) -> None:
    """Take tasks from ``KEY:tasks`` until killed."""
    r = Redis.from_url(redis_url, decode_responses=True)
    stream, results, done = f"{key}:tasks", f"{key}:results", f"{key}:done"
    consumer = f"raw-{os.getpid()}"
    free = concurrency
    freed = asyncio.Event()
    running: set[asyncio.Task[None]] = set()

    async def work(msg_id: str, fields: dict[str, str]) -> None:
        nonlocal free
        try:
            i = int(fields["i"])
            await asyncio.sleep(seconds)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{i}\n".encode())
            finally:
                os.close(fd)
            pipe = r.pipeline(transaction=False)
            pipe.hset(results, str(i), msg_id)
            pipe.xack(stream, GROUP, msg_id)
            pipe.hlen(results)
            *_, stored = await pipe.execute()
            if int(stored) >= n:
                await r.rpush(done, "1")
        finally:
            free += 1
            freed.set()

    def start(entries: list[Any]) -> None:
        nonlocal free
        for msg_id, fields in entries:
            if fields is None:  # deleted meanwhile (not in this benchmark)
                continue
            free -= 1
            task = asyncio.create_task(work(msg_id, fields))
            running.add(task)
            task.add_done_callback(running.discard)

    await r.rpush(f"{key}:ready", consumer)  # connected: the driver may start the clock
    next_claim = 0.0
    while True:
        while free <= 0:
            freed.clear()
            await freed.wait()
        if time.monotonic() >= next_claim:
            next_claim = time.monotonic() + lease_ttl / 4
            claimed: Any = await r.xautoclaim(
                stream, GROUP, consumer, int(lease_ttl * 1000), start_id="0-0", count=free
            )
            if claimed[1]:
                start(claimed[1])
                continue
        res: Any = await r.xreadgroup(
            GROUP, consumer, {stream: ">"}, count=free, block=int(lease_ttl * 250)
        )
        if res:
            start(res[0][1])


def command(
    redis_url: str,
    key: str,
    *,
    n: int,
    concurrency: int,
    seconds: float,
    path: str,
    lease_ttl: float,
    launcher: Sequence[str] = (),
) -> list[str]:
    """The command line that starts this loop (``launcher``: interpreter arguments
    before ``-m``, as :mod:`benchmarks.without_otel_sdk` takes them)."""
    args = [redis_url, key, str(n), str(concurrency), str(seconds), path, str(lease_ttl)]
    return [sys.executable, *launcher, "-m", "benchmarks.raw_worker", *args]


if __name__ == "__main__":
    url, key, n, conc, secs, path, ttl = sys.argv[1:8]
    asyncio.run(serve(url, key, int(n), int(conc), float(secs), path, float(ttl)))
