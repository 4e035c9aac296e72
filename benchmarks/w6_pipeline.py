"""W6: a goal planned into parallel, judged activities by taskloom's pipeline, the fake LLM
server playing the team; makespan versus the ideal, where the overhead went, token
shares, and Redis commands per activity."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from benchmarks import workloads as wl
from benchmarks.harness import (
    AGENT_MODEL,
    Bench,
    BenchmarkError,
    WorkerProcess,
    fake_llm_env,
    result_of,
)
from benchmarks.measure import makespan_row, redis_commands, redis_commands_per_s, rounded
from benchmarks.w5_subagents import run_sdk_baseline
from taskloom import Orchestrator
from taskloom.agents.fake_llm import FakeLLM, Request, Step
from taskloom.testing.simulated import SimulatedTeam, checked_output, task_of

__all__ = ["PhaseCounts", "command_kinds", "pipeline_phases", "replay_requests", "run"]

PHASES = ("submit_to_planner", "planning", "work_and_verification", "integration")
"""W6's phases for Redis commands: until the planner is called, from then until the
first subagent call, from then until the integrator is called, from then to the result."""

_KINDS = {
    "scripts": ("eval", "evalsha", "eval_ro", "evalsha_ro", "script"),
    "streams": (
        "xadd",
        "xread",
        "xreadgroup",
        "xrange",
        "xrevrange",
        "xautoclaim",
        "xack",
        "xdel",
        "xtrim",
        "xlen",
        "xclaim",
        "xpending",
        "xgroup",
    ),
    "hashes": (
        "hset",
        "hget",
        "hmget",
        "hexists",
        "hincrby",
        "hdel",
        "hgetall",
        "hsetnx",
        "hlen",
        "hkeys",
    ),
    "sorted_sets": (
        "zadd",
        "zrem",
        "zrange",
        "zrangebyscore",
        "zremrangebyscore",
        "zscore",
        "zcard",
        "zpopmin",
    ),
    "sets": ("sadd", "srem", "smembers", "scard", "sismember"),
    "keys": (
        "get",
        "set",
        "del",
        "unlink",
        "exists",
        "pexpire",
        "expire",
        "pttl",
        "ttl",
        "incr",
        "incrby",
        "time",
    ),
    "connections": ("hello", "ping", "client", "select", "auth"),
}
_KIND_OF = {name: kind for kind, names in _KINDS.items() for name in names}


def command_kinds(commands: Counter[str]) -> dict[str, int]:
    """Commands by kind: ``scripts`` (EVALSHA calls), then what they and plain calls did
    by data type (a script's own commands count under their names), ``connections``
    (a new connection's HELLO, health PINGs), ``other``."""
    out: Counter[str] = Counter()
    for name, calls in commands.items():
        out[_KIND_OF.get(name.split("|", 1)[0], "other")] += calls
    return dict(out.most_common())


class PhaseCounts:
    """Wraps the simulated team: when the fake first sees a planner, subagent or
    integrator call, it reads the server's command counts (a blocking ``INFO``, about a
    millisecond on the fake's thread, three times a run)."""

    def __init__(self, team: SimulatedTeam, redis_url: str) -> None:
        self.team = team
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.marks: dict[str, Counter[str]] = {}

    def __call__(self, request: Request) -> Step:
        before = Counter(self.team.calls)
        step = self.team(request)
        kind = next(iter(Counter(self.team.calls) - before), "")
        if kind in ("planner", "work", "integrator") and kind not in self.marks:
            self.marks[kind] = _commands(self.client.info("commandstats"))
        return step

    def phases(self, start: Counter[str], end: Counter[str]) -> dict[str, int]:
        """Commands per phase (:data:`PHASES`), from ``start`` and ``end`` counts."""
        marks = [start, *(self.marks.get(k, end) for k in ("planner", "work", "integrator")), end]
        return {p: (b - a).total() for p, a, b in zip(PHASES, marks, marks[1:], strict=False)}

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


def _commands(stats: dict[str, Any]) -> Counter[str]:
    return Counter(
        {
            name.removeprefix("cmdstat_"): int(entry["calls"])
            for name, entry in stats.items()
            if name != "cmdstat_info"
        }
    )


def pipeline_phases(
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
    return {k: rounded(v, 4) for k, v in phases.items()}


def replay_requests(team: SimulatedTeam, path: Path) -> Path:
    """Write the requests of ``team``'s run for the SDK-alone baseline
    (:mod:`benchmarks.sdk_baseline`'s ``pipeline``): the planner's body, each subagent's
    body with the body of the judge call that checked its answer, the integrator's."""
    judges: dict[str, dict[str, Any]] = {}
    for request in team.requests["judge"]:
        judges[checked_output(request)] = request.body
    pairs = []
    for request in team.requests["work"]:
        answer = team.work(task_of(request), None)
        if not isinstance(answer, str) or answer.strip() not in judges:
            raise BenchmarkError("W6: a subagent answer no judge call checked")
        pairs.append([request.body, judges[answer.strip()]])
    requests = {
        "planner": team.requests["planner"][0].body,
        "pairs": pairs,
        "integrator": team.requests["integrator"][0].body,
    }
    path.write_text(json.dumps(requests))
    return path


async def run(bench: Bench) -> dict[str, Any]:
    """A planned pipeline of parallel, judged activities: makespan versus the ideal,
    where the overhead went, token shares, and Redis commands per activity."""
    n, conc = bench.sizes.w6, bench.sizes.w6_concurrency
    latency = wl.PIPELINE_LATENCY_S
    plan = wl.pipeline_plan(n)
    team = SimulatedTeam(plans=[plan], latency=latency)
    counts = PhaseCounts(team, bench.redis_url)
    fake = FakeLLM(SimulatedTeam(plans=[wl.pipeline_plan(3)]))  # no latency: a warm-up

    async def body(orch: Orchestrator, worker: WorkerProcess) -> dict[str, Any]:
        # The pipeline's code paths, prompts and the SDK client, loaded before measuring.
        warm = await orch.submit("warm up", model=AGENT_MODEL, max_parallel=n)
        await result_of(warm, [worker])
        fake.answer_with(counts)
        idle = await redis_commands_per_s(orch, bench.sizes.w6_idle_sample_s)
        commands0 = await redis_commands(orch)
        cpu0 = worker.cpu_seconds()
        t0 = time.monotonic()  # the fake stamps requests with time.monotonic
        handle = await orch.submit(
            "A report in independent sections", model=AGENT_MODEL, max_parallel=n
        )
        result = await result_of(handle, [worker])
        end = time.monotonic()
        cpu = worker.cpu_seconds() - cpu0
        commands = await redis_commands(orch) - commands0
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
        # The yardstick: the same requests sent again by the SDK alone, same shape.
        fake.answer_with(SimulatedTeam(plans=[plan], latency=latency))
        replay = replay_requests(team, bench.tmp / "w6-requests.json")
        sdk = await run_sdk_baseline("pipeline", fake.openai_url, replay, n)
        return makespan_row("W6", n, seconds, ideal) | {
            "sdk_seconds": rounded(sdk["seconds"], 4),
            "sdk_overhead_ratio": rounded(sdk["seconds"] / ideal),
            "sdk_cpu_s": rounded(sdk["cpu_s"], 3),
            "ratio_to_sdk": rounded(seconds / sdk["seconds"]),
            "overhead_s": pipeline_phases(team.requests, latency, t0, end),
            "token_share": {
                k: rounded(tokens[k] / tokens["total"])
                for k in ("planning", "work", "verification", "integration")
            },
            "tokens": tokens["total"],
            "cost_usd": result["cost_usd"],
            "redis_commands": commands.total(),
            "redis_commands_per_activity": rounded(commands.total() / n, 1),
            "redis_top_commands": dict(commands.most_common(6)),
            "commands_by_kind": command_kinds(commands),
            "commands_by_phase": counts.phases(commands0, commands0 + commands),
            "redis_idle_commands_per_s": round(idle),
            "worker_cpu_s": rounded(cpu, 3),
            "worker_cpu_ms_per_activity": rounded(cpu / n * 1000, 2),
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
                "commands_by_kind: the same by kind of command (scripts: EVALSHA calls; "
                "the commands scripts run count under their own kinds). "
                "commands_by_phase: the same, split when the fake LLM first received a "
                "planner, a subagent and an integrator call (an INFO commandstats on the "
                "fake's thread each time). "
                "redis_idle_commands_per_s: the same count's rate over "
                f"{bench.sizes.w6_idle_sample_s} s just before the run, the worker "
                "idle: its polling, and a sign of other clients when high. "
                "worker_cpu_s: the worker process's user + system CPU from submit to the "
                "result (/proc, 10 ms ticks), all its model calls (SDK included), "
                "scheduling, verification and recording; on 2 shared cores the part of "
                "the overhead that is the worker being busy. "
                "sdk_seconds: the yardstick, the very requests of the run (planner, "
                f"{n} subagent calls each followed by its judge call, integrator) sent "
                "again by the official SDK alone in a process of its own, in the same "
                "order of dependence, as taskloom calls it (benchmarks/sdk_baseline.py "
                "pipeline); sdk_overhead_ratio its makespan over ideal_s (what a "
                "taskloom costing nothing beside the SDK would reach on this machine), "
                "sdk_cpu_s its CPU, ratio_to_sdk taskloom's makespan over it."
            ),
        }

    try:
        with fake:  # on a thread of its own: its CPU is not the worker's
            return await bench.with_worker("W6", conc, body, extra_env=fake_llm_env(fake))
    finally:
        counts.close()
