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
  append-only file; duplicate recordings are counted in the run's log.
- ``W5``: 500 subagent calls (``ctx.agent``) through the official openai SDK to the
  fake LLM server (:mod:`taskloom.agents.fake_llm`, on a thread of this process) answering
  after 100 ms, at most 100 at once: makespan versus the ideal (0.5 s), and the worker
  process's CPU time per call (taskloom with the SDK and its HTTP client), read from
  ``/proc``; beside it the SDK alone in a process of its own, called as taskloom calls
  it (``sdk_*``: so ``taskloom_cpu_us_per_call`` is taskloom's own cost) and as the
  SDK's README shows (``sdk_default_*``: httpx and ``chat.completions.create``).
- ``W6``: a goal planned into 50 parallel activities by taskloom's pipeline (``orch.submit``),
  with the fake LLM server playing the team (:class:`taskloom.testing.simulated.SimulatedTeam`):
  200 ms per planner, subagent and integrator call, 100 ms per judge call, so the ideal
  makespan is 0.7 s. Reports makespan versus the ideal, where the overhead went (from the
  times the fake received each kind of call), the share of tokens spent on planning,
  verification and integration, and Redis commands per activity (``INFO commandstats``
  before and after: everything the server ran meanwhile, divided by the plan's activities).
- ``W7``: 1000 activities of which 30% fail twice, 10 ms apart, before succeeding:
  throughput, and the retries recorded in the run's log (must be 600).
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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/run.py`
    sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402
from redis.exceptions import RedisError  # noqa: E402

from benchmarks import cli_latency  # noqa: E402
from benchmarks import workloads as wl  # noqa: E402
from taskloom import Orchestrator, RunHandle, Settings, TaskloomError  # noqa: E402
from taskloom.agents.fake_llm import FakeLLM, Request, reply  # noqa: E402
from taskloom.testing.simulated import SimulatedTeam  # noqa: E402

__all__ = ["QUICK", "STANDARD", "Sizes", "main"]

WORKLOADS = ("baseline", "W1", "W2", "W3", "W4", "W5", "W6", "W7", "cli")
DEFAULT_LEASE_TTL_S = float(Settings.model_fields["lease_ttl"].default)
READY_TIMEOUT_S = 30.0
RESULT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# The fake has no limits; the built-in tier-1 limits would throttle W5 and W6.
NO_RATE_LIMITS = json.dumps({"openai:*": {"rpm": None, "tpm": None}})
AGENT_MODEL = "openai:gpt-4.1-mini"


@dataclass(frozen=True)
class Sizes:
    """How big each workload is."""

    warmup: int
    baseline: int
    baseline_seq: int
    w1: int
    w1_concurrency: int
    w2: int
    w2_sleep_s: float
    w2_concurrency: int
    w3: int
    w3_concurrency: int
    w4: int
    w4_sleep_s: float
    w4_concurrency: int
    w4_kill_after_s: float
    w5: int = 500
    w5_latency_s: float = 0.1
    w5_concurrency: int = 100
    w6: int = 50
    w6_concurrency: int = 100
    """Worker slots: room for every subagent call and every judge call at once."""
    w6_idle_sample_s: float = 0.5
    w7: int = 1000
    w7_concurrency: int = 100
    repeats: int = 3
    """Fan-out throughput (baseline, W1) is the median of this many timed runs."""


STANDARD = Sizes(
    warmup=50,
    baseline=1000,
    baseline_seq=200,
    w1=1000,
    w1_concurrency=100,
    w2=500,
    w2_sleep_s=0.1,
    w2_concurrency=100,
    w3=200,
    w3_concurrency=16,
    w4=2000,
    w4_sleep_s=0.005,
    w4_concurrency=2,
    w4_kill_after_s=1.0,
)
QUICK = Sizes(
    warmup=20,
    baseline=200,
    baseline_seq=50,
    w1=200,
    w1_concurrency=100,
    w2=200,
    w2_sleep_s=0.1,
    w2_concurrency=100,
    w3=50,
    w3_concurrency=16,
    w4=300,
    w4_sleep_s=0.005,
    w4_concurrency=2,
    w4_kill_after_s=0.3,
    w5=200,
    w6=10,
    w7=200,
)


class BenchmarkError(Exception):
    """A workload could not be measured (a worker died, a wait timed out, a wrong sum)."""


# -- statistics -------------------------------------------------------------------------
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


def _r(value: float, digits: int = 3) -> float:
    return round(value, digits)


def _makespan(workload: str, n: int, seconds: float, ideal: float) -> dict[str, Any]:
    """The head of a row measured against an ideal makespan (W2, W5, W6)."""
    return {
        "workload": workload,
        "n": n,
        "seconds": _r(seconds, 4),
        "ideal_s": _r(ideal, 4),
        "overhead_ratio": _r(seconds / ideal),
    }


# -- worker processes -------------------------------------------------------------------
class WorkerProcess:
    """One ``taskloom worker`` subprocess serving :mod:`benchmarks.workloads`."""

    def __init__(
        self,
        *,
        redis_url: str,
        prefix: str,
        concurrency: int,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.extra_env = dict(extra_env or {})
        self.redis_url = redis_url
        self.prefix = prefix
        self.concurrency = concurrency
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def env(self) -> dict[str, str]:
        """The parent's environment without any ``TASKLOOM_*`` (defaults apply, e.g. the
        lease TTL), plus this benchmark's Redis URL, key prefix and PYTHONPATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLOOM_")}
        path = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
        env["TASKLOOM_REDIS_URL"] = self.redis_url
        env["TASKLOOM_KEY_PREFIX"] = self.prefix
        env.update(self.extra_env)
        return env

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux ``/proc``)."""
        if self.proc is None:
            return 0.0
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        """Start the process (returns at once; see :func:`_warm_up` for readiness)."""
        args = [
            sys.executable,
            "-m",
            "taskloom.terminal.cli",
            "worker",
            "--import",
            "benchmarks.workloads",
            "--concurrency",
            str(self.concurrency),
        ]
        with self.log_path.open("ab") as out:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(
                args, cwd=ROOT, env=self.env(), stdout=out, stderr=subprocess.STDOUT
            )

    def exited(self) -> int | None:
        """The exit code if the process has ended, else ``None``."""
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        """SIGKILL: the crash of W4."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    async def stop(self) -> None:
        """SIGTERM (a graceful stop); SIGKILL if it has not exited within 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def tail(self, lines: int = 15) -> str:
        """The end of the worker's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def _result(
    handle: RunHandle, workers: Sequence[WorkerProcess], timeout: float = RESULT_TIMEOUT_S
) -> Any:
    """The run's result; fails fast if a worker process dies, and after ``timeout``."""
    task = asyncio.ensure_future(handle.result(timeout=timeout))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.2)
            for w in workers:
                code = w.exited()
                if code is not None and not task.done():
                    raise BenchmarkError(
                        f"the worker exited with code {code} before run {handle.run_id} "
                        f"ended; its output:\n{w.tail()}"
                    )
        try:
            return task.result()
        except TimeoutError:
            raise BenchmarkError(f"run {handle.run_id} did not end within {timeout:.0f}s") from None
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def _fake_env(fake: FakeLLM) -> dict[str, str]:
    """What a worker process needs to call the fake LLM server, with no rate limits."""
    return {
        "OPENAI_BASE_URL": fake.openai_url,
        "OPENAI_API_KEY": "sk-benchmark",
        "TASKLOOM_RATE_LIMITS": NO_RATE_LIMITS,
    }


async def _sdk_baseline(
    base_url: str, n: int, concurrency: int, mode: str = "taskloom"
) -> dict[str, float]:
    """W5's baseline: the official SDK alone, in a process of its own, called as
    taskloom calls it (``mode="taskloom"``) or as its README shows (``"default"``)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.sdk_baseline",
        base_url,
        str(n),
        str(concurrency),
        mode,
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


async def _commands(orch: Orchestrator) -> Counter[str]:
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


async def _commands_per_s(orch: Orchestrator, seconds: float) -> float:
    """The server's command rate over ``seconds``."""
    before, t0 = await _commands(orch), time.monotonic()
    await asyncio.sleep(seconds)
    return (await _commands(orch) - before).total() / (time.monotonic() - t0)


def _pipeline_phases(
    requests: dict[str, list[Request]], latency: dict[str, float], t0: float, end: float
) -> dict[str, float]:
    """W6's overhead by phase, from when the fake received each kind of call; a reply is
    taken to leave ``latency[kind]`` seconds after its request came. The phases add up
    to the makespan minus the ideal (when the plan fits in ``max_parallel``)."""
    planner = requests["planner"][0].received_at
    work = sorted(r.received_at for r in requests["work"])
    judge = sorted(r.received_at for r in requests["judge"])
    integrator = requests["integrator"][0].received_at
    phases = {
        "submit_to_planner": planner - t0,
        "planner_to_first_subagent": work[0] - planner - latency["planner"],
        "subagent_spread": work[-1] - work[0],
        "last_subagent_to_last_judge": judge[-1] - work[-1] - latency["work"],
        "last_judge_to_integrator": integrator - judge[-1] - latency["judge"],
        "integrator_to_result": end - integrator - latency["integrator"],
    }
    return {k: _r(v, 4) for k, v in phases.items()}


async def _warm_up(orch: Orchestrator, worker: WorkerProcess, n: int) -> None:
    """Wait until the worker serves runs, by running a small workflow to completion."""
    handle = await orch.start(wl.WARMUP, n)
    total = await _result(handle, [worker], timeout=READY_TIMEOUT_S)
    if total != n * (n - 1) // 2:
        raise BenchmarkError(f"warm-up returned {total!r}, expected {n * (n - 1) // 2}")


class Bench:
    """One benchmark run: a Redis, a unique key prefix, a scratch directory."""

    def __init__(self, redis_url: str, sizes: Sizes) -> None:
        self.redis_url = redis_url
        self.sizes = sizes
        self.prefix = f"bench-{uuid.uuid4().hex[:10]}"
        self.tmp = Path(tempfile.mkdtemp(prefix="taskloom-bench-"))
        self.baseline: dict[str, Any] | None = None

    def sub_prefix(self, workload: str) -> str:
        """Each workload's own key prefix (under the run's prefix), so none sees another."""
        return f"{self.prefix}-{workload.lower()}"

    def worker(
        self,
        workload: str,
        concurrency: int,
        label: str = "",
        extra_env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        """A (not yet started) worker process for ``workload``."""
        return WorkerProcess(
            redis_url=self.redis_url,
            prefix=self.sub_prefix(workload),
            concurrency=concurrency,
            log_path=self.tmp / f"worker-{workload}{label}.log",
            extra_env=extra_env,
        )

    @contextlib.asynccontextmanager
    async def orchestrator(self, workload: str) -> AsyncIterator[Orchestrator]:
        """A client on ``workload``'s key prefix."""
        settings = Settings(redis_url=self.redis_url, key_prefix=self.sub_prefix(workload))
        async with Orchestrator(settings=settings) as orch:
            yield orch

    async def cleanup(self) -> int:
        """Delete every key of this run (SCAN + DEL) and the scratch directory."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        client = Redis.from_url(self.redis_url, decode_responses=True)
        deleted = 0
        try:
            batch: list[str] = []
            async for key in client.scan_iter(match=f"{self.prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await client.delete(*batch)
                    batch = []
            if batch:
                deleted += await client.delete(*batch)
        finally:
            await client.aclose()
        return deleted

    # -- baseline -----------------------------------------------------------------------
    async def run_baseline(self) -> dict[str, Any]:
        """Raw redis-py: fan-out throughput and sequential round latency."""
        producer = Redis.from_url(self.redis_url, decode_responses=True)
        consumer = Redis.from_url(self.redis_url, decode_responses=True)
        p = self.sub_prefix("baseline")
        try:
            await _baseline_fanout(producer, consumer, f"{p}:warm", self.sizes.warmup)
            times = [
                await _baseline_fanout(producer, consumer, f"{p}:fan{k}", self.sizes.baseline)
                for k in range(self.sizes.repeats)
            ]
            seconds = median(times)
            per_message = median(
                [
                    await _baseline_fanout(
                        producer, consumer, f"{p}:pm{k}", self.sizes.baseline, per_message=True
                    )
                    for k in range(self.sizes.repeats)
                ]
            )
            await _baseline_seq(producer, consumer, f"{p}:seqwarm", 10)
            gaps = await _baseline_seq(producer, consumer, f"{p}:seq", self.sizes.baseline_seq)
        finally:
            await producer.aclose()
            await consumer.aclose()
        n = self.sizes.baseline
        self.baseline = {
            "workload": "baseline",
            "n": n,
            "seconds": _r(seconds, 4),
            "activities_per_s": round(n / seconds),
            "per_message_activities_per_s": round(n / per_message),
            "repeats": self.sizes.repeats,
            "seq_n": self.sizes.baseline_seq,
            "seq_p50_ms": _r(percentile(gaps, 50) * 1000),
            "seq_p99_ms": _r(percentile(gaps, 99) * 1000),
            "method": (
                "redis-py asyncio + hiredis, one process, two connections. Fan-out: the "
                f"producer XADDs {n} tasks (JSON args) in one non-transactional pipeline "
                "while the consumer loops XREADGROUP COUNT 100 BLOCK 1000, and for each "
                "batch runs the no-op, then pipelines one HSET per result plus one XACK "
                "of the batch; timed from the first XADD to the last result stored "
                f"(median of {self.sizes.repeats} runs). "
                "Sequential: per step XADD, XREADGROUP COUNT 1, then HSET+XACK in one "
                "pipeline; per-step overhead = next step's start minus this step's end "
                "(3 round trips). per_message_activities_per_s: the same fan-out with the "
                "consumer storing and acknowledging each task in its own round trip."
            ),
        }
        return self.baseline

    # -- W1 -----------------------------------------------------------------------------
    async def run_w1(self) -> dict[str, Any]:
        """Fan-out of no-op activities: throughput, and its ratio to the baseline's."""
        n, conc = self.sizes.w1, self.sizes.w1_concurrency
        baseline = self.baseline or await self.run_baseline()  # measured first if not yet

        async def once(orch: Orchestrator, worker: WorkerProcess) -> float:
            t0 = time.perf_counter()
            handle = await orch.start(wl.FANOUT_NOOP, n)
            result = await _result(handle, [worker])
            seconds = time.perf_counter() - t0
            expected = {"n": n, "sum": n * (n - 1) // 2}
            if result != expected:
                raise BenchmarkError(f"W1 returned {result!r}, expected {expected!r}")
            return seconds

        async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
            seconds = median([await once(orch, worker) for _ in range(self.sizes.repeats)])
            rate = n / seconds
            base = float(baseline["activities_per_s"])
            return {
                "workload": "W1",
                "n": n,
                "seconds": _r(seconds, 4),
                "activities_per_s": round(rate),
                "baseline_activities_per_s": round(base),
                "ratio_to_baseline": _r(rate / base),
                "ratio_to_per_message_baseline": _r(
                    rate / float(baseline["per_message_activities_per_s"])
                ),
                "sum_ok": True,
                "repeats": self.sizes.repeats,
                "concurrency": conc,
            }

        return await self._with_worker("W1", conc, body)

    # -- W2 -----------------------------------------------------------------------------
    async def run_w2(self) -> dict[str, Any]:
        """LLM-like latency: makespan of waiting activities versus the ideal."""
        n, conc, sleep_s = self.sizes.w2, self.sizes.w2_concurrency, self.sizes.w2_sleep_s

        async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
            t0 = time.perf_counter()
            handle = await orch.start(wl.FANOUT_SLEEP, n, sleep_s)
            done = await _result(handle, [worker])
            seconds = time.perf_counter() - t0
            if done != n:
                raise BenchmarkError(f"W2 returned {done!r}, expected {n}")
            ideal = ideal_s(n, conc, sleep_s)
            return _makespan("W2", n, seconds, ideal) | {
                "concurrency": conc,
                "activity_s": sleep_s,
            }

        return await self._with_worker("W2", conc, body)

    # -- W3 -----------------------------------------------------------------------------
    async def run_w3(self) -> dict[str, Any]:
        """A sequential chain: per-step overhead seen by the activities' own clocks."""
        n, conc = self.sizes.w3, self.sizes.w3_concurrency

        async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
            t0 = time.perf_counter()
            handle = await orch.start(wl.CHAIN, n)
            stamps = await _result(handle, [worker])
            seconds = time.perf_counter() - t0
            if not isinstance(stamps, list) or len(stamps) != n:
                raise BenchmarkError(f"W3 returned {len(stamps)} stamps, expected {n}")
            gaps = [stamps[i][0] - stamps[i - 1][1] for i in range(1, n)]
            return {
                "workload": "W3",
                "n": n,
                "seconds": _r(seconds, 4),
                "p50_ms": _r(percentile(gaps, 50) * 1000),
                "p99_ms": _r(percentile(gaps, 99) * 1000),
                "max_ms": _r(max(gaps) * 1000),
                "concurrency": conc,
            }

        return await self._with_worker("W3", conc, body)

    # -- W4 -----------------------------------------------------------------------------
    async def run_w4(self) -> dict[str, Any]:
        """SIGKILL the worker mid-run, start a fresh one, and count what happened."""
        s = self.sizes
        n, conc = s.w4, s.w4_concurrency
        path = self.tmp / "w4-executions.log"
        path.write_bytes(b"")
        first = self.worker("W4", conc)
        fresh = self.worker("W4", conc, label="-fresh")
        async with self.orchestrator("W4") as orch:
            try:
                first.start()
                await _warm_up(orch, first, s.warmup)
                t0 = time.perf_counter()
                handle = await orch.start(wl.CRASH_FANOUT, n, s.w4_sleep_s, str(path))
                await asyncio.sleep(max(0.0, t0 + s.w4_kill_after_s - time.perf_counter()))
                killed_after = time.perf_counter() - t0
                executed_before_kill = len(path.read_bytes().splitlines())
                first.kill()
                fresh.start()
                completed = True
                try:
                    result = await _result(handle, [fresh])
                except (BenchmarkError, TaskloomError):  # no result: still count the rest
                    completed, result = False, None
                end = time.perf_counter()
            finally:
                first.kill()
                await fresh.stop()
            info = await handle.info()
            events = await orch.store.read_log(handle.run_id)
        recorded = Counter(e.seq for e in events if e.type == "activity_completed")
        executed = Counter(int(line) for line in path.read_bytes().splitlines() if line)
        if completed and isinstance(result, list):
            lost = len(set(range(n)) - {int(i) for i in result})
        else:  # no result: count the steps that never had an outcome recorded
            lost = n - len(recorded)
        return {
            "workload": "W4",
            "n": n,
            "completed": completed and info.status == "completed",
            "executed_twice": sum(1 for c in executed.values() if c > 1),
            "lost": lost,
            "recorded_twice": sum(c - 1 for c in recorded.values() if c > 1),
            "recovery_s": _r(end - fresh.started_at) if completed else None,
            "duplicates_dropped": info.duplicates_dropped,
            "lease_ttl_s": DEFAULT_LEASE_TTL_S,
            "executions": sum(executed.values()),
            "executed_before_kill": executed_before_kill,
            "killed_after_s": _r(killed_after),
            "seconds": _r(end - t0),
            "concurrency": conc,
            "activity_s": s.w4_sleep_s,
        }

    # -- W5 -----------------------------------------------------------------------------
    async def run_w5(self) -> dict[str, Any]:
        """Subagent fan-out against the fake LLM server: makespan and CPU per call."""
        n, conc, latency = self.sizes.w5, self.sizes.w5_concurrency, self.sizes.w5_latency_s
        fake = FakeLLM(lambda request: reply("ok", latency=latency, input_tokens=40))

        async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
            warm = await orch.start(wl.AGENT_FANOUT, 10)  # the SDK client, the prompts
            await _result(warm, [worker])
            sent = len(fake.requests)
            cpu0, t0 = worker.cpu_seconds(), time.perf_counter()
            handle = await orch.start(wl.AGENT_FANOUT, n)
            done = await _result(handle, [worker])
            seconds = time.perf_counter() - t0
            cpu = worker.cpu_seconds() - cpu0
            if done != n or len(fake.requests) - sent != n:
                raise BenchmarkError(
                    f"W5 answered {done!r} of {n} with {len(fake.requests) - sent} requests"
                )
            ideal = ideal_s(n, conc, latency)
            sdk = await _sdk_baseline(fake.openai_url, n, conc)
            plain = await _sdk_baseline(fake.openai_url, n, conc, "default")
            cpu_us = cpu / n * 1e6
            return _makespan("W5", n, seconds, ideal) | {
                "cpu_us_per_call": round(cpu_us),
                "sdk_seconds": _r(sdk["seconds"], 4),
                "sdk_overhead_ratio": _r(sdk["seconds"] / ideal),
                "sdk_cpu_us_per_call": round(sdk["cpu_us_per_call"]),
                "taskloom_cpu_us_per_call": round(cpu_us - sdk["cpu_us_per_call"]),
                "ratio_to_sdk": _r(seconds / sdk["seconds"]),
                "sdk_default_seconds": _r(plain["seconds"], 4),
                "sdk_default_overhead_ratio": _r(plain["seconds"] / ideal),
                "sdk_default_cpu_us_per_call": round(plain["cpu_us_per_call"]),
                "concurrency": conc,
                "llm_latency_s": latency,
            }

        with fake:  # on a thread of its own: its CPU is not the worker's
            return await self._with_worker("W5", conc, body, extra_env=_fake_env(fake))

    # -- W6 -----------------------------------------------------------------------------
    async def run_w6(self) -> dict[str, Any]:
        """A planned pipeline of parallel, judged activities: makespan versus the ideal,
        where the overhead went, token shares, and Redis commands per activity."""
        n, conc = self.sizes.w6, self.sizes.w6_concurrency
        latency = wl.PIPELINE_LATENCY_S
        plan = wl.pipeline_plan(n)
        team = SimulatedTeam(plans=[plan], latency=latency)
        fake = FakeLLM(SimulatedTeam(plans=[wl.pipeline_plan(3)]))  # no latency: a warm-up

        async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
            # The pipeline's code paths, prompts and the SDK client, loaded before measuring.
            warm = await orch.submit("warm up", model=AGENT_MODEL, max_parallel=n)
            await _result(warm, [worker])
            fake.answer_with(team)
            idle = await _commands_per_s(orch, self.sizes.w6_idle_sample_s)
            commands0 = await _commands(orch)
            t0 = time.monotonic()  # the fake stamps requests with time.monotonic
            handle = await orch.submit(
                "A report in independent sections", model=AGENT_MODEL, max_parallel=n
            )
            result = await _result(handle, [worker])
            end = time.monotonic()
            commands = await _commands(orch) - commands0
            expected = {"planner": 1, "work": n, "judge": n, "integrator": 1}
            accepted = sum(a["status"] == "accepted" for a in result["activities"].values())
            if dict(team.calls) != expected or accepted != n:
                raise BenchmarkError(
                    f"W6 accepted {accepted} of {n} activities with model calls "
                    f"{dict(team.calls)}, expected {expected}"
                )
            seconds = end - t0
            # max_parallel=n: planner, one wave of subagent calls each followed by its
            # judge call, integrator
            ideal = sum(latency.values())
            tokens = result["tokens"]
            return _makespan("W6", n, seconds, ideal) | {
                "overhead_s": _pipeline_phases(team.requests, latency, t0, end),
                "token_share": {
                    k: _r(tokens[k] / tokens["total"])
                    for k in ("planning", "work", "verification", "integration")
                },
                "tokens": tokens["total"],
                "cost_usd": result["cost_usd"],
                "redis_commands": commands.total(),
                "redis_commands_per_activity": _r(commands.total() / n, 1),
                "redis_top_commands": dict(commands.most_common(6)),
                "redis_idle_commands_per_s": round(idle),
                "max_parallel": n,
                "concurrency": conc,
                "llm_latency_s": latency,
                "method": (
                    f"orch.submit() of a goal the simulated planner plans into {n} writer "
                    "activities without inputs, each checked by an LLM judge, then "
                    "integrated; timed from submit to the result, after a warm-up "
                    "pipeline of 3 activities. overhead_s: where the time beyond ideal_s "
                    "went, from when the fake LLM received each kind of call (a reply is "
                    "taken to leave its latency after its request came); the parts sum to "
                    "seconds - ideal_s. redis_commands: calls in the server's INFO "
                    "commandstats after the run minus before (INFO left out; commands run "
                    "by Lua scripts count): everything the run cost, the planner, judge, "
                    "integrator and verification activities and the client waiting for "
                    "the result included, and also the worker's background polling and "
                    "any other client of the server meanwhile. "
                    "redis_idle_commands_per_s: the same count's rate over "
                    f"{self.sizes.w6_idle_sample_s} s just before the run, the worker "
                    "idle: its polling, and a sign of other clients when high."
                ),
            }

        with fake:  # on a thread of its own: its CPU is not the worker's
            return await self._with_worker("W6", conc, body, extra_env=_fake_env(fake))

    # -- W7 -----------------------------------------------------------------------------
    async def run_w7(self) -> dict[str, Any]:
        """Retry storm: 30% of the activities fail twice, 10 ms apart, then succeed."""
        n, conc = self.sizes.w7, self.sizes.w7_concurrency

        async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
            t0 = time.perf_counter()
            handle = await orch.start(wl.RETRY_STORM, n)
            result = await _result(handle, [worker])
            seconds = time.perf_counter() - t0
            if result != n * (n - 1) // 2:
                raise BenchmarkError(f"W7 returned {result!r}, expected {n * (n - 1) // 2}")
            events = await orch.store.read_log(handle.run_id)
            return {
                "workload": "W7",
                "n": n,
                "seconds": _r(seconds, 4),
                "activities_per_s": round(n / seconds),
                "retries_recorded": sum(e.type == "activity_retrying" for e in events),
                "retries_expected": 2 * sum(1 for i in range(n) if i % 10 < 3),
                "concurrency": conc,
                "backoff_s": wl.STORM_RETRY.initial_interval,
            }

        return await self._with_worker("W7", conc, body)

    # -- shared -------------------------------------------------------------------------
    async def _with_worker(
        self,
        workload: str,
        concurrency: int,
        body: Callable[[Orchestrator, WorkerProcess], Awaitable[dict[str, Any]]],
        *,
        extra_env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        worker = self.worker(workload, concurrency, extra_env=extra_env)
        async with self.orchestrator(workload) as orch:
            try:
                worker.start()
                await _warm_up(orch, worker, self.sizes.warmup)
                return await body(orch, worker)
            finally:
                await worker.stop()


# -- targets and output -----------------------------------------------------------------
TARGETS = {
    "W1": ">= 3000 activities/s and >= 0.4x baseline",
    "W2": "overhead_ratio <= 1.15",
    "W3": "p50 <= 0.5 ms and p99 <= 1.0 ms",
    "W4": "completed, lost 0, recorded_twice 0, executed_twice <= 2, recovery <= 6 s",
    "W5": "overhead_ratio <= 1.2",
    "W6": "overhead_ratio <= 1.3",
    "W7": "retries_recorded == retries_expected (600 for N=1000)",
    "cli": cli_latency.TARGET,
}


def target_met(row: dict[str, Any]) -> bool | None:
    """Whether ``row`` meets its workload's target (``None``: no target)."""
    match row.get("workload"):
        case "W1":
            return bool(row["activities_per_s"] >= 3000 and row["ratio_to_baseline"] >= 0.4)
        case "W2":
            return bool(row["overhead_ratio"] <= 1.15)
        case "W3":
            return bool(row["p50_ms"] <= 0.5 and row["p99_ms"] <= 1.0)
        case "W4":
            return bool(
                row["completed"]
                and row["lost"] == 0
                and row["recorded_twice"] == 0
                and row["executed_twice"] <= 2
                and row["recovery_s"] <= 6
            )
        case "W5":
            return bool(row["overhead_ratio"] <= 1.2)
        case "W6":
            return bool(row["overhead_ratio"] <= 1.3)
        case "W7":
            return bool(row["retries_recorded"] == row["retries_expected"])
        case "cli":
            return cli_latency.target_met(row)
    return None


def summary(row: dict[str, Any]) -> str:
    """One readable line of results for the table."""
    match row.get("workload"):
        case _ if "error" in row:
            return f"ERROR: {row['error'].splitlines()[0]}"
        case "baseline":
            return (
                f"{row['activities_per_s']:,} tasks/s; sequential round p50 "
                f"{row['seq_p50_ms']} ms, p99 {row['seq_p99_ms']} ms"
            )
        case "W1":
            return (
                f"{row['activities_per_s']:,} activities/s = {row['ratio_to_baseline']}x "
                f"baseline ({row['baseline_activities_per_s']:,}/s)"
            )
        case "W2":
            return (
                f"makespan {row['seconds']} s vs ideal {row['ideal_s']} s "
                f"= {row['overhead_ratio']}x"
            )
        case "W3":
            return f"step overhead p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms"
        case "W4":
            return (
                f"completed={row['completed']} lost={row['lost']} "
                f"recorded_twice={row['recorded_twice']} "
                f"executed_twice={row['executed_twice']} recovery {row['recovery_s']} s "
                f"(lease {row['lease_ttl_s']} s)"
            )
        case "W5":
            return (
                f"makespan {row['seconds']} s vs ideal {row['ideal_s']} s "
                f"= {row['overhead_ratio']}x (SDK alone {row['sdk_overhead_ratio']}x, "
                f"as its README calls it {row['sdk_default_overhead_ratio']}x); "
                f"worker CPU {row['cpu_us_per_call']} us per call "
                f"(SDK alone {row['sdk_cpu_us_per_call']}, "
                f"README way {row['sdk_default_cpu_us_per_call']})"
            )
        case "W6":
            share = row["token_share"]
            return (
                f"makespan {row['seconds']} s vs ideal {row['ideal_s']} s "
                f"= {row['overhead_ratio']}x; tokens: planning {share['planning']:.0%}, "
                f"verification {share['verification']:.0%}, integration "
                f"{share['integration']:.0%}; {row['redis_commands_per_activity']} Redis "
                f"commands per activity"
            )
        case "W7":
            return (
                f"{row['activities_per_s']:,} activities/s with {row['retries_recorded']} "
                f"retries recorded (expected {row['retries_expected']})"
            )
        case "cli":
            return cli_latency.summary(row)
    return ""


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a plain-text table, with the targets underneath."""
    header = ("workload", "n", "seconds", "result", "target met")
    body = []
    for row in rows:
        met = row.get("target_met")
        body.append(
            (
                str(row.get("workload", "")),
                str(row.get("n", "")),
                str(row.get("seconds", "")),
                summary(row),
                "-" if met is None else ("yes" if met else "NO"),
            )
        )
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *body)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    shown = [str(r.get("workload")) for r in rows if str(r.get("workload")) in TARGETS]
    if shown:
        lines.append("")
        lines.append("targets (reported, not asserted):")
        lines.extend(f"  {w}: {TARGETS[w]}" for w in shown)
    return "\n".join(lines)


def parse_only(value: str | None) -> list[str]:
    """``--only W1,w3`` -> ``['W1', 'W3']``, in the canonical order; ``ValueError`` for an
    unknown name."""
    if not value:
        return list(WORKLOADS)
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    known = {w.lower() for w in WORKLOADS}
    unknown = [v for v in wanted if v.lower() not in known]
    if unknown or not wanted:
        raise ValueError(
            f"unknown workload(s) {', '.join(unknown) or repr(value)}; choose from "
            f"{', '.join(WORKLOADS)}"
        )
    lowered = {v.lower() for v in wanted}
    return [w for w in WORKLOADS if w.lower() in lowered]


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
    runners: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "baseline": bench.run_baseline,
        "W1": bench.run_w1,
        "W2": bench.run_w2,
        "W3": bench.run_w3,
        "W4": bench.run_w4,
        "W5": bench.run_w5,
        "W6": bench.run_w6,
        "W7": bench.run_w7,
        "cli": lambda: asyncio.to_thread(cli_latency.measure, quick=sizes is QUICK),
    }
    rows: list[dict[str, Any]] = []
    failed = False
    try:
        for name in names:
            try:
                row = await runners[name]()
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
    p.add_argument("--only", help=f"comma-separated workloads, of {','.join(WORKLOADS)}")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = p.parse_args(argv)
    try:
        names = parse_only(args.only)
    except ValueError as exc:
        p.error(str(exc))
    sizes = QUICK if args.quick else STANDARD
    return asyncio.run(run_all(args.redis_url, sizes, names, as_json=args.json))


# -- baseline loops ---------------------------------------------------------------------
async def _baseline_fanout(
    producer: Redis, consumer: Redis, key: str, n: int, *, per_message: bool = False
) -> float:
    """XADD ``n`` tasks (one pipeline) while a consumer XREADGROUPs, HSETs and XACKs.

    ``per_message``: the consumer stores and acknowledges each task on its own (one
    HSET+XACK round trip per task), as a plain task loop does, instead of per batch.
    """
    stream, results, group = f"{key}:tasks", f"{key}:results", "g"
    await producer.xgroup_create(stream, group, id="0", mkstream=True)

    async def produce() -> None:
        pipe = producer.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd(stream, {"name": "noop", "args": json.dumps([i])})
        await pipe.execute()

    async def consume() -> None:
        done = 0
        while done < n:
            res: Any = await consumer.xreadgroup(group, "c1", {stream: ">"}, count=100, block=1000)
            if not res:
                raise BenchmarkError("baseline consumer saw no tasks for 1 s")
            messages: list[tuple[str, dict[str, str]]] = res[0][1]
            if per_message:
                for msg_id, fields in messages:
                    (i,) = json.loads(fields["args"])
                    pipe = consumer.pipeline(transaction=False)
                    pipe.hset(results, msg_id, json.dumps({"i": i}))
                    pipe.xack(stream, group, msg_id)
                    await pipe.execute()
                done += len(messages)
                continue
            pipe = consumer.pipeline(transaction=False)
            for msg_id, fields in messages:
                (i,) = json.loads(fields["args"])
                pipe.hset(results, msg_id, json.dumps({"i": i}))
            pipe.xack(stream, group, *(m for m, _ in messages))
            await pipe.execute()
            done += len(messages)

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(produce(), consume()), RESULT_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    stored: Any = await producer.hvals(results)
    if len(stored) != n or sum(json.loads(v)["i"] for v in stored) != n * (n - 1) // 2:
        raise BenchmarkError(f"baseline stored {len(stored)} results, expected {n}")
    return seconds


async def _baseline_seq(producer: Redis, consumer: Redis, key: str, n: int) -> list[float]:
    """``n`` sequential rounds; returns the gaps between one step's end and the next's start."""
    stream, results, group = f"{key}:tasks", f"{key}:results", "g"
    await producer.xgroup_create(stream, group, id="0", mkstream=True)
    stamps: list[tuple[float, float]] = []
    for i in range(n):
        await producer.xadd(stream, {"name": "stamp", "args": json.dumps([i])})
        res: Any = await consumer.xreadgroup(group, "c1", {stream: ">"}, count=1, block=1000)
        if not res:
            raise BenchmarkError("baseline consumer saw no task for 1 s")
        msg_id: str = res[0][1][0][0]
        start = time.time()
        stamps.append((start, time.time()))
        pipe = consumer.pipeline(transaction=False)
        pipe.hset(results, msg_id, json.dumps(stamps[-1]))
        pipe.xack(stream, group, msg_id)
        await pipe.execute()
    return [stamps[i][0] - stamps[i - 1][1] for i in range(1, n)]


if __name__ == "__main__":
    sys.exit(main())
