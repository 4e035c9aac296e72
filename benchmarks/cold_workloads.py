"""``cold_start``'s plain workload: one engine workflow and one activity, with no agent,
so a worker serving only this module loads no LLM layer before its first activity.

Start a worker on it with::

    python -m taskloom.terminal.cli worker --import benchmarks.cold_workloads
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from taskloom import activity, workflow

if TYPE_CHECKING:
    from taskloom import Context

__all__ = ["PLAIN", "plain", "plain_stamp"]

PLAIN = "bench.cold_plain"


@activity(name="bench.cold_stamp")
async def plain_stamp() -> float:
    """When the activity started (wall clock, as the launching process reads it)."""
    return time.time()


@workflow(name=PLAIN)
async def plain(ctx: Context) -> float:
    """One activity: returns the time it started."""
    return float(await ctx.run(plain_stamp))
