"""A cold worker process's first model call (issue 12, finding 2).

The first call to a provider imports its SDK and builds its clients: seconds of work.
Done on the event loop, it froze the worker past its lease: the run was taken over by
the other worker and the same paid call was sent twice. Two real worker processes, the
default 1 s lease, one subagent call per provider: one request reaches the provider, one
step is scheduled, and no import blocks a worker's event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from taskloom import Orchestrator
from taskloom.agents.fake_llm import FakeLLM, reply
from tests import cold_workflows as flows
from tests.helpers import ROOT
from tests.test_durability import Spawn, start_worker, stop_worker

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("workflow", "provider"),
    [(flows.one_openai_call, "openai"), (flows.one_anthropic_call, "anthropic")],
)
async def test_a_cold_workers_first_call_is_sent_once_and_no_lease_is_lost(
    fake: FakeLLM, orch: Orchestrator, spawn_worker: Spawn, workflow: Any, provider: str
) -> None:
    fake.answer_with(lambda request: reply("hello"))
    env = {
        "OPENAI_BASE_URL": fake.openai_url,
        "OPENAI_API_KEY": "sk-test",
        "ANTHROPIC_BASE_URL": fake.anthropic_url,
        "ANTHROPIC_API_KEY": "sk-ant-test",
    }
    workers = [
        await start_worker(spawn_worker, module="tests.cold_workflows", lease_ttl=1.0, **env)
        for _ in "ab"
    ]
    try:
        handle = await orch.start(workflow, "say hello", run_id=f"cold-{provider}")
        assert await handle.result(timeout=60) == "hello"
    finally:
        for proc in workers:
            await stop_worker(proc)
    output = "".join(line for proc in workers for line in proc.output)  # type: ignore[attr-defined]
    assert len(fake.requests) == 1, f"{len(fake.requests)} requests for one call:\n{output}"
    assert fake.requests[0].protocol == provider
    events = await orch.store.read_log(handle.run_id)
    assert sum(e.type == "activity_scheduled" for e in events) == 1, output
    # Nothing imported on the event loop: the loop-lag watchdog names what blocked it.
    # (On a machine whose cores are busy elsewhere a worker may still be starved past a
    # 1 s lease; the watchdog then sees no frame, and the run is replayed, not re-paid.)
    blocked = [part for part in output.split("event loop blocked")[1:] if "_find_and_load" in part]
    assert not blocked, output


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_providers_first_call_imports_and_builds_nothing_on_the_loop(
    fake: FakeLLM, provider: str
) -> None:
    """What the SDKs leave for their first response (pydantic schemas of the response
    models, OpenTelemetry's propagators) is done where the client is made, in a
    thread: a loaded CI run saw it hold a cold worker's loop for 1.8 s."""
    fake.answer_with(lambda request: reply("hello"))
    url = fake.anthropic_url if provider == "anthropic" else fake.openai_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.cold_first_call", provider, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen == {"imports": [], "schemas": []}, seen
    assert len(fake.requests) == 1
