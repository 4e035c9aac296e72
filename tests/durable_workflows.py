"""Workflows and activities for tests/test_durability.py, imported by worker subprocesses.

Every activity appends one line ``<index> <seq> <worker_id>`` to a file named by the
workflow's arguments (O_APPEND, one write per line), so a test counts real executions
independently of what the engine recorded.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from taskloom import Context, activity, activity_info, workflow


def _note(path: str, i: int) -> None:
    info = activity_info()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i} {info.seq} {info.worker_id}\n".encode())
    finally:
        os.close(fd)


@activity(name="durable.mark")
async def mark(i: int, path: str, delay: float = 0.005) -> int:
    """Note the execution (the side effect, once per attempt), then stay busy a little: a
    worker killed meanwhile dies after the side effect and before the record."""
    _note(path, i)
    await asyncio.sleep(delay)
    return i


@workflow(name="durable.fan_out")
async def fan_out(ctx: Context, n: int, path: str, delay: float = 0.005) -> list[int]:
    """``n`` activities at once (fan-out), their results in order (fan-in)."""
    return await ctx.gather(*(ctx.run(mark, i, path, delay) for i in range(n)))


@workflow(name="durable.phased")
async def phased(ctx: Context, n: int, path: str, delay: float, nap: float) -> list[int]:
    """A fan-out, a durable sleep, a second fan-out."""
    first = await ctx.gather(*(ctx.run(mark, i, path, delay) for i in range(n)))
    await ctx.sleep(nap)
    second = await ctx.gather(*(ctx.run(mark, n + i, path, delay) for i in range(n)))
    return first + second


@workflow(name="durable.chain")
async def chain(ctx: Context, base: int, steps: int, path: str, delay: float) -> list[int]:
    """Sequential steps, then a small fan-out: many owner writes per run."""
    out = [await ctx.run(mark, base + i, path, delay) for i in range(steps)]
    out += await ctx.gather(*(ctx.run(mark, base + steps + i, path, delay) for i in range(3)))
    return out


@workflow(name="durable.nap")
async def nap(ctx: Context, path: str, seconds: float) -> list[int]:
    """An activity, a durable timer, another activity."""
    first = await ctx.run(mark, 0, path, 0.0)
    await ctx.sleep(seconds)
    second = await ctx.run(mark, 1, path, 0.0)
    return [first, second]


@workflow(name="durable.approval")
async def approval(ctx: Context, path: str) -> dict[str, Any]:
    """An activity, then wait (holding no worker) for the ``approve`` signal."""
    first = await ctx.run(mark, 0, path, 0.0)
    decision = await ctx.wait_for_signal("approve")
    return {"first": first, "decision": decision}


@workflow(name="durable.stall")
async def stall(ctx: Context, path: str, flag: str, seconds: float) -> list[Any]:
    """The first owner freezes its event loop (a GC pause, a stuck call) after step 0, so
    its lease lapses while it is alive; it then tries to write as if nothing happened."""
    first = await ctx.run(mark, 0, path, 0.0)
    if not os.path.exists(flag):  # test-only side effect: only the first incarnation stalls
        open(flag, "w").close()
        time.sleep(seconds)
        open(flag + ".resumed", "w").close()
    await ctx.sleep(0.01)  # a plain log write (timer_started): only the epoch fences it
    return [first, await ctx.wait_for_signal("go")]
