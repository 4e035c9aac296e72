"""Workflows and activities of the benchmark workloads, served by a worker subprocess.

Start a worker on them with::

    python -m taskloom.terminal.cli worker --import benchmarks.workloads --concurrency N

Every name is explicit (``bench.*``) so the driver (:mod:`benchmarks.run`) starts runs
by name and never depends on how a function's qualified name is spelled.

W6 runs taskloom's own pipeline workflow (``taskloom.pipeline``, installed on every
worker ``orch.worker()`` makes, so also on the CLI's); only its plan is defined here
(:func:`pipeline_plan`).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from taskloom import Context, RetryPolicy, activity, activity_info, workflow
from taskloom.agents import Agent

__all__ = [
    "AGENT_FANOUT",
    "BENCH_AGENT",
    "CHAIN",
    "CRASH_FANOUT",
    "FANOUT_NOOP",
    "FANOUT_SLEEP",
    "NAPS",
    "PIPELINE_LATENCY_S",
    "RETENTION_FLOW",
    "SMALL_RUN",
    "WARMUP",
    "chain",
    "crash_fanout",
    "crash_step",
    "fanout_agents",
    "fanout_noop",
    "fanout_sleep",
    "naps",
    "noop",
    "pipeline_plan",
    "retention_flow",
    "sleep_step",
    "small_run",
    "stamp",
    "warmup",
]

WARMUP = "bench.warmup"
FANOUT_NOOP = "bench.fanout_noop"
FANOUT_SLEEP = "bench.fanout_sleep"
CHAIN = "bench.chain"
CRASH_FANOUT = "bench.crash_fanout"
RETRY_STORM = "bench.retry_storm"
AGENT_FANOUT = "bench.fanout_agents"
NAPS = "bench.naps"

# W5: a subagent on the fake LLM server (OPENAI_BASE_URL), answering a few tokens.
BENCH_AGENT = Agent(
    name="bench.agent", role="a benchmark subagent", model="openai:gpt-4.1-mini", max_tokens=64
)

# W6: what the simulated planner, subagents, judge and integrator take, in seconds.
PIPELINE_LATENCY_S = {"planner": 0.2, "work": 0.2, "judge": 0.1, "integrator": 0.2}

# W7: a constant 10 ms between attempts, three attempts in all.
STORM_RETRY = RetryPolicy(max_attempts=3, initial_interval=0.01, max_interval=0.01, backoff=1.0)


def pipeline_plan(n: int) -> dict[str, Any]:
    """W6: the plan the simulated planner answers with: ``n`` independent writer
    activities (no inputs, so all run side by side), each checked by an LLM judge."""
    judge = {"judge": {"rubric": "specific and accurate", "threshold": 0.7}}
    return {
        "activities": [
            {"id": f"s{i}", "role": "writer", "instructions": f"write section {i}", "verify": judge}
            for i in range(n)
        ],
        "integrate": "Join the sections, in order, into one document.",
    }


# -- activities -------------------------------------------------------------------------
@activity(name="bench.noop")
async def noop(i: int) -> dict[str, int]:
    """W1: no work at all; the engine's cost per activity is all that is measured."""
    return {"i": i}


@activity(name="bench.sleep_step")
async def sleep_step(i: int, seconds: float) -> int:
    """W2: stands in for an LLM call, which waits on the network and uses no CPU."""
    await asyncio.sleep(seconds)
    return i


@activity(name="bench.stamp")
async def stamp(i: int) -> list[float]:
    """W3: ``[start, end]`` wall-clock times, taken by the activity itself.

    All activities of a benchmark run in one worker process, so the clocks agree and
    ``start[i + 1] - end[i]`` is the engine's overhead between two sequential steps.
    """
    start = time.time()  # no await in between: nothing else runs inside the step
    return [start, time.time()]


@activity(name="bench.crash_step")
async def crash_step(i: int, seconds: float, path: str) -> int:
    """W4: a short step that counts its own executions in an append-only file.

    The line is written (``O_APPEND``, one unbuffered ``write``) after the work and
    before returning, so an execution whose worker dies before its result is recorded
    shows up in the file, and the re-execution after recovery shows up again.
    """
    await asyncio.sleep(seconds)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    return i


@activity(name="bench.flaky", retry=STORM_RETRY)
async def flaky(i: int) -> int:
    """W7: every activity with ``i % 10 < 3`` fails its first two attempts."""
    if i % 10 < 3 and activity_info().attempt <= 2:
        raise ConnectionError(f"activity {i}: attempt {activity_info().attempt} failed")
    return i


# -- workflows --------------------------------------------------------------------------
@workflow(name=WARMUP)
async def warmup(ctx: Context, n: int) -> int:
    """A small fan-out and a short chain: loads the code paths before measuring."""
    parts = await ctx.gather(*(ctx.run(noop, i) for i in range(n)))
    total = sum(int(p["i"]) for p in parts)
    for i in range(3):
        await ctx.run(stamp, i)
    return total


@workflow(name=FANOUT_NOOP)
async def fanout_noop(ctx: Context, n: int) -> dict[str, int]:
    """W1: gather ``n`` no-op activities and sum what they return."""
    parts: list[dict[str, Any]] = await ctx.gather(*(ctx.run(noop, i) for i in range(n)))
    return {"n": len(parts), "sum": sum(int(p["i"]) for p in parts)}


@workflow(name=FANOUT_SLEEP)
async def fanout_sleep(ctx: Context, n: int, seconds: float) -> int:
    """W2: gather ``n`` activities that each wait ``seconds``; returns how many ran."""
    done = await ctx.gather(*(ctx.run(sleep_step, i, seconds) for i in range(n)))
    return len(done)


@workflow(name=NAPS)
async def naps(ctx: Context, n: int, seconds: float) -> int:
    """S1's timer load: ``n`` durable sleeps of ``seconds`` one after the other (long
    enough that the run leaves memory and its timer goes to Redis); returns ``n``."""
    for _ in range(n):
        await ctx.sleep(seconds)
    return n


@workflow(name=CHAIN)
async def chain(ctx: Context, n: int) -> list[list[float]]:
    """W3: ``n`` activities one after the other; returns each one's ``[start, end]``."""
    return [await ctx.run(stamp, i) for i in range(n)]


@workflow(name=CRASH_FANOUT)
async def crash_fanout(ctx: Context, n: int, seconds: float, path: str) -> list[int]:
    """W4: gather ``n`` short activities that log their executions to ``path``."""
    return list(await ctx.gather(*(ctx.run(crash_step, i, seconds, path) for i in range(n))))


@workflow(name=RETRY_STORM)
async def retry_storm(ctx: Context, n: int) -> int:
    """W7: gather ``n`` activities of which 30% fail twice before succeeding."""
    return sum(await ctx.gather(*(ctx.run(flaky, i) for i in range(n))))


@workflow(name=AGENT_FANOUT)
async def fanout_agents(ctx: Context, n: int) -> int:
    """W5: gather ``n`` subagent calls; returns how many answered."""
    done = await ctx.gather(*(ctx.agent(BENCH_AGENT, f"item {i}") for i in range(n)))
    return sum(1 for r in done if r.text)


# -- W8 and the soak (benchmarks/w8_retention.py) ----------------------------------------
RETENTION_FLOW = "bench.retention_flow"
SMALL_RUN = "bench.small_run"


@workflow(name=RETENTION_FLOW)
async def retention_flow(ctx: Context, n: int) -> int:
    """W8: a plain engine workflow of ``n`` parallel no-op activities (a planned run's
    shape, without the LLM layer)."""
    return len(await ctx.gather(*(ctx.run(noop, i) for i in range(n))))


@workflow(name=SMALL_RUN)
async def small_run(ctx: Context, n: int) -> int:
    """The soak: ``n`` no-op activities one after the other (the issue's small runs)."""
    for i in range(n):
        await ctx.run(noop, i)
    return n
