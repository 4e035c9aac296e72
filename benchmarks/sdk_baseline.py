"""W5's baseline: the same subagent fan-out with the official openai SDK alone (no
taskloom), in a process of its own, against the same fake LLM server.

    python -m benchmarks.sdk_baseline BASE_URL N CONCURRENCY [MODE]
    python -m benchmarks.sdk_baseline pipeline BASE_URL REQUESTS_JSON CONCURRENCY

MODE ``taskloom`` (the default) calls the SDK the way taskloom's OpenAI provider does:
its aiohttp client (``DefaultAioHttpClient``) and ``client.post(..., cast_to=
ChatCompletion)``, so that the difference from taskloom is taskloom's own cost. MODE
``default`` calls it as the SDK's README shows: the default httpx client and
``chat.completions.create``.

Prints one JSON object: ``seconds`` (makespan of the N calls, at most CONCURRENCY at
once) and ``cpu_us_per_call`` (this process's user + system CPU per call).

``pipeline`` is W6's baseline: the very requests taskloom's pipeline sent in a run (the
file: the planner's body, each subagent's body with its judge's, the integrator's), sent
again by the SDK alone in the same order of dependence (the planner; each subagent call
followed by its judge call, CONCURRENCY pairs at once; the integrator), each answer parsed
as the pipeline needs it (the plan and the verdicts as JSON). Prints ``seconds`` (planner
sent to integrator answered), ``cpu_s`` and ``calls``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from taskloom.agents.providers._transport import http_client

SYSTEM = "You are a benchmark subagent. Answer the task in a few words. " * 4
MODES = ("taskloom", "default")


Body = dict[str, Any]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(base_url: str, n: int, concurrency: int, mode: str) -> dict[str, float]:
    """Warm up with a few calls, then time ``n`` calls, ``concurrency`` at once."""
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    client = http_client(openai) if mode == "taskloom" else None
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key="sk-benchmark", max_retries=0, http_client=client
    ) as c:
        gate = asyncio.Semaphore(concurrency)

        async def call(i: int) -> str:
            body: dict[str, Any] = {
                "model": "gpt-4.1-mini",
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"item {i}"},
                ],
                "max_tokens": 64,
            }
            async with gate:
                if mode == "taskloom":
                    answer = await c.post("/chat/completions", body=body, cast_to=ChatCompletion)
                else:
                    answer = await c.chat.completions.create(**body)
                return answer.choices[0].message.content or ""

        await asyncio.gather(*(call(i) for i in range(10)))
        cpu0, t0 = _cpu(), time.perf_counter()
        await asyncio.gather(*(call(i) for i in range(n)))
        seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    return {"seconds": seconds, "cpu_us_per_call": cpu / n * 1e6}


async def measure_pipeline(base_url: str, requests: Body, concurrency: int) -> dict[str, float]:
    """W6's baseline (see the module's docstring); warmed up with the first pair."""
    planner: Body = requests["planner"]
    pairs: list[tuple[Body, Body]] = [tuple(p) for p in requests["pairs"]]  # type: ignore[misc]
    integrator: Body = requests["integrator"]
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key="sk-benchmark", max_retries=0, http_client=http_client(openai)
    ) as c:
        gate = asyncio.Semaphore(concurrency)

        async def call(body: Body) -> str:
            answer = await c.post("/chat/completions", body=body, cast_to=ChatCompletion)
            return answer.choices[0].message.content or ""

        async def judged(work: Body, judge: Body) -> float:
            async with gate:
                if not await call(work):
                    raise SystemExit("a subagent answered nothing")
                return float(json.loads(await call(judge))["score"])

        await call(pairs[0][0])  # the connection, the SDK's first-call work
        cpu0, t0 = _cpu(), time.perf_counter()
        plan = json.loads(await call(planner))
        if len(plan["activities"]) != len(pairs):
            raise SystemExit(f"the plan has {len(plan['activities'])} activities, not {len(pairs)}")
        await asyncio.gather(*(judged(w, j) for w, j in pairs))
        await call(integrator)
        seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    return {"seconds": seconds, "cpu_s": cpu, "calls": 2 + 2 * len(pairs)}


def main(argv: list[str]) -> int:
    """Entry point (see the module's docstring)."""
    if argv[0] == "pipeline":
        base_url, path, concurrency = argv[1], argv[2], int(argv[3])
        with open(path) as f:
            requests = json.load(f)
        print(json.dumps(asyncio.run(measure_pipeline(base_url, requests, concurrency))))
        return 0
    base_url, n, concurrency = argv[0], int(argv[1]), int(argv[2])
    mode = argv[3] if len(argv) > 3 else "taskloom"
    print(json.dumps(asyncio.run(measure(base_url, n, concurrency, mode))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
