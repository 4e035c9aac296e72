"""The next attempt of a step whose delivery reaches its worker while the failed attempt
is still being recorded there runs as soon as the recording is done.

Found in W7 (a retry storm): under load, the retry loop moved an attempt to the queue
(its backoff, 10 ms, had passed) before the worker that ran the failed attempt had the
reply of its failure's write; that worker read the new delivery, saw the step still
running here and left it pending, and it waited for the visibility timeout (a lease):
one run in ten took 1.3 s instead of 0.3 s. Here the delivery of attempt 2 is put on the
queue by hand while attempt 1 runs (the race made certain), with a lease of 30 s and a
backoff of 60 s, so only the fix lets the run end within the test's wait.
"""

from __future__ import annotations

import asyncio

import pytest

from taskloom import Context, Orchestrator, RetryPolicy, activity, activity_info, workflow
from taskloom.engine import serde
from taskloom.engine.keys import Keys
from taskloom.engine.tasks import task_fields
from tests.helpers import running, wait_until

pytestmark = pytest.mark.anyio

STARTED = asyncio.Event()
FAIL = asyncio.Event()
ATTEMPTS: list[int] = []


@activity(name="next.flaky", retry=RetryPolicy(max_attempts=3, initial_interval=60.0))
async def flaky(x: int) -> int:
    ATTEMPTS.append(activity_info().attempt)
    if activity_info().attempt == 1:
        STARTED.set()
        await FAIL.wait()
        raise ConnectionError("attempt 1 fails")
    return x * 2


@workflow(name="next.one")
async def one(ctx: Context, x: int) -> int:
    return int(await ctx.run(flaky, x))


@pytest.fixture(autouse=True)
def _reset() -> None:
    global STARTED, FAIL  # an asyncio.Event belongs to the loop that first awaits it
    STARTED, FAIL = asyncio.Event(), asyncio.Event()
    ATTEMPTS.clear()


async def test_the_next_attempt_delivered_during_the_failure_runs_at_once(
    orch: Orchestrator,
) -> None:
    worker = orch.worker(workflows=[one], activities=[flaky], lease_ttl=30.0)
    async with running(worker):
        handle = await orch.start(one, 21)
        await asyncio.wait_for(STARTED.wait(), 30)
        (seq,) = [e.data["seq"] async for e in handle.events(follow=False)
                  if e.type == "activity_scheduled"]  # fmt: skip
        fields = task_fields(
            run_id=handle.run_id,
            seq=seq,
            name="next.flaky",
            args_json=serde.dumps([21]),
            kwargs_json=serde.dumps({}),
            attempt=2,
            gen=1,
        )
        queue = orch.store.keys.queue(worker.queue)
        await orch.store.raw.xadd(queue, fields)

        async def read() -> bool:  # the worker has the delivery (attempt 1 ran locally)
            return int((await orch.store.raw.xpending(queue, Keys.GROUP))["pending"]) == 1

        await wait_until(read, "the worker to read the delivery")
        FAIL.set()  # attempt 1 fails now; its own retry is 60 s away
        assert await handle.result(timeout=15) == 42
    assert ATTEMPTS == [1, 2]
