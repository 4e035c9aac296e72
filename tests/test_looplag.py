"""The event-loop lag monitor (issue 12, finding 2): a worker whose loop is blocked
observes it in ``taskloom_event_loop_lag_seconds`` and says what blocked it."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from taskloom import activity, workflow
from taskloom.engine.context import Context
from taskloom.engine.metrics import Metrics
from tests.helpers import running, samples, value, wait_until

pytestmark = pytest.mark.anyio

LAG = "taskloom_event_loop_lag_seconds"


def hog_the_loop(seconds: float) -> None:
    """A sync call made on the event loop: the mistake the monitor is there to catch."""
    time.sleep(seconds)


@activity(name="blocking_step")
async def blocking_step(seconds: float) -> str:
    hog_the_loop(seconds)  # an async activity that blocks, as a careless one does
    return "done"


@workflow(name="blocks_once")
async def blocks_once(ctx: Context, seconds: float) -> str:
    result: str = await ctx.run(blocking_step, seconds)
    return result


def lagged(metrics: Metrics, at_least: str) -> float:
    """Lag measures in the histogram above bucket bound ``at_least``."""
    got = samples(metrics.render().decode())
    return value(got, f"{LAG}_count") - value(got, f"{LAG}_bucket", le=at_least)


async def test_a_blocked_loop_is_observed_and_the_warning_names_what_blocked(
    orch: Any, make_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    worker = make_worker(workflows=[blocks_once], activities=[blocking_step], metrics=metrics)
    assert worker.lag.warn_after == pytest.approx(0.5)  # half the 1 s lease
    caplog.set_level(logging.WARNING, logger="taskloom.engine.worker")
    async with running(worker):
        handle = await orch.start(blocks_once, 0.8)
        assert await handle.result(timeout=30) == "done"
        await wait_until(lambda: lagged(metrics, "0.6") >= 1, "the 0.8 s block in the histogram")
    warnings = [r.getMessage() for r in caplog.records if "event loop blocked" in r.getMessage()]
    named = [w for w in warnings if "task 'activity blocking_step" in w]  # the task running
    assert len(named) == 1, warnings
    assert f"worker {worker.worker_id}" in named[0]
    assert "hog_the_loop" in named[0] and "time.sleep" in named[0], named[0]  # and where
