"""W8 and the soak: does retention bound Redis memory under a sustained load?

- ``W8``: 100 plain engine workflows at once, each gathering 20 no-op activities (a
  planned run's shape without the LLM layer), for a fixed count of runs, with a short
  retention. Reports each run's latency (start call to result), Redis ``used_memory``
  at the start, its peak and at the end (after the finished runs have expired), and
  the keys runs left behind under the workload's prefix once they expired (target 0).
- ``soak`` (not in the default run: ``--only soak``): small runs (three no-op activities
  one after the other) as fast as one worker takes them, for ``soak_s`` seconds, with a
  5 s retention, sampling ``used_memory`` every second: memory should stay flat after
  the first retention period.

``used_memory`` is the whole server's: run these against a Redis of their own
(``--redis-url redis://127.0.0.1:PORT``) for figures that mean something.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks import workloads as wl
from benchmarks.harness import RESULT_TIMEOUT_S, Bench, BenchmarkError, WorkerProcess
from benchmarks.measure import percentile, rounded
from taskloom import Orchestrator

__all__ = ["run", "soak"]

MIB = 1024 * 1024
SAMPLE_S = 0.5
DRAIN_GRACE_S = 60.0
"""How long past the retention the runs may take to expire before the count is final."""


async def used_memory(orch: Orchestrator) -> int:
    """The Redis server's ``used_memory`` (bytes)."""
    return (await memory(orch))[0]


async def memory(orch: Orchestrator) -> tuple[int, int]:
    """The Redis server's ``used_memory`` and, of it, its clients' buffers
    (``mem_clients_normal``: what live connections hold, not stored state), in bytes."""
    info: dict[str, Any] = await orch.store.raw.info("memory")
    return int(info["used_memory"]), int(info["mem_clients_normal"])


async def run_keys(orch: Orchestrator) -> int:
    """Keys runs own under this prefix: everything under ``run:`` and inbox items."""
    raw, prefix = orch.store.raw, orch.store.keys.prefix
    count = 0
    for pattern in (f"{prefix}:run:*", f"{prefix}:{{inbox}}:task:*"):
        async for _ in raw.scan_iter(match=pattern, count=1000):
            count += 1
    return count


class _Sampler:
    """``used_memory`` every ``every`` seconds, with the time since it started."""

    def __init__(self, orch: Orchestrator, every: float) -> None:
        self.orch, self.every = orch, every
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.perf_counter()

    async def _loop(self) -> None:
        while True:
            self.samples.append((time.perf_counter() - self._t0, await used_memory(self.orch)))
            await asyncio.sleep(self.every)

    def __enter__(self) -> _Sampler:
        self._t0 = time.perf_counter()
        self._task = asyncio.ensure_future(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def _sustain(
    orch: Orchestrator,
    worker: WorkerProcess,
    start: Callable[[], Awaitable[Any]],
    *,
    in_flight: int,
    total: int | None = None,
    seconds: float | None = None,
) -> list[float]:
    """Keep ``in_flight`` runs going until ``total`` were started or ``seconds`` passed;
    returns each run's latency (s), start call to result."""
    latencies: list[float] = []
    started = 0
    deadline = None if seconds is None else time.perf_counter() + seconds

    def more() -> bool:
        nonlocal started
        if total is not None and started >= total:
            return False
        if deadline is not None and time.perf_counter() >= deadline:
            return False
        started += 1
        return True

    async def lane() -> None:
        while more():
            t0 = time.perf_counter()
            handle = await start()
            await handle.result(timeout=RESULT_TIMEOUT_S)
            latencies.append(time.perf_counter() - t0)

    async def watch() -> None:
        while worker.exited() is None:
            await asyncio.sleep(0.2)
        raise BenchmarkError(f"the worker exited with code {worker.exited()}:\n{worker.tail()}")

    lanes = asyncio.gather(*(lane() for _ in range(in_flight)))
    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({lanes, watcher}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        watcher.cancel()
        lanes.cancel()
    return latencies


async def _drain(orch: Orchestrator, retention_s: float) -> tuple[int, float]:
    """Wait until no run keys are left (at most the retention plus a grace); returns
    the keys left and the seconds it took."""
    t0 = time.perf_counter()
    deadline = t0 + retention_s + DRAIN_GRACE_S
    left = await run_keys(orch)
    while left and time.perf_counter() < deadline:
        await asyncio.sleep(SAMPLE_S)
        left = await run_keys(orch)
    return left, time.perf_counter() - t0


def _latency_fields(latencies: list[float], seconds: float) -> dict[str, Any]:
    return {
        "n": len(latencies),
        "runs": len(latencies),
        "seconds": rounded(seconds, 2),
        "runs_per_s": rounded(len(latencies) / seconds, 1),
        "p50_ms": rounded(percentile(latencies, 50) * 1000, 2),
        "p99_ms": rounded(percentile(latencies, 99) * 1000, 2),
    }


async def run(bench: Bench) -> dict[str, Any]:
    """W8: 100 workflows of 20 activities at once, a fixed count, a short retention."""
    sizes = bench.sizes
    retention = sizes.w8_retention_s
    env = {"TASKLOOM_RETENTION": str(retention)}

    async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
        await _drain(orch, retention)  # the warm-up run expires first
        start_mem, start_clients = await memory(orch)
        t0 = time.perf_counter()
        with _Sampler(orch, SAMPLE_S) as sampler:
            latencies = await _sustain(
                orch,
                worker,
                lambda: orch.start(wl.RETENTION_FLOW, sizes.w8_activities),
                in_flight=sizes.w8_in_flight,
                total=sizes.w8,
            )
            seconds = time.perf_counter() - t0
            left, drain_s = await _drain(orch, retention)
        end_mem, end_clients = await memory(orch)
        peak = max([m for _, m in sampler.samples] + [start_mem, end_mem])
        start_state, end_state = start_mem - start_clients, end_mem - end_clients
        return {
            "workload": "W8",
            **_latency_fields(latencies, seconds),
            "activities_per_run": sizes.w8_activities,
            "in_flight": sizes.w8_in_flight,
            "retention_s": retention,
            "used_memory_start_mib": rounded(start_mem / MIB, 2),
            "used_memory_peak_mib": rounded(peak / MIB, 2),
            "used_memory_end_mib": rounded(end_mem / MIB, 2),
            "clients_start_mib": rounded(start_clients / MIB, 2),
            "clients_end_mib": rounded(end_clients / MIB, 2),
            # Stored state: used_memory less the live connections' buffers.
            "end_within_10pct": end_state <= start_state * 1.1,
            "end_within_10pct_with_clients": end_mem <= start_mem * 1.1,
            "drain_s": rounded(drain_s, 2),
            "keys_left": left,
        }

    return await bench.with_worker("W8", sizes.w8_worker_slots, body, extra_env=env)


def _slope_mib_per_min(samples: list[tuple[float, int]]) -> float:
    """The least-squares slope of ``used_memory`` over time, MiB per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mm = sum(m for _, m in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    cov = sum((t - mt) * (m - mm) for t, m in samples)
    return cov / var * 60 / MIB if var else 0.0


async def soak(bench: Bench) -> dict[str, Any]:
    """Small runs as fast as one worker goes, ``soak_s`` seconds, a 5 s retention."""
    sizes = bench.sizes
    retention = sizes.soak_retention_s
    env = {"TASKLOOM_RETENTION": str(retention)}

    async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
        await _drain(orch, retention)
        start_mem = await used_memory(orch)
        t0 = time.perf_counter()
        with _Sampler(orch, 1.0) as sampler:
            latencies = await _sustain(
                orch,
                worker,
                lambda: orch.start(wl.SMALL_RUN, 3),
                in_flight=sizes.soak_in_flight,
                seconds=sizes.soak_s,
            )
            seconds = time.perf_counter() - t0
            load = list(sampler.samples)
            left, drain_s = await _drain(orch, retention)
        end_mem = await used_memory(orch)
        # Flat after the first retention period (and the sweep's first pass after it):
        # the last third of those samples no higher than the first third (within 10%).
        settled = [(t, m) for t, m in load if t >= 2 * retention] or load
        low, high = min(m for _, m in settled), max(m for _, m in settled)
        third = max(1, len(settled) // 3)
        first = sum(m for _, m in settled[:third]) / third
        last = sum(m for _, m in settled[-third:]) / third
        return {
            "workload": "soak",
            **_latency_fields(latencies, seconds),
            "in_flight": sizes.soak_in_flight,
            "retention_s": retention,
            "used_memory_start_mib": rounded(start_mem / MIB, 2),
            "used_memory_peak_mib": rounded(max(m for _, m in load) / MIB, 2),
            "settled_min_mib": rounded(low / MIB, 2),
            "settled_max_mib": rounded(high / MIB, 2),
            "settled_slope_mib_per_min": rounded(_slope_mib_per_min(settled), 3),
            "settled_first_third_mib": rounded(first / MIB, 2),
            "settled_last_third_mib": rounded(last / MIB, 2),
            "memory_flat": last <= first * 1.1,
            "used_memory_end_mib": rounded(end_mem / MIB, 2),
            "memory_mib_by_10s": [rounded(m / MIB, 1) for t, m in load if int(t) % 10 == 0],
            "drain_s": rounded(drain_s, 2),
            "keys_left": left,
        }

    return await bench.with_worker("soak", sizes.soak_worker_slots, body, extra_env=env)
