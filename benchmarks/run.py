"""Benchmark taskloom against a raw redis-py loop on the same Redis, in one run.

Usage::

    python benchmarks/run.py            # a readable table
    python benchmarks/run.py --json     # one JSON object per line, one per workload
    python benchmarks/run.py --quick --only W1,W3 --redis-url redis://127.0.0.1:6379/0

Workloads (sizes of a full run; ``--quick`` shrinks them for a smoke test):

- ``baseline``: the least durable work per task with plain redis-py (XADD, XREADGROUP,
  HSET, XACK), 1000 tasks fanned out, and 200 sequential rounds.
- ``W1``: one workflow gathers 1000 no-op activities and sums their results.
- ``W2``: 500 activities that each wait 100 ms, at most 100 at once (ideal: 0.5 s).
- ``W3``: a chain of 200 activities; the per-step overhead is the gap between one
  activity's end and the next one's start, as the activities themselves saw the clock.
- ``W4``: 2000 activities of 5 ms, two at a time; the worker is SIGKILLed about 1 s in
  and a fresh one started at once. Executions are counted by the activities in an
  append-only file; duplicate recordings are counted in the run's log. In the same run a
  raw redis-py worker process is killed and restarted at the same point
  (``raw_recovery_s``; ``recovery_over_raw_s`` is taskloom's recovery minus it).
- ``W5``: 500 subagent calls (``ctx.agent``) through the official openai SDK to the
  fake LLM server (:mod:`taskloom.agents.fake_llm`, on a thread of this process) answering
  after 100 ms, at most 100 at once: makespan versus the ideal (0.5 s), and the worker
  process's CPU time per call (taskloom with the SDK and its HTTP client), read from
  ``/proc``; beside it the SDK alone in a process of its own, called as taskloom calls
  it (``sdk_*``: so ``taskloom_cpu_us_per_call`` is taskloom's own cost) and as the
  SDK's README shows (``sdk_default_*``: httpx and ``chat.completions.create``);
  ``ratio_to_sdk`` (makespan over the SDK's) and ``own_cpu_ratio`` (taskloom's own CPU
  per call over the SDK's) are measured against that baseline.
- ``W6``: a goal planned into 50 parallel activities by taskloom's pipeline (``orch.submit``),
  with the fake LLM server playing the team (:class:`taskloom.testing.simulated.SimulatedTeam`):
  200 ms per planner, subagent and integrator call, 100 ms per judge call, so the ideal
  makespan is 0.7 s. Reports makespan versus the ideal, where the overhead went (from the
  times the fake received each kind of call), the share of tokens spent on planning,
  verification and integration, and Redis commands per activity (``INFO commandstats``
  before and after: everything the server ran meanwhile, divided by the plan's activities),
  by kind of command (``commands_by_kind``) and by phase of the run (``commands_by_phase``).
- ``W7``: 1000 activities of which 30% fail twice, 10 ms apart, before succeeding:
  throughput, and the retries recorded in the run's log (must be 600).
- ``cold_start``: from launching ``taskloom worker`` to its first activity started, the
  median of 5 fresh processes (:mod:`benchmarks.cold_start`): serving
  :mod:`benchmarks.workloads` (``cold_start_s``) and plain engine code
  (``cold_start_plain_s``), reading compiled bytecode as installed code does; and
  compiling every module from source (``cold_start_nocache_s``).
- ``W8``: 100 workflows at once, each gathering 20 no-op activities, 2000 runs in all,
  with a 2 s retention: run latency (p50, p99), Redis ``used_memory`` at the start, at
  its peak and once the runs expired (within 10% of the start?), and the keys runs left
  behind (0). ``soak`` (only with ``--only soak``): small runs as fast as one worker
  takes them for 3 minutes with a 5 s retention; memory should stay flat after the
  first retention period (:mod:`benchmarks.w8_retention`; both read the whole server's
  ``used_memory``, so give them a Redis of their own).
- ``V1``: verification quality: 12 goals, 72 activities of varied domains, about half
  answering first with one defect (a wrong total, an IBAN or national phone number, a
  figure contradicting another activity's, a cut-off answer, an injection, a fabricated
  citation, a false statement a judge knows), through the real pipeline with a scripted
  person answering the inbox (:mod:`benchmarks.v1_verification`): defects stopped before
  integration, stopped without a person, clean outputs accepted without one, false
  escalations, final answers with a defect.
- ``V1H``: the same measure on a held-out corpus (:mod:`benchmarks.v1_heldout`): 6 goals,
  36 activities, 19 defects in other domains and phrasings (prose figures, locales,
  nested JSON totals, polite injections, APA and footnote citations), written without
  tuning the verifiers to it first: the figure for cases the verifiers had not seen.
- ``cli``: ``taskloom status RUN`` on the embedded store (no Redis URL; the ``--redis-url``
  is not used): wall time with the server already running, against a cold start and
  against starting and stopping it per command (:mod:`benchmarks.cli_latency`).

Every engine workload gets a fresh worker process (``python -m taskloom.terminal.cli worker
--import benchmarks.workloads --concurrency N``), warmed up by a small workflow run to
completion before measuring and stopped with SIGTERM afterwards. All keys live under a
prefix unique to this benchmark run and are deleted (SCAN + DEL) at the end. Targets
are reported (``target_met``), never asserted; the exit status is 1 only if a workload
could not be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/run.py`
    sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402
from redis.exceptions import RedisError  # noqa: E402

from benchmarks import (  # noqa: E402
    cli_latency,
    cold_start,
    redis_baseline,
    s1_cluster,
    v1_verification,
    w1_fanout,
    w2_latency,
    w3_chain,
    w4_crash,
    w5_subagents,
    w6_pipeline,
    w7_retries,
    w8_retention,
)
from benchmarks.harness import QUICK, STANDARD, Bench, BenchmarkError, Sizes  # noqa: E402
from benchmarks.report import render_table, target_met  # noqa: E402
from taskloom import TaskloomError  # noqa: E402

__all__ = ["QUICK", "STANDARD", "Sizes", "main"]

WORKLOADS = (
    "baseline",
    "W1",
    "W2",
    "W3",
    "W4",
    "W5",
    "W6",
    "W7",
    "W8",
    "V1",
    "V1H",
    "cold_start",
    "cli",
)
EXTRA_WORKLOADS = ("soak", "S1")
"""Measured only when named in ``--only`` (minutes long)."""
_RUNS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "baseline": redis_baseline.run,
    "W1": w1_fanout.run,
    "W2": w2_latency.run,
    "W3": w3_chain.run,
    "W4": w4_crash.run,
    "W5": w5_subagents.run,
    "W6": w6_pipeline.run,
    "W7": w7_retries.run,
    "V1": v1_verification.run,
    "V1H": v1_verification.run_heldout,
    "cold_start": cold_start.run,
    "W8": w8_retention.run,
    "soak": w8_retention.soak,
    "S1": s1_cluster.run,
    "cli": lambda bench: asyncio.to_thread(cli_latency.measure, quick=bench.sizes is QUICK),
}


def parse_only(value: str | None) -> list[str]:
    """``--only W1,w3`` -> ``['W1', 'W3']``, in the canonical order; ``ValueError`` for an
    unknown name."""
    if not value:
        return list(WORKLOADS)
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    known = {w.lower() for w in WORKLOADS + EXTRA_WORKLOADS}
    unknown = [v for v in wanted if v.lower() not in known]
    if unknown or not wanted:
        raise ValueError(
            f"unknown workload(s) {', '.join(unknown) or repr(value)}; choose from "
            f"{', '.join(WORKLOADS + EXTRA_WORKLOADS)}"
        )
    lowered = {v.lower() for v in wanted}
    return [w for w in WORKLOADS + EXTRA_WORKLOADS if w.lower() in lowered]


async def run_all(redis_url: str, sizes: Sizes, names: Sequence[str], *, as_json: bool) -> int:
    """Measure the selected workloads in order; print each line (JSON) or the table."""
    probe = Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    try:
        await probe.ping()
    except RedisError as exc:
        print(f"run.py: cannot reach Redis at {redis_url}: {exc}", file=sys.stderr)
        return 2
    finally:
        await probe.aclose()
    bench = Bench(redis_url, sizes)
    rows: list[dict[str, Any]] = []
    failed = False
    try:
        for name in names:
            try:
                row = await _RUNS[name](bench)
                row["target_met"] = target_met(row)
            except (
                BenchmarkError,
                TaskloomError,
                RedisError,
                OSError,
                TimeoutError,
                subprocess.SubprocessError,
            ) as exc:
                failed = True
                row = {"workload": name, "error": f"{type(exc).__name__}: {exc}"}
            rows.append(row)
            if as_json:
                print(json.dumps(row), flush=True)
    finally:
        with contextlib.suppress(RedisError):
            await bench.cleanup()
    if not as_json:
        print(render_table(rows))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse options and run the benchmarks."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--json", action="store_true", help="one JSON object per line per workload")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("TASKLOOM_REDIS_URL") or "redis://127.0.0.1:6379/0",
        help="Redis to measure against (default: TASKLOOM_REDIS_URL or local 6379/0)",
    )
    p.add_argument(
        "--only",
        help=f"comma-separated workloads, of {','.join(WORKLOADS + EXTRA_WORKLOADS)}",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = p.parse_args(argv)
    try:
        names = parse_only(args.only)
    except ValueError as exc:
        p.error(str(exc))
    sizes = QUICK if args.quick else STANDARD
    return asyncio.run(run_all(args.redis_url, sizes, names, as_json=args.json))


if __name__ == "__main__":
    sys.exit(main())
