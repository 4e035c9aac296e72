"""W2: activities that each wait (LLM-like latency), a bounded number at once; makespan
versus the ideal."""

from __future__ import annotations

from typing import Any

from benchmarks import workloads as wl
from benchmarks.harness import Bench, BenchmarkError, WorkerProcess, timed_run
from benchmarks.measure import ideal_s, makespan_row
from taskloom import Orchestrator

__all__ = ["run"]


async def run(bench: Bench) -> dict[str, Any]:
    """LLM-like latency: makespan of waiting activities versus the ideal."""
    n, conc, sleep_s = bench.sizes.w2, bench.sizes.w2_concurrency, bench.sizes.w2_sleep_s

    async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
        _, done, seconds = await timed_run(orch, worker, wl.FANOUT_SLEEP, n, sleep_s)
        if done != n:
            raise BenchmarkError(f"W2 returned {done!r}, expected {n}")
        ideal = ideal_s(n, conc, sleep_s)
        return makespan_row("W2", n, seconds, ideal) | {
            "concurrency": conc,
            "activity_s": sleep_s,
        }

    return await bench.with_worker("W2", conc, body)
