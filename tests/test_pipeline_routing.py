"""Routing escalations (issue 14): a plan's routes put each escalation in its reviewer's
queue, the route's SLA fallback chain applies to it, and routes naming nobody or a
malformed reviewer are refused at submit or plan validation. Real pipeline, the fake
LLM over the openai SDK, real Redis, a scripted person."""

from __future__ import annotations

import asyncio

import pytest

from taskloom import Orchestrator, RunFailedError, UserError
from taskloom.agents.fake_llm import FakeLLM
from taskloom.engine.human import HumanTask
from taskloom.errors import PlanError
from taskloom.pipeline.plan import Plan, RoleInfo, parse_plan, validate_plan
from taskloom.pipeline.templates import Template
from taskloom.testing.simulated import SimulatedTeam
from tests.helpers import act, running

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"
TABLE = "| Item | EUR |\n|---|---|\n| A | 10 |\n| B | 20 |\n| Total | 40 |"


async def open_tasks(orch: Orchestrator, run_id: str, n: int) -> list[HumanTask]:
    async with asyncio.timeout(30):
        while True:
            tasks = [t for t in await orch.human_tasks.list() if t.run_id == run_id]
            if len(tasks) >= n:
                return tasks
            await asyncio.sleep(0.02)


async def test_two_routes_put_each_escalation_in_its_reviewers_queue_with_its_sla_chain(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {
        "activities": [
            act("contract", verify={"pii": "escalate"}),
            act("figures", verify={"max_retries": 0}),
            act("notes"),
        ],
        "routes": [
            {
                "verifiers": ["pii", "injection"],
                "assignee": "legal@example.com",
                "sla": 60,
                "fallback": [{"reassign": "counsel", "sla": 60}, {"decide": "reject"}],
            },
            {"verifiers": ["totals", "figures"], "severity": ["fail"], "assignee": "cfo"},
        ],
    }
    said = {
        "contract": "Call the signatory at +49 30 1234 5678.",
        "figures": TABLE,
        "notes": "Nothing to report.",
    }
    team = SimulatedTeam(plans=[plan], work=lambda task, fb: said[task.split()[-1]])
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("contract and figures", model=MODEL, plan=plan, assignee="ops")
        tasks = {t.title.split("'")[1]: t for t in await open_tasks(orch, handle.run_id, 2)}
        legal, cfo = tasks["contract"], tasks["figures"]
        assert legal.assignee == "legal@example.com" and cfo.assignee == "cfo"
        assert [t.id for t in await orch.human_tasks.list(assignee="cfo")] == [cfo.id]
        assert legal.sla_due_ms is not None and cfo.sla_due_ms is None
        assert legal.context["routed_to"] == "legal@example.com"
        # The route's chain: past its SLA the item moves to counsel, then is rejected.
        inbox = orch.human_tasks
        now = legal.sla_due_ms + 1000
        steps = await inbox.apply_due_slas(now=now)
        assert ("reassigned", "to counsel") in [(s.kind, s.detail) for s in steps]
        moved = await inbox.get(legal.id)
        assert moved.assignee == "counsel" and moved.sla_due_ms == now + 60_000
        steps = await inbox.apply_due_slas(now=now + 61_000)
        assert ("decided", "reject") in [(s.kind, s.detail) for s in steps]
        await inbox.decide(cfo.id, "reject", by="cfo")
        result = await handle.result(timeout=30)
    works = result["activities"]
    assert works["contract"]["status"] == "rejected" and works["contract"]["decided_by"] == "sla"
    assert works["figures"]["status"] == "rejected" and works["figures"]["decided_by"] == "cfo"
    assert works["notes"]["status"] == "accepted" and result["escalations"] == 2


async def test_an_escalation_no_route_takes_goes_to_the_run_default_with_its_chain(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {
        "activities": [act("figures", verify={"max_retries": 0})],
        "routes": [{"activities": ["nothing-like-it"], "roles": ["writer"], "assignee": "x"}],
    }
    team = SimulatedTeam(plans=[plan], work=lambda task, fb: TABLE)
    fake.answer_with(team)
    async with running(orch.worker()):
        bad = await orch.submit("figures", model=MODEL, plan=plan)
        with pytest.raises(RunFailedError, match="route 1 names activities"):
            await bad.result(timeout=30)
        plan["routes"] = [{"verifiers": ["pii"], "assignee": "legal"}]
        handle = await orch.submit(
            "figures",
            model=MODEL,
            plan=plan,
            assignee="ops",
            sla=30,
            fallback=[{"expire": "nobody answered"}],
        )
        (task,) = await open_tasks(orch, handle.run_id, 1)
        assert task.assignee == "ops" and task.sla_due_ms is not None
        assert [f["kind"] for f in task.fallback] == ["expire"]
        await orch.human_tasks.decide(task.id, "reject", by="ops")
        with pytest.raises(RunFailedError, match="no activity output was accepted"):
            await handle.result(timeout=30)


async def test_routes_naming_nobody_or_a_malformed_reviewer_are_refused_at_submit(
    orch: Orchestrator,
) -> None:
    with pytest.raises(UserError, match="must name who gets its escalations"):
        await orch.submit("g", routes=[{"verifiers": ["pii"]}])
    with pytest.raises(UserError, match="not a valid e-mail address"):
        await orch.submit("g", routes=[{"verifiers": ["pii"], "assignee": "legal@"}])
    with pytest.raises(UserError, match="is not a name"):
        await orch.submit("g", assignee=" ana\n")
    with pytest.raises(UserError, match="one of"):
        await orch.submit("g", routes=[{"assignee": "a", "fallback": [{"sla": 5}]}])
    with pytest.raises(UserError, match="route 1"):
        Template(name="t", description="d", guidance="g", routes=[{"roles": ["writer"]}])


def test_plan_validation_refuses_routes_to_unknown_activities_or_roles() -> None:
    roles = {"writer": RoleInfo(name="writer", description="writes")}
    plan = Plan.model_validate(
        {
            "activities": [act("a")],
            "routes": [
                {"activities": ["a"], "assignee": "ana"},
                {"activities": ["b"], "roles": ["lawyer"], "group": "legal"},
            ],
        }
    )
    with pytest.raises(PlanError) as caught:
        validate_plan(plan, roles=roles)
    assert caught.value.problems == [
        "route 2 names activities ['b'] that are not in the plan (its activities: a)",
        "route 2 names roles ['lawyer'] that do not exist (the roles: writer)",
    ]
    with pytest.raises(PlanError, match="must name who gets its escalations"):
        parse_plan({"activities": [act("a")], "routes": [{"roles": ["writer"]}]})
