"""W3: a chain of activities; the per-step overhead is the gap between one activity's end
and the next one's start, as the activities themselves saw the clock."""

from __future__ import annotations

from typing import Any

from benchmarks import workloads as wl
from benchmarks.harness import Bench, BenchmarkError, WorkerProcess, timed_run
from benchmarks.measure import percentile, rounded
from taskloom import Orchestrator

__all__ = ["run"]


async def run(bench: Bench) -> dict[str, Any]:
    """A sequential chain: per-step overhead seen by the activities' own clocks."""
    n, conc = bench.sizes.w3, bench.sizes.w3_concurrency

    async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
        _, stamps, seconds = await timed_run(orch, worker, wl.CHAIN, n)
        if not isinstance(stamps, list) or len(stamps) != n:
            raise BenchmarkError(f"W3 returned {len(stamps)} stamps, expected {n}")
        gaps = [stamps[i][0] - stamps[i - 1][1] for i in range(1, n)]
        return {
            "workload": "W3",
            "n": n,
            "seconds": rounded(seconds, 4),
            "p50_ms": rounded(percentile(gaps, 50) * 1000),
            "p99_ms": rounded(percentile(gaps, 99) * 1000),
            "max_ms": rounded(max(gaps) * 1000),
            "concurrency": conc,
        }

    return await bench.with_worker("W3", conc, body)
