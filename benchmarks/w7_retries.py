"""W7: a retry storm: some activities fail twice, a short backoff apart, before
succeeding; throughput, and the retries recorded in the run's log."""

from __future__ import annotations

from typing import Any

from benchmarks import workloads as wl
from benchmarks.harness import Bench, BenchmarkError, WorkerProcess, timed_run
from benchmarks.measure import rounded
from taskloom import Orchestrator

__all__ = ["run"]


async def run(bench: Bench) -> dict[str, Any]:
    """Retry storm: 30% of the activities fail twice, 10 ms apart, then succeed."""
    n, conc = bench.sizes.w7, bench.sizes.w7_concurrency

    async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
        handle, result, seconds = await timed_run(orch, worker, wl.RETRY_STORM, n)
        if result != n * (n - 1) // 2:
            raise BenchmarkError(f"W7 returned {result!r}, expected {n * (n - 1) // 2}")
        events = await orch.store.read_log(handle.run_id)
        return {
            "workload": "W7",
            "n": n,
            "seconds": rounded(seconds, 4),
            "activities_per_s": round(n / seconds),
            "retries_recorded": sum(e.type == "activity_retrying" for e in events),
            "retries_expected": 2 * sum(1 for i in range(n) if i % 10 < 3),
            "concurrency": conc,
            "backoff_s": wl.STORM_RETRY.initial_interval,
        }

    return await bench.with_worker("W7", conc, body)
