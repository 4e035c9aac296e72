"""The harness every workload runs in: the sizes of a run, a fresh ``taskloom worker``
process per workload, a client on the workload's own key prefix, waiting for a run's
result while watching the worker, and the cleanup of every key the run made."""

from __future__ import annotations

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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from benchmarks import workloads as wl
from taskloom import Orchestrator, RunHandle, Settings
from taskloom.agents.fake_llm import FakeLLM

__all__ = [
    "AGENT_MODEL",
    "DEFAULT_LEASE_TTL_S",
    "QUICK",
    "RESULT_TIMEOUT_S",
    "ROOT",
    "STANDARD",
    "Bench",
    "BenchmarkError",
    "Sizes",
    "WorkerProcess",
    "fake_llm_env",
    "result_of",
    "timed_run",
    "warm_up",
]


ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LEASE_TTL_S = next(f.default for f in fields(Settings) if f.name == "lease_ttl")
READY_TIMEOUT_S = 30.0
READY_LINE = ": ready, "  # taskloom worker's line once its background loading is done
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
    w8: int = 2000
    """W8: runs in all (each gathers ``w8_activities``), ``w8_in_flight`` at once."""
    w8_activities: int = 20
    w8_in_flight: int = 100
    w8_worker_slots: int = 100
    w8_retention_s: float = 2.0
    soak_s: float = 180.0
    """The soak (``--only soak``): seconds of small runs, ``soak_in_flight`` at once."""
    soak_in_flight: int = 16
    soak_worker_slots: int = 64
    soak_retention_s: float = 5.0
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
    w8=300,
    soak_s=20.0,
)


class BenchmarkError(Exception):
    """A workload could not be measured (a worker died, a wait timed out, a wrong sum)."""


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
        module: str = "benchmarks.workloads",
        launcher: Sequence[str] = (),
    ) -> None:
        self.extra_env = dict(extra_env or {})
        self.module = module
        """The module whose definitions it serves (``--import``)."""
        self.launcher = list(launcher)
        """Interpreter arguments before ``-m taskloom.terminal.cli`` (``["-m",
        "benchmarks.without_otel_sdk"]``: run through that module)."""
        self.redis_url = redis_url
        self.prefix = prefix
        self.concurrency = concurrency
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def env(self) -> dict[str, str]:
        """The parent's environment without any ``TASKLOOM_*`` (defaults apply, e.g. the
        lease TTL), plus this benchmark's Redis URL, key prefix and PYTHONPATH, and a
        blob store of this run's own, empty at the start as a new deployment's is (the
        default, under the user's data directory, kept what earlier runs stored, so a
        rerun found its blobs written already and measured less work than a first run)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLOOM_")}
        path = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
        env["TASKLOOM_REDIS_URL"] = self.redis_url
        env["TASKLOOM_KEY_PREFIX"] = self.prefix
        env["TASKLOOM_BLOB_URL"] = str(self.log_path.parent / "blobs")
        env.update(self.extra_env)
        return env

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux ``/proc``)."""
        if self.proc is None:
            return 0.0
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        """Start the process (returns at once; see :func:`warm_up` for readiness)."""
        args = [
            sys.executable,
            *self.launcher,
            "-m",
            "taskloom.terminal.cli",
            "worker",
            "--import",
            self.module,
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

    async def ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait for the worker's "ready" line (``taskloom worker`` prints it once the
        layers it loads in the background are installed)."""
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.log_path.read_text(errors="replace"):
            code = self.exited()
            if code is not None:
                raise BenchmarkError(f"the worker exited with code {code}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise BenchmarkError(f"the worker did not say it was ready:\n{self.tail()}")
            await asyncio.sleep(0.02)

    def tail(self, lines: int = 15) -> str:
        """The end of the worker's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def result_of(
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


async def timed_run(
    orch: Orchestrator, worker: WorkerProcess, workflow: str, *args: Any
) -> tuple[RunHandle, Any, float]:
    """Start ``workflow(*args)`` and wait for its result: the run, the result, and the
    seconds from the start call to the result."""
    t0 = time.perf_counter()
    handle = await orch.start(workflow, *args)
    result = await result_of(handle, [worker])
    return handle, result, time.perf_counter() - t0


def fake_llm_env(fake: FakeLLM) -> dict[str, str]:
    """What a worker process needs to call the fake LLM server, with no rate limits."""
    return {
        "OPENAI_BASE_URL": fake.openai_url,
        "OPENAI_API_KEY": "sk-benchmark",
        "TASKLOOM_RATE_LIMITS": NO_RATE_LIMITS,
    }


async def warm_up(orch: Orchestrator, worker: WorkerProcess, n: int) -> None:
    """Wait until the worker serves runs, by running a small workflow to completion,
    and is at rest: it has said it is ready (the layers it loads in the background, the
    pipeline and its verifiers, are in), so none of that start-up work overlaps what is
    measured next."""
    handle = await orch.start(wl.WARMUP, n)
    total = await result_of(handle, [worker], timeout=READY_TIMEOUT_S)
    if total != n * (n - 1) // 2:
        raise BenchmarkError(f"warm-up returned {total!r}, expected {n * (n - 1) // 2}")
    await worker.ready()


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
        module: str = "benchmarks.workloads",
        launcher: Sequence[str] = (),
    ) -> WorkerProcess:
        """A (not yet started) worker process for ``workload``, serving ``module``
        (``launcher``: see :attr:`WorkerProcess.launcher`)."""
        return WorkerProcess(
            module=module,
            launcher=launcher,
            redis_url=self.redis_url,
            prefix=self.sub_prefix(workload),
            concurrency=concurrency,
            log_path=self.tmp / f"worker-{workload}{label}.log",
            extra_env=extra_env,
        )

    @contextlib.asynccontextmanager
    async def orchestrator(self, workload: str) -> AsyncIterator[Orchestrator]:
        """A client on ``workload``'s key prefix."""
        settings = Settings(
            redis_url=self.redis_url,
            key_prefix=self.sub_prefix(workload),
            blob_url=str(self.tmp / "blobs"),  # the workers' (WorkerProcess.env)
        )
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

    async def with_worker(
        self,
        workload: str,
        concurrency: int,
        body: Callable[[Orchestrator, WorkerProcess], Awaitable[dict[str, Any]]],
        *,
        extra_env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """``body`` measured against a fresh worker for ``workload``, warmed up first and
        stopped afterwards."""
        worker = self.worker(workload, concurrency, extra_env=extra_env)
        async with self.orchestrator(workload) as orch:
            try:
                worker.start()
                await warm_up(orch, worker, self.sizes.warmup)
                return await body(orch, worker)
            finally:
                await worker.stop()
