"""W4: the worker is SIGKILLed mid-run and a fresh one started at once; executions are
counted by the activities in an append-only file, duplicate recordings in the run's log.

In the same run, the raw redis-py loop (:func:`benchmarks.redis_baseline.raw_crash`) is
killed and restarted at the same point: ``recovery_over_raw_s`` is taskloom's recovery
minus the raw loop's. Every process reads compiled bytecode, as installed code does
(:func:`benchmarks.cold_start.bytecode_env`)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from benchmarks import workloads as wl
from benchmarks.cold_start import bytecode_env
from benchmarks.harness import DEFAULT_LEASE_TTL_S, Bench, BenchmarkError, result_of, warm_up
from benchmarks.measure import rounded
from benchmarks.redis_baseline import raw_crash
from taskloom import TaskloomError

__all__ = ["run"]


async def run(bench: Bench) -> dict[str, Any]:
    """SIGKILL the worker mid-run, start a fresh one, and count what happened."""
    s = bench.sizes
    n, conc = s.w4, s.w4_concurrency
    path = bench.tmp / "w4-executions.log"
    path.write_bytes(b"")
    env = bytecode_env(bench)  # the first worker fills the cache the fresh one reads
    first = bench.worker("W4", conc, extra_env=env)
    fresh = bench.worker("W4", conc, label="-fresh", extra_env=env)
    async with bench.orchestrator("W4") as orch:
        try:
            first.start()
            await warm_up(orch, first, s.warmup)
            t0 = time.perf_counter()
            handle = await orch.start(wl.CRASH_FANOUT, n, s.w4_sleep_s, str(path))
            await asyncio.sleep(max(0.0, t0 + s.w4_kill_after_s - time.perf_counter()))
            killed_after = time.perf_counter() - t0
            executed_before_kill = len(path.read_bytes().splitlines())
            first.kill()
            fresh.start()
            completed = True
            try:
                result = await result_of(handle, [fresh])
            except (BenchmarkError, TaskloomError):  # no result: still count the rest
                completed, result = False, None
            end = time.perf_counter()
        finally:
            first.kill()
            await fresh.stop()
        info = await handle.info()
        events = await orch.store.read_log(handle.run_id)
    recorded = Counter(e.seq for e in events if e.type == "activity_completed")
    executed = Counter(int(line) for line in path.read_bytes().splitlines() if line)
    if completed and isinstance(result, list):
        lost = len(set(range(n)) - {int(i) for i in result})
    else:  # no result: count the steps that never had an outcome recorded
        lost = n - len(recorded)
    recovery = rounded(end - fresh.started_at) if completed else None
    raw = await raw_crash(bench, env)
    return {
        "workload": "W4",
        "n": n,
        "completed": completed and info.status == "completed",
        "executed_twice": sum(1 for c in executed.values() if c > 1),
        "lost": lost,
        "recorded_twice": sum(c - 1 for c in recorded.values() if c > 1),
        "recovery_s": recovery,
        "raw_recovery_s": raw["raw_recovery_s"],
        "recovery_over_raw_s": None
        if recovery is None
        else rounded(recovery - raw["raw_recovery_s"]),
        "duplicates_dropped": info.duplicates_dropped,
        "lease_ttl_s": DEFAULT_LEASE_TTL_S,
        "executions": sum(executed.values()),
        "executed_before_kill": executed_before_kill,
        "killed_after_s": rounded(killed_after),
        "seconds": rounded(end - t0),
        "concurrency": conc,
        "activity_s": s.w4_sleep_s,
        **{k: v for k, v in raw.items() if k != "raw_recovery_s"},
    }
