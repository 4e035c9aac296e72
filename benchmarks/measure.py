"""Measurement helpers the workloads share: percentiles, the ideal makespan, rounding,
the head of a row measured against an ideal, and the Redis server's command counts."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from taskloom import Orchestrator

__all__ = [
    "ideal_s",
    "makespan_row",
    "percentile",
    "redis_commands",
    "redis_commands_per_s",
    "rounded",
]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def ideal_s(n: int, concurrency: int, each_s: float) -> float:
    """The makespan of ``n`` waits of ``each_s`` seconds, ``concurrency`` at a time, with
    no overhead at all (W2's and W5's yardstick)."""
    return -(-n // concurrency) * each_s


def rounded(value: float, digits: int = 3) -> float:
    """``value`` rounded as the rows report it (3 digits unless told)."""
    return round(value, digits)


def makespan_row(workload: str, n: int, seconds: float, ideal: float) -> dict[str, Any]:
    """The head of a row measured against an ideal makespan (W2, W5, W6)."""
    return {
        "workload": workload,
        "n": n,
        "seconds": rounded(seconds, 4),
        "ideal_s": rounded(ideal, 4),
        "overhead_ratio": rounded(seconds / ideal),
    }


async def redis_commands(orch: Orchestrator) -> Counter[str]:
    """Commands the Redis server has processed so far, by name, from all its clients
    (``INFO commandstats``; those a Lua script runs count too), without ``INFO``."""
    stats: dict[str, Any] = await orch.store.raw.info("commandstats")
    return Counter(
        {
            name.removeprefix("cmdstat_"): int(entry["calls"])
            for name, entry in stats.items()
            if name != "cmdstat_info"
        }
    )


async def redis_commands_per_s(orch: Orchestrator, seconds: float) -> float:
    """The server's command rate over ``seconds``."""
    before, t0 = await redis_commands(orch), time.monotonic()
    await asyncio.sleep(seconds)
    return (await redis_commands(orch) - before).total() / (time.monotonic() - t0)
