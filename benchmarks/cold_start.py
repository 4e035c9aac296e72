"""cold_start: from launching ``taskloom worker`` to its first activity started.

A run waits in the queue; a fresh worker process is launched and the activity reports
the wall-clock time it started. The median of 5 launches, each a new process that
imports, connects, takes the run, replays it and starts its activity. ``cold_start_s``
serves :mod:`benchmarks.workloads` (what W4's restarted worker serves: an agent, so the
subagents load at start); ``cold_start_plain_s`` serves :mod:`benchmarks.cold_workloads`,
plain engine code (the pipeline and LLM layer load off the loop meanwhile).
"""

from __future__ import annotations

import time
from statistics import median
from typing import Any

from benchmarks import cold_workloads as cw
from benchmarks import workloads as wl
from benchmarks.harness import Bench, result_of
from benchmarks.measure import rounded

__all__ = ["LAUNCHES", "run"]

LAUNCHES = 5


async def _launch(bench: Bench, module: str, workflow: str, args: list[Any], i: int) -> float:
    """Seconds from one worker process's launch to its first activity's start."""
    worker = bench.worker("cold", 4, label=f"-{module.rsplit('.', 1)[-1]}-{i}", module=module)
    async with bench.orchestrator("cold") as orch:
        handle = await orch.start(workflow, *args)
        try:
            launched = time.time()
            worker.start()
            result = await result_of(handle, [worker])
        finally:
            await worker.stop()
    started = result[0][0] if workflow == wl.CHAIN else result
    return float(started) - launched


async def run(bench: Bench) -> dict[str, Any]:
    """Launch a worker :data:`LAUNCHES` times per module; the medians."""
    full = [await _launch(bench, "benchmarks.workloads", wl.CHAIN, [1], i) for i in range(LAUNCHES)]
    plain = [
        await _launch(bench, "benchmarks.cold_workloads", cw.PLAIN, [], i) for i in range(LAUNCHES)
    ]
    return {
        "workload": "cold_start",
        "cold_start_s": rounded(median(full)),
        "cold_start_plain_s": rounded(median(plain)),
        "cold_start_max_s": rounded(max(full)),
        "launches": LAUNCHES,
    }
