"""W1: one workflow gathers no-op activities and sums their results; throughput, and
its ratio to the redis-py baseline's."""

from __future__ import annotations

from statistics import median
from typing import Any

from benchmarks import redis_baseline
from benchmarks import workloads as wl
from benchmarks.harness import Bench, BenchmarkError, WorkerProcess, timed_run
from benchmarks.measure import rounded
from taskloom import Orchestrator

__all__ = ["run"]


async def run(bench: Bench) -> dict[str, Any]:
    """Fan-out of no-op activities: throughput, and its ratio to the baseline's."""
    n, conc = bench.sizes.w1, bench.sizes.w1_concurrency
    baseline = bench.baseline or await redis_baseline.run(bench)  # measured first if not yet

    async def once(orch: Orchestrator, worker: WorkerProcess) -> float:
        _, result, seconds = await timed_run(orch, worker, wl.FANOUT_NOOP, n)
        expected = {"n": n, "sum": n * (n - 1) // 2}
        if result != expected:
            raise BenchmarkError(f"W1 returned {result!r}, expected {expected!r}")
        return seconds

    async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
        seconds = median([await once(orch, worker) for _ in range(bench.sizes.repeats)])
        rate = n / seconds
        base = float(baseline["activities_per_s"])
        return {
            "workload": "W1",
            "n": n,
            "seconds": rounded(seconds, 4),
            "activities_per_s": round(rate),
            "baseline_activities_per_s": round(base),
            "ratio_to_baseline": rounded(rate / base),
            "ratio_to_per_message_baseline": rounded(
                rate / float(baseline["per_message_activities_per_s"])
            ),
            "sum_ok": True,
            "repeats": bench.sizes.repeats,
            "concurrency": conc,
        }

    return await bench.with_worker("W1", conc, body)
