"""Human tasks: a run waits for a person, holding nothing; one decision each; SLAs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskloom import (
    Context,
    Decide,
    Expire,
    HumanTaskClosedError,
    HumanTaskExpiredError,
    HumanTaskNotFoundError,
    ManualClock,
    Orchestrator,
    Reassign,
    RunCancelledError,
    UserError,
    workflow,
)
from taskloom.engine.metrics import Metrics
from tests.helpers import at_least, running, wait_until

pytestmark = pytest.mark.anyio


@workflow(name="h.refund")
async def refund(ctx: Context, amount: int, sla: float | None, chain: str) -> dict[str, Any]:
    fallback = {
        "reassign-then-reject": [Reassign("lead", sla=60), Decide("reject")],
        "expire": [Expire("nobody answered")],
        "none": [],
    }[chain]
    try:
        decision = await ctx.escalate(
            f"Refund {amount} EUR?",
            context={"amount": amount, "order": "A-17"},
            decisions=["approve", "reject"],
            assignee="ana",
            group="billing",
            sla=sla,
            fallback=fallback,
        )
    except HumanTaskExpiredError as exc:
        return {"expired": str(exc)}
    return {"decision": decision.decision, "by": decision.by, "note": decision.note}


async def test_a_decision_reaches_an_evicted_run_after_a_worker_restart(
    orch: Orchestrator, make_worker: Any
) -> None:
    inbox = orch.human_tasks
    async with running(make_worker(workflows=[refund])):
        handle = await orch.start(refund, 120, None, "none")
        (task,) = await wait_until(inbox.list, "the task in the inbox")
        assert (task.id, task.title, task.assignee) == (
            f"{handle.run_id}/0",
            "Refund 120 EUR?",
            "ana",
        )
        assert task.context == {"amount": 120, "order": "A-17"}

        async def evicted() -> bool:
            info = await handle.info()
            return (info.status, info.owner) == ("waiting", "")

        await wait_until(evicted, "the waiting run to leave memory")
    # No worker at all now; the decision is recorded on the run's log all the same.
    decision = await inbox.decide(task.id, "approve", by="ana", note="receipt checked")
    assert decision.decision == "approve"
    assert await inbox.list() == []
    async with running(make_worker(workflows=[refund])):
        result = await handle.result(timeout=10)
    assert result == {"decision": "approve", "by": "ana", "note": "receipt checked"}
    with pytest.raises(HumanTaskClosedError, match="already decided: 'approve' by ana"):
        await inbox.decide(task.id, "reject", by="bob")
    events = [e.type for e in await orch.store.read_log(handle.run_id)]
    assert events.count("human_decided") == 1


async def test_two_deciders_at_once_get_one_decision(orch: Orchestrator, make_worker: Any):
    inbox = orch.human_tasks
    async with running(make_worker(workflows=[refund])):
        handle = await orch.start(refund, 5, None, "none")
        (task,) = await wait_until(inbox.list, "the task")
        outcomes = await asyncio.gather(
            *(
                inbox.decide(task.id, d, by=who)
                for d, who in [("approve", "ana"), ("reject", "bob")]
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(o, HumanTaskClosedError) for o in outcomes) == 1
        winner = next(o for o in outcomes if not isinstance(o, BaseException))
        result = await handle.result(timeout=10)
    assert result["decision"] == winner.decision  # type: ignore[union-attr]
    assert (await inbox.get(task.id)).status == "decided"


async def test_bad_decisions_are_refused_clearly(orch: Orchestrator, make_worker: Any) -> None:
    inbox = orch.human_tasks
    async with running(make_worker(workflows=[refund])):
        handle = await orch.start(refund, 9, None, "none")
        (task,) = await wait_until(inbox.list, "the task")
        with pytest.raises(UserError, match=r"'maybe' is not a decision .* approve, reject"):
            await inbox.decide(task.id, "maybe", by="ana")
        with pytest.raises(HumanTaskNotFoundError, match="no human task 'nope/0'"):
            await inbox.decide("nope/0", "approve", by="ana")
        assert (await inbox.get(task.id)).status == "open", "nothing was recorded"
        await handle.cancel()
    with pytest.raises(UserError, match="Decide\\('later'\\) is not one of the decisions"):
        from taskloom.engine.human import task_spec

        task_spec(
            title="x",
            context=None,
            decisions=["yes"],
            assignee=None,
            group=None,
            sla=1,
            fallback=[Decide("later")],
        )


async def test_sla_breaches_walk_the_fallback_chain(orch: Orchestrator, make_worker: Any):
    clock, metrics, inbox = ManualClock(), Metrics(), orch.human_tasks
    async with running(make_worker(workflows=[refund], clock=clock, metrics=metrics)):
        handle = await orch.start(refund, 300, 3600, "reassign-then-reject")
        await wait_until(lambda: inbox.list(assignee="ana"), "ana's task")
        clock.advance(3601)
        (task,) = await wait_until(lambda: inbox.list(assignee="lead"), "the task to move on")
        assert task.fallback_used == 1 and await inbox.list(assignee="ana") == []
        clock.advance(61)
        result = await handle.result(timeout=10)
    assert result == {"decision": "reject", "by": "sla", "note": "decided by the SLA fallback"}
    breaches = [
        line for line in metrics.render().decode().splitlines()
        if line.startswith("taskloom_human_task_sla_breaches_total")
    ]  # fmt: skip
    assert breaches == ["taskloom_human_task_sla_breaches_total 2.0"]


async def test_an_expiring_fallback_raises_in_the_workflow(orch: Orchestrator, make_worker):
    clock = ManualClock()
    async with running(make_worker(workflows=[refund], clock=clock)):
        handle = await orch.start(refund, 1, 60, "expire")
        await wait_until(orch.human_tasks.list, "the task")
        clock.advance(61)
        assert await handle.result(timeout=10) == {"expired": "Refund 1 EUR?: nobody answered"}
    (task,) = [await orch.human_tasks.get(f"{handle.run_id}/0")]
    assert task.status == "expired"


async def test_open_tasks_are_listed_across_runs_by_assignee_run_and_age(
    orch: Orchestrator, make_worker: Any
) -> None:
    inbox = orch.human_tasks
    async with running(make_worker(workflows=[refund])):
        first = await orch.start(refund, 1, None, "none")
        await wait_until(inbox.list, "one task")
        await asyncio.sleep(0.3)
        second = await orch.start(refund, 2, None, "none")
        await wait_until(lambda: at_least(inbox.list(), 2), "two tasks")
        assert [t.run_id for t in await inbox.list(group="billing")] == [
            first.run_id,
            second.run_id,
        ]
        assert [t.run_id for t in await inbox.list(run_id=second.run_id)] == [second.run_id]
        assert [t.run_id for t in await inbox.list(older_than=0.25)] == [first.run_id]
        assert await inbox.list(assignee="nobody") == []
        assert await inbox.count_open() == 2
        for handle in (first, second):
            await handle.cancel()


async def test_a_cancelled_run_leaves_no_question_open(orch: Orchestrator, make_worker: Any):
    async with running(make_worker(workflows=[refund])):
        handle = await orch.start(refund, 30, None, "none")
        (task,) = await wait_until(lambda: orch.human_tasks.list(run_id=handle.run_id), "task")
        await handle.cancel()
        with pytest.raises(RunCancelledError):
            await handle.result(timeout=20)

        async def closed() -> bool:
            return await orch.human_tasks.list(run_id=handle.run_id) == []

        await wait_until(closed, "the task to close")
    assert (await orch.human_tasks.get(task.id)).status == "closed"
    with pytest.raises(HumanTaskClosedError):
        await orch.human_tasks.decide(task.id, "approve", by="ana")


async def test_a_runs_tasks_are_listed_with_its_child_runs_but_not_its_namesakes(
    orch: Orchestrator,
) -> None:
    from taskloom.engine.human import new_task, task_spec

    spec = task_spec(
        title="ok?",
        context=None,
        decisions=["approve"],
        assignee=None,
        group=None,
        sla=None,
        fallback=[],
    )
    for i, run_id in enumerate(("r1", "r1.0.1", "r12")):
        await orch.human_tasks.open(new_task(run_id, "0", spec, created_ms=1 + i))
    inbox = orch.human_tasks
    assert [t.run_id for t in await inbox.list(run_id="r1")] == ["r1"]
    assert [t.run_id for t in await inbox.list(run_id="r1", children=True)] == ["r1", "r1.0.1"]
