"""S1 (partial): one Redis node against a cluster of 3 masters, with 1, 2 and 4 worker
processes; reported, never asserted.

Two loads: W1 (one run gathering ``n`` no-op activities: one run's keys live in one
slot, so on one master) and a W8-style spread (``runs`` runs of 10 activities each,
started together: their keys spread over the slots). For each: activities/s, Redis
commands per activity (every node's ``total_commands_processed``, before and after)
and commands per node (how evenly the masters share the load). "1 node" is a cluster
of one master holding every slot, so both sides speak the same protocol.

W1 with one queue partition (the default) is lopsided by design: every delivery goes
through one stream, on one master. The rows with ``partitions`` 4 run the same W1 on
3 masters with ``TASKLOOM_QUEUE_PARTITIONS=4`` (four streams of their own hash tags),
and the spread load as well: the busiest master's share is what to compare. (Measured:
it hardly moves. The queue carries under a tenth of W1's commands; the rest are the
run's own, in its one slot, so one run's fan-out stays on one master whatever the
queue does. The partitions matter where many runs already spread over many masters
and the one queue stream would be the remaining hot key.)

The ``timers`` load (3 masters, 2 workers; 1 and 4 partitions, which spread the timer
sets too): ``n / 10`` runs each sleeping :data:`NAP_S` twice, each sleep long enough
for the run to leave memory and its timer to go to Redis. Its ``activities`` are the
timers fired. With one partition every timer is written and fired on the master of
``{sched}`` (which also holds the run queue and the leases); with 4 they spread over
the three. The timer keys' own commands (a ZADD and a share of a firing script per
timer) are a few of the ~85 commands a timer costs a run (its lease taken and given
back, its log read and replayed, its status index, the maintenance pass each due timer
wakes), so the busiest master's share of *all* commands hardly moves; the row's
``timers_per_node`` says on which master each timer was written and fired.

    .venv/bin/python benchmarks/s1_cluster.py [--quick] [--json]
    .venv/bin/python benchmarks/run.py --only S1 [--quick] [--json]   # the same, as one row

It starts its own clusters (loopback ports 7000-7089), so ``--redis-url`` is not used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redis.crc import key_slot  # noqa: E402

from benchmarks import workloads as wl  # noqa: E402
from benchmarks.harness import QUICK, Bench, WorkerProcess, result_of  # noqa: E402
from taskloom import Orchestrator, Settings  # noqa: E402
from taskloom.engine.keys import Keys  # noqa: E402
from taskloom.engine.store._timers import timer_partition  # noqa: E402
from taskloom.testing.cluster import LocalCluster  # noqa: E402

__all__ = ["main", "measure", "run"]

WORKERS = (1, 2, 4)
CONCURRENCY = 32
PARTITIONS = 4
"""Queue partitions of the W1 rows run with them (on 3 masters)."""
NAP_S = 1.2
"""Each durable sleep of the ``timers`` load (over the 1 s a run stays in memory for)."""
NAPS = 2
TIMER_WORKERS = 2


def commands(cluster: LocalCluster) -> dict[int, int]:
    """Commands each node has processed so far."""
    return {
        port: int(cluster.node(port).info("stats")["total_commands_processed"])
        for port in cluster.ports
    }


async def measure(
    cluster: LocalCluster, workers: int, load: str, n: int, *, partitions: int = 1
) -> dict[str, Any]:
    """One row: ``load`` ('W1', 'spread' or 'timers') with ``workers`` worker processes, their
    activity queue in ``partitions`` partitions."""
    prefix = f"s1{uuid.uuid4().hex[:8]}"
    logs = Path(tempfile.mkdtemp(prefix="tl-s1-"))
    procs = [
        WorkerProcess(
            redis_url=cluster.url,
            prefix=prefix,
            concurrency=CONCURRENCY,
            log_path=logs / f"worker{i}.log",
            extra_env={"TASKLOOM_QUEUE_PARTITIONS": str(partitions)},
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    settings = Settings(redis_url=cluster.url, key_prefix=prefix)
    try:
        async with Orchestrator(settings=settings) as orch:
            warm = await orch.start(wl.WARMUP, 8)
            await result_of(warm, procs)
            before, t0 = commands(cluster), time.perf_counter()
            if load == "W1":
                handles = [await orch.start(wl.FANOUT_NOOP, n)]
                activities = n
            elif load == "timers":
                runs = n // 10
                handles = list(
                    await asyncio.gather(*(orch.start(wl.NAPS, NAPS, NAP_S) for _ in range(runs)))
                )
                activities = runs * NAPS
            else:
                runs = n // 10
                handles = list(
                    await asyncio.gather(*(orch.start(wl.FANOUT_NOOP, 10) for _ in range(runs)))
                )
                activities = runs * 10
            for h in handles:
                await result_of(h, procs, timeout=300)
            seconds = time.perf_counter() - t0
            after = commands(cluster)
    finally:
        for p in procs:
            await p.stop()
    per_node = [after[p] - before[p] for p in cluster.ports]
    total = sum(per_node)
    extra = {}
    if load == "timers":  # where each run's timers were written and fired (its partition)
        masters = [cluster.master_of(timer_slot(prefix, h.run_id, partitions)) for h in handles]
        extra["timers_per_node"] = [masters.count(p) * NAPS for p in cluster.ports]
    return {
        "workload": "S1",
        "load": load,
        "masters": cluster.masters,
        "workers": workers,
        "partitions": partitions,
        "activities": activities,
        "seconds": round(seconds, 3),
        "activities_per_s": round(activities / seconds),
        "commands_per_activity": round(total / activities, 2),
        "commands_per_node": per_node,
        "busiest_node_share": round(max(per_node) / total, 3) if total else None,
        **extra,
    }


def timer_slot(prefix: str, run_id: str, partitions: int) -> int:
    """The hash slot of the timer set ``run_id``'s timers go to."""
    key = Keys(prefix).timer_set(timer_partition(run_id, partitions))
    return key_slot(key.encode())


async def run_all(quick: bool) -> list[dict[str, Any]]:
    """Every row: 1 and 3 masters, 1/2/4 workers, W1 and the spread; then on 3 masters
    both again with the queue in :data:`PARTITIONS` partitions, and the timer load with
    1 and :data:`PARTITIONS` partitions."""
    n = 500 if quick else 2000
    rows = []
    for masters in (1, 3):
        home = Path(tempfile.mkdtemp(prefix="tl-s1-cluster-", dir="/tmp"))
        with LocalCluster(home, masters=masters) as cluster:
            for workers in WORKERS:
                for load in ("W1", "spread"):
                    rows.append(await measure(cluster, workers, load, n))
            if masters == 3:
                for workers in WORKERS:
                    for load in ("W1", "spread"):
                        row = await measure(cluster, workers, load, n, partitions=PARTITIONS)
                        rows.append(row)
                for parts in (1, PARTITIONS):
                    row = await measure(cluster, TIMER_WORKERS, "timers", n, partitions=parts)
                    rows.append(row)
    return rows


async def run(bench: Bench) -> dict[str, Any]:
    """S1 as one row of ``benchmarks/run.py``: every measurement in ``rows``, and for
    each load the best rate on 1 and on 3 masters and the 3 masters' busiest share (one
    queue partition); the same two on 3 masters with :data:`PARTITIONS`; and the timer
    load's rate and busiest share on 3 masters with 1 and :data:`PARTITIONS`."""
    rows = await run_all(bench.sizes is QUICK)
    n = rows[0]["activities"] if rows else 0
    out: dict[str, Any] = {"workload": "S1", "n": n, "rows": rows}
    plain = [r for r in rows if r["partitions"] == 1 and r["load"] != "timers"]
    for load in ("W1", "spread"):
        for masters in (1, 3):
            mine = [r for r in plain if r["load"] == load and r["masters"] == masters]
            out[f"{load}_{masters}m_best_per_s"] = max(r["activities_per_s"] for r in mine)
        three = [r for r in plain if r["load"] == load and r["masters"] == 3]
        out[f"{load}_3m_busiest_share"] = max(r["busiest_node_share"] or 0 for r in three)
    for load in ("W1", "spread"):
        parted = [r for r in rows if r["partitions"] == PARTITIONS and r["load"] == load]
        out[f"{load}_3m_p{PARTITIONS}_best_per_s"] = max(r["activities_per_s"] for r in parted)
        share = max(r["busiest_node_share"] or 0 for r in parted)
        out[f"{load}_3m_p{PARTITIONS}_busiest_share"] = share
    for parts in (1, PARTITIONS):  # the timer load: timers fired per second, busiest share
        (row,) = [r for r in rows if r["load"] == "timers" and r["partitions"] == parts]
        name = "timers_3m" if parts == 1 else f"timers_3m_p{parts}"
        out[f"{name}_per_s"] = row["activities_per_s"]
        out[f"{name}_busiest_share"] = row["busiest_node_share"]
        out[f"{name}_timers_per_node"] = row["timers_per_node"]
    return out


def main(argv: list[str] | None = None) -> int:
    """Run S1 and print its rows (a table, or JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 activities per row")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    args = parser.parse_args(argv)
    rows = asyncio.run(run_all(args.quick))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("load    masters workers parts  act/s  cmds/act  busiest-node  commands per node")
    for r in rows:
        print(
            f"{r['load']:<7} {r['masters']:>7} {r['workers']:>7} {r['partitions']:>5}"
            f" {r['activities_per_s']:>6}"
            f" {r['commands_per_activity']:>9} {r['busiest_node_share']:>13}  "
            f"{r['commands_per_node']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
