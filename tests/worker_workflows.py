"""Workflows served by worker subprocesses in tests/test_worker.py."""

from __future__ import annotations

import asyncio
import os

from taskloom import Context, activity, workflow


@activity(name="slow_step")
async def slow_step(i: int, log_path: str) -> int:
    await asyncio.sleep(0.1)
    with open(log_path, "a") as f:  # counted by the activity itself, not the engine
        f.write(f"{i} {os.getpid()}\n")
    return i


@workflow(name="slow_chain")
async def slow_chain(ctx: Context, n: int, log_path: str) -> list[int]:
    return [await ctx.run(slow_step, i, log_path) for i in range(n)]


@workflow(name="slow_fanout")
async def slow_fanout(ctx: Context, n: int, log_path: str) -> list[int]:
    return list(await ctx.gather(*(ctx.run(slow_step, i, log_path) for i in range(n))))
