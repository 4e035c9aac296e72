"""W5: subagent calls (``ctx.agent``) through the official openai SDK to the fake LLM
server; makespan versus the ideal and the worker's CPU time per call, beside the SDK
alone in a process of its own (:mod:`benchmarks.sdk_baseline`).

The yardstick is the SDK alone, in the same run: ``ratio_to_sdk`` is taskloom's makespan
over the SDK's, ``own_cpu_ratio`` taskloom's own CPU per call (the worker's minus the
SDK's) over the SDK's own (targets 1.1 and 0.5).

Beside it, ``two_workers_*``: the same fan-out served by two worker processes of half
the slots each (the same calls in flight), one per core of a 2-core machine, as a
deployment runs them; the SDK alone stays one process (what a program calling it with
asyncio gets)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from benchmarks import workloads as wl
from benchmarks.harness import (
    RESULT_TIMEOUT_S,
    ROOT,
    Bench,
    BenchmarkError,
    WorkerProcess,
    fake_llm_env,
    result_of,
    warm_up,
)
from benchmarks.measure import ideal_s, makespan_row, rounded
from taskloom import Orchestrator
from taskloom.agents.fake_llm import FakeLLM, reply

__all__ = ["run", "run_sdk_baseline"]


async def run_sdk_baseline(*args: object) -> dict[str, float]:
    """A baseline of the SDK alone, in a process of its own: ``python -m
    benchmarks.sdk_baseline ARGS`` (W5's: ``base_url, n, concurrency[, mode]``, called as
    taskloom calls it (``mode="taskloom"``) or as its README shows (``"default"``); W6's:
    ``"pipeline", base_url, requests_file, concurrency``); its JSON answer."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.sdk_baseline",
        *map(str, args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RESULT_TIMEOUT_S)
    except TimeoutError:
        proc.kill()  # not left calling the fake server after the benchmark stopped it
        await proc.wait()
        raise BenchmarkError(
            f"the SDK baseline did not finish within {RESULT_TIMEOUT_S} s"
        ) from None
    if proc.returncode != 0:
        raise BenchmarkError(f"the SDK baseline failed: {out.decode(errors='replace')}")
    data: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return data


async def _two_workers(bench: Bench, env: dict[str, str]) -> float:
    """W5's fan-out served by two worker processes of half the slots each: its
    makespan (after a warm-up run on both)."""
    n, conc = bench.sizes.w5, bench.sizes.w5_concurrency
    workers = [
        bench.worker("W5x2", max(1, conc // 2), label=f"-{i}", extra_env=env) for i in range(2)
    ]
    async with bench.orchestrator("W5x2") as orch:
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                await warm_up(orch, worker, bench.sizes.warmup)
            warm = await orch.start(wl.AGENT_FANOUT, conc)  # both: SDK clients, prompts
            await result_of(warm, workers)
            t0 = time.perf_counter()
            handle = await orch.start(wl.AGENT_FANOUT, n)
            done = await result_of(handle, workers)
            seconds = time.perf_counter() - t0
        finally:
            for worker in workers:
                await worker.stop()
    if done != n:
        raise BenchmarkError(f"W5 on two workers answered {done!r} of {n}")
    return seconds


async def run(bench: Bench) -> dict[str, Any]:
    """Subagent fan-out against the fake LLM server: makespan and CPU per call."""
    n, conc, latency = bench.sizes.w5, bench.sizes.w5_concurrency, bench.sizes.w5_latency_s
    fake = FakeLLM(lambda request: reply("ok", latency=latency, input_tokens=40))

    async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
        warm = await orch.start(wl.AGENT_FANOUT, 10)  # the SDK client, the prompts
        await result_of(warm, [worker])
        sent = len(fake.requests)
        cpu0, t0 = worker.cpu_seconds(), time.perf_counter()
        handle = await orch.start(wl.AGENT_FANOUT, n)
        done = await result_of(handle, [worker])
        seconds = time.perf_counter() - t0
        cpu = worker.cpu_seconds() - cpu0
        if done != n or len(fake.requests) - sent != n:
            raise BenchmarkError(
                f"W5 answered {done!r} of {n} with {len(fake.requests) - sent} requests"
            )
        ideal = ideal_s(n, conc, latency)
        sdk = await run_sdk_baseline(fake.openai_url, n, conc)
        plain = await run_sdk_baseline(fake.openai_url, n, conc, "default")
        two = await _two_workers(bench, fake_llm_env(fake))
        cpu_us = cpu / n * 1e6
        return makespan_row("W5", n, seconds, ideal) | {
            "cpu_us_per_call": round(cpu_us),
            "sdk_seconds": rounded(sdk["seconds"], 4),
            "sdk_overhead_ratio": rounded(sdk["seconds"] / ideal),
            "sdk_cpu_us_per_call": round(sdk["cpu_us_per_call"]),
            "taskloom_cpu_us_per_call": round(cpu_us - sdk["cpu_us_per_call"]),
            "ratio_to_sdk": rounded(seconds / sdk["seconds"]),
            "own_cpu_ratio": rounded((cpu_us - sdk["cpu_us_per_call"]) / sdk["cpu_us_per_call"]),
            "sdk_default_seconds": rounded(plain["seconds"], 4),
            "sdk_default_overhead_ratio": rounded(plain["seconds"] / ideal),
            "sdk_default_cpu_us_per_call": round(plain["cpu_us_per_call"]),
            "two_workers_seconds": rounded(two, 4),
            "two_workers_overhead_ratio": rounded(two / ideal),
            "two_workers_ratio_to_sdk": rounded(two / sdk["seconds"]),
            "concurrency": conc,
            "llm_latency_s": latency,
        }

    with fake:  # on a thread of its own: its CPU is not the worker's
        return await bench.with_worker("W5", conc, body, extra_env=fake_llm_env(fake))
