"""The ``baseline`` workload: the least durable work per task with plain redis-py (XADD,
XREADGROUP, HSET, XACK), fanned out and in sequential rounds; W1 is measured against it.
And W4's raw loop (:func:`raw_crash`): a plain redis-py worker process
(:mod:`benchmarks.raw_worker`) SIGKILLed and restarted as W4's taskloom worker is."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from statistics import median
from typing import Any

from redis.asyncio import Redis

from benchmarks import raw_worker
from benchmarks.harness import (
    DEFAULT_LEASE_TTL_S,
    READY_TIMEOUT_S,
    RESULT_TIMEOUT_S,
    ROOT,
    STOP_TIMEOUT_S,
    Bench,
    BenchmarkError,
)
from benchmarks.measure import percentile, rounded

__all__ = ["raw_crash", "run"]


async def run(bench: Bench) -> dict[str, Any]:
    """Raw redis-py: fan-out throughput and sequential round latency."""
    producer = Redis.from_url(bench.redis_url, decode_responses=True)
    consumer = Redis.from_url(bench.redis_url, decode_responses=True)
    p = bench.sub_prefix("baseline")
    try:
        await _fanout(producer, consumer, f"{p}:warm", bench.sizes.warmup)
        times = [
            await _fanout(producer, consumer, f"{p}:fan{k}", bench.sizes.baseline)
            for k in range(bench.sizes.repeats)
        ]
        seconds = median(times)
        per_message = median(
            [
                await _fanout(
                    producer, consumer, f"{p}:pm{k}", bench.sizes.baseline, per_message=True
                )
                for k in range(bench.sizes.repeats)
            ]
        )
        await _sequential(producer, consumer, f"{p}:seqwarm", 10)
        gaps = await _sequential(producer, consumer, f"{p}:seq", bench.sizes.baseline_seq)
    finally:
        await producer.aclose()
        await consumer.aclose()
    n = bench.sizes.baseline
    bench.baseline = {
        "workload": "baseline",
        "n": n,
        "seconds": rounded(seconds, 4),
        "activities_per_s": round(n / seconds),
        "per_message_activities_per_s": round(n / per_message),
        "repeats": bench.sizes.repeats,
        "seq_n": bench.sizes.baseline_seq,
        "seq_p50_ms": rounded(percentile(gaps, 50) * 1000),
        "seq_p99_ms": rounded(percentile(gaps, 99) * 1000),
        "method": (
            "redis-py asyncio + hiredis, one process, two connections. Fan-out: the "
            f"producer XADDs {n} tasks (JSON args) in one non-transactional pipeline "
            "while the consumer loops XREADGROUP COUNT 100 BLOCK 1000, and for each "
            "batch runs the no-op, then pipelines one HSET per result plus one XACK "
            "of the batch; timed from the first XADD to the last result stored "
            f"(median of {bench.sizes.repeats} runs). "
            "Sequential: per step XADD, XREADGROUP COUNT 1, then HSET+XACK in one "
            "pipeline; per-step overhead = next step's start minus this step's end "
            "(3 round trips). per_message_activities_per_s: the same fan-out with the "
            "consumer storing and acknowledging each task in its own round trip."
        ),
    }
    return bench.baseline


# -- baseline loops ---------------------------------------------------------------------
async def _fanout(
    producer: Redis, consumer: Redis, key: str, n: int, *, per_message: bool = False
) -> float:
    """XADD ``n`` tasks (one pipeline) while a consumer XREADGROUPs, HSETs and XACKs.

    ``per_message``: the consumer stores and acknowledges each task on its own (one
    HSET+XACK round trip per task), as a plain task loop does, instead of per batch.
    """
    stream, results, group = f"{key}:tasks", f"{key}:results", "g"
    await producer.xgroup_create(stream, group, id="0", mkstream=True)

    async def produce() -> None:
        pipe = producer.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd(stream, {"name": "noop", "args": json.dumps([i])})
        await pipe.execute()

    async def consume() -> None:
        done = 0
        while done < n:
            res: Any = await consumer.xreadgroup(group, "c1", {stream: ">"}, count=100, block=1000)
            if not res:
                raise BenchmarkError("baseline consumer saw no tasks for 1 s")
            messages: list[tuple[str, dict[str, str]]] = res[0][1]
            if per_message:
                for msg_id, fields in messages:
                    (i,) = json.loads(fields["args"])
                    pipe = consumer.pipeline(transaction=False)
                    pipe.hset(results, msg_id, json.dumps({"i": i}))
                    pipe.xack(stream, group, msg_id)
                    await pipe.execute()
                done += len(messages)
                continue
            pipe = consumer.pipeline(transaction=False)
            for msg_id, fields in messages:
                (i,) = json.loads(fields["args"])
                pipe.hset(results, msg_id, json.dumps({"i": i}))
            pipe.xack(stream, group, *(m for m, _ in messages))
            await pipe.execute()
            done += len(messages)

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(produce(), consume()), RESULT_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    stored: Any = await producer.hvals(results)
    if len(stored) != n or sum(json.loads(v)["i"] for v in stored) != n * (n - 1) // 2:
        raise BenchmarkError(f"baseline stored {len(stored)} results, expected {n}")
    return seconds


async def _sequential(producer: Redis, consumer: Redis, key: str, n: int) -> list[float]:
    """``n`` sequential rounds; returns the gaps between one step's end and the next's start."""
    stream, results, group = f"{key}:tasks", f"{key}:results", "g"
    await producer.xgroup_create(stream, group, id="0", mkstream=True)
    stamps: list[tuple[float, float]] = []
    for i in range(n):
        await producer.xadd(stream, {"name": "stamp", "args": json.dumps([i])})
        res: Any = await consumer.xreadgroup(group, "c1", {stream: ">"}, count=1, block=1000)
        if not res:
            raise BenchmarkError("baseline consumer saw no task for 1 s")
        msg_id: str = res[0][1][0][0]
        start = time.time()
        stamps.append((start, time.time()))
        pipe = consumer.pipeline(transaction=False)
        pipe.hset(results, msg_id, json.dumps(stamps[-1]))
        pipe.xack(stream, group, msg_id)
        await pipe.execute()
    return [stamps[i][0] - stamps[i - 1][1] for i in range(1, n)]


# -- W4's raw loop ------------------------------------------------------------------------
async def raw_crash(bench: Bench, env: dict[str, str]) -> dict[str, Any]:
    """W4 with a plain redis-py worker process (:mod:`benchmarks.raw_worker`, its
    deliveries reclaimed after taskloom's lease TTL): started, given W4's tasks,
    SIGKILLed at W4's point, restarted at once; ``raw_recovery_s`` runs from the restart
    to the last result stored. ``env``: added to the processes' environment."""
    s = bench.sizes
    n, key = s.w4, f"{bench.sub_prefix('W4')}-raw"
    path = bench.tmp / "w4-raw-executions.log"
    path.write_bytes(b"")
    command = raw_worker.command(
        bench.redis_url,
        key,
        n=n,
        concurrency=s.w4_concurrency,
        seconds=s.w4_sleep_s,
        path=str(path),
        lease_ttl=DEFAULT_LEASE_TTL_S,
    )
    penv = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    # redis-py 8 reads with a 5 s timeout by default: the BLPOP below waits longer.
    client = Redis.from_url(
        bench.redis_url, decode_responses=True, socket_timeout=RESULT_TIMEOUT_S + 5
    )
    stream = f"{key}:tasks"
    procs: list[subprocess.Popen[bytes]] = []

    def launch(label: str) -> subprocess.Popen[bytes]:
        with (bench.tmp / f"raw-worker-{label}.log").open("ab") as out:
            proc = subprocess.Popen(command, cwd=ROOT, env=penv, stdout=out, stderr=out)
        procs.append(proc)
        return proc

    try:
        await client.xgroup_create(stream, raw_worker.GROUP, id="0", mkstream=True)
        first = launch("first")
        if await client.blpop([f"{key}:ready"], timeout=READY_TIMEOUT_S) is None:
            raise BenchmarkError(f"W4's raw worker did not start (exit code {first.poll()})")
        t0 = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd(stream, {"i": str(i)})
        await pipe.execute()
        await asyncio.sleep(max(0.0, t0 + s.w4_kill_after_s - time.perf_counter()))
        executed_before_kill = len(path.read_bytes().splitlines())
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=STOP_TIMEOUT_S)
        restarted = time.perf_counter()
        launch("fresh")
        if await client.blpop([f"{key}:done"], timeout=RESULT_TIMEOUT_S) is None:
            raise BenchmarkError(f"W4's raw loop did not finish within {RESULT_TIMEOUT_S:.0f}s")
        end = time.perf_counter()
        stored = int(await client.hlen(f"{key}:results"))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        await client.aclose()
    executed = Counter(int(line) for line in path.read_bytes().splitlines() if line)
    return {
        "raw_recovery_s": rounded(end - restarted),
        "raw_lost": n - stored,
        "raw_executed_twice": sum(1 for c in executed.values() if c > 1),
        "raw_executed_before_kill": executed_before_kill,
        "raw_seconds": rounded(end - t0),
    }
