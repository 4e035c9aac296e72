"""Workflows for tests/test_dlq_cli.py, served by a worker process."""

from __future__ import annotations

import os

from taskloom import Context, NonRetryableError, RetryPolicy, activity, workflow


@activity(name="dlqt.charge", retry=RetryPolicy(max_attempts=2, on_exhausted="pause"))
async def charge(order: str, fixed_flag: str) -> str:
    """Fails for good until the operator creates ``fixed_flag``."""
    if not os.path.exists(fixed_flag):
        raise NonRetryableError(f"card declined for {order}")
    return f"charged {order}"


@activity(name="dlqt.flaky", retry=RetryPolicy(max_attempts=3, initial_interval=0.05))
async def flaky(counter: str) -> int:
    """Fails on its first two attempts (counted in a file)."""
    with open(counter, "a") as f:
        f.write("x")
    with open(counter) as f:
        n = len(f.read())
    if n < 3:
        raise ConnectionError(f"attempt {n} failed")
    return n


@workflow(name="dlqt.order")
async def order(ctx: Context, order_id: str, fixed_flag: str, counter: str) -> list[object]:
    attempts = await ctx.run(flaky, counter)
    return [attempts, await ctx.run(charge, order_id, fixed_flag)]
