"""The dynamic pipeline end to end: the fake LLM server plays planner, subagents, judge
and integrator (over the official openai SDK), the engine runs on real Redis, and a
scripted human answers the inbox."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from taskloom import HumanTaskClosedError, Orchestrator, RunFailedError, UserError
from taskloom.agents.fake_llm import FakeLLM, unauthorized
from taskloom.pipeline.pipeline import pipeline_events
from taskloom.terminal.console import show
from taskloom.testing.simulated import SimulatedTeam, kind_of, task_of
from taskloom.verifiers import FunctionVerifier
from tests.helpers import act, running
from tests.test_durability import Spawn, start_worker, stop_worker, wait_for

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"


async def events_of(orch: Orchestrator, run_id: str) -> list[dict[str, Any]]:
    return [e async for e in pipeline_events(orch.handle(run_id), follow=False)]


async def test_a_goal_is_planned_run_as_inputs_arrive_verified_and_integrated(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {
        "activities": [act("a"), act("b"), act("c", "a"), act("d", "b", "c")],
        "integrate": "join the parts",
    }
    slow = {"write part b": 0.6}
    team = SimulatedTeam(plans=[plan], latency={})

    def work(task: str, feedback: str | None) -> str:
        return f"text of {task.split()[-1]}"

    team.work = work
    fake.answer_with(lambda r: _delayed(team(r), slow.get(task_of(r), 0.0)))
    async with running(orch.worker(concurrency=8)):
        handle = await orch.submit("write a report in parts", model=MODEL)
        result = await handle.result(timeout=30)
    assert set(result["activities"]) == {"a", "b", "c", "d"}
    assert all(w["status"] == "accepted" for w in result["activities"].values())
    assert result["answer"].startswith("[simulated] Integrated answer.")
    for part in "abcd":
        assert f"text of {part}" in result["answer"]
    log = await events_of(orch, handle.run_id)
    order = [(e["id"], e["state"]) for e in log if e["event"] == "activity"]
    # c needs only a: it starts before the slow b is accepted (not wave by wave)
    assert order.index(("c", "started")) < order.index(("b", "accepted"))
    assert order.index(("d", "started")) > order.index(("b", "accepted"))
    assert order.index(("d", "started")) > order.index(("c", "accepted"))
    assert [e["version"] for e in log if e["event"] == "planned"] == [1]
    assert team.calls == {"planner": 1, "work": 4, "integrator": 1}
    assert result["tokens"]["planning"] > 0 and result["tokens"]["work"] > 0
    assert result["cost_usd"] > 0


def _delayed(step: Any, latency: float) -> Any:
    import dataclasses

    return dataclasses.replace(step, latency=max(step.latency, latency)) if latency else step


async def decide(
    orch: Orchestrator,
    run_id: str,
    decision: str,
    *,
    data: Any = None,
    note: str = "",
    timeout: float = 20,
) -> dict[str, Any]:
    """The scripted human: wait for the next open question of the run (or of its child
    runs, whose ids start with the run's), answer it."""
    async with asyncio.timeout(timeout):
        while True:
            tasks = [t for t in await orch.human_tasks.list() if t.run_id.startswith(run_id)]
            if tasks:
                task = tasks[0]
                await orch.human_tasks.decide(task.id, decision, by="ana", note=note, data=data)
                return task.to_dict()
            await asyncio.sleep(0.02)


async def accepted(orch: Orchestrator, run_id: str, act_id: str) -> bool:
    """Whether activity ``act_id`` of the run has been accepted (for ``wait_until``)."""
    return any(
        e["event"] == "activity" and e["id"] == act_id and e["state"] == "accepted"
        for e in await events_of(orch, run_id)
    )


def integrated_inputs(team: SimulatedTeam) -> str:
    """What the integrator was shown (its system prompt)."""
    (request,) = team.requests["integrator"]
    return str(request.messages[0]["content"])


async def test_an_invalid_plan_goes_back_to_the_planner_with_the_problems(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    cyclic = {"activities": [act("a", "b"), act("b", "a"), act("c", role="astrologer")]}
    good = {"activities": [act("a"), act("b", "a")]}
    team = SimulatedTeam(plans=[cyclic, good])
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("two linked parts", model=MODEL)
        result = await handle.result(timeout=30)
    assert result["plan_version"] == 1 and set(result["activities"]) == {"a", "b"}
    second = str(team.requests["planner"][1].messages[0]["content"])
    assert "cycle" in second and "astrologer" in second  # the problems went back
    log = await events_of(orch, handle.run_id)
    (invalid,) = [e for e in log if e["event"] == "plan_invalid"]
    assert any("cycle" in p for p in invalid["problems"])
    assert any("unknown role 'astrologer'" in p for p in invalid["problems"])


async def test_a_planner_that_never_makes_a_valid_plan_is_escalated(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    team = SimulatedTeam(plans=[{"activities": [act("a", role="astrologer")]}])
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("impossible", model=MODEL, max_plan_attempts=2)
        task = await decide(orch, handle.run_id, "edit", data={"plan": {"activities": [act("x")]}})
        result = await handle.result(timeout=30)
    assert task["title"] == "The planner could not produce a valid plan"
    assert "astrologer" in task["context"]["problems"]
    assert team.calls["planner"] == 2
    assert set(result["activities"]) == {"x"}  # the person's plan ran


async def test_a_failed_verification_is_retried_with_the_feedback(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    rules = {"rules": {"banned": ["lorem"]}, "max_retries": 2}
    team = SimulatedTeam(
        plans=[{"activities": [act("a", verify=rules), act("b")]}],
        work=lambda task, feedback: (
            ("final text" if feedback else "lorem ipsum draft") if task.endswith(" a") else "ok"
        ),
    )
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("a text without filler", model=MODEL)
        result = await handle.result(timeout=30)
    a = result["activities"]["a"]
    assert a["status"] == "accepted" and a["attempts"] == 2 and a["output"] == "final text"
    retry = [r for r in team.requests["work"] if "write part a" in task_of(r)][1]
    assert "lorem" in str(retry.messages[0]["content"])  # the verifier's feedback was sent
    assert "lorem ipsum draft" not in integrated_inputs(team)  # the failed one never got there


async def test_an_uncertain_verdict_escalates_and_approve_resumes_the_run(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    verify = {"judge": {"rubric": "accurate", "threshold": 0.8}}
    team = SimulatedTeam(
        plans=[{"activities": [act("a", verify=verify), act("b")]}],
        judge=lambda output, rubric: {"score": 0.7, "reasons": ["borderline"], "feedback": ""},
    )
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("be accurate", model=MODEL)
        task = await decide(orch, handle.run_id, "approve", note="fine")
        result = await handle.result(timeout=30)
    assert task["context"]["verdicts"][-1]["status"] == "uncertain"
    assert task["context"]["activity"]["id"] == "a" and task["context"]["goal"] == "be accurate"
    assert result["activities"]["a"]["decided_by"] == "ana"
    assert result["activities"]["a"]["status"] == "accepted" and result["escalations"] == 1


async def test_an_edited_output_is_validated_and_continues_the_run(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    verify = {"rules": {"banned": ["secret"]}, "max_retries": 0}
    plan = {"activities": [act("a", verify=verify), act("b", "a")]}
    team = SimulatedTeam(plans=[plan], work=lambda task, fb: f"secret notes for {task}")
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("edit me", model=MODEL)
        await decide(orch, handle.run_id, "edit", data={"output": {"not": "text"}})
        second = await decide(orch, handle.run_id, "edit", data={"output": "edited by ana"})
        result = await handle.result(timeout=30)
    assert "not valid" in second["context"]["reason"]  # the bad edit was refused, asked again
    assert result["activities"]["a"]["output"] == "edited by ana"
    b_request = next(r for r in team.requests["work"] if "write part b" in task_of(r))
    assert "edited by ana" in str(b_request.messages[0]["content"])  # as if produced by a


async def test_a_rejected_output_never_reaches_the_integrator(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    verify = {"rules": {"banned": ["wrong"]}, "max_retries": 0}
    plan = {"activities": [act("a", verify=verify), act("b"), act("c", "a")]}
    team = SimulatedTeam(
        plans=[plan], work=lambda task, fb: "wrong" if task.endswith(" a") else f"ok {task}"
    )
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("reject one", model=MODEL)
        await decide(orch, handle.run_id, "reject")
        result = await handle.result(timeout=30)
    states = {i: w["status"] for i, w in result["activities"].items()}
    assert states == {"a": "rejected", "b": "accepted", "c": "blocked"}
    assert "wrong" not in integrated_inputs(team) and "ok write part b" in integrated_inputs(team)
    assert not any("write part c" in task_of(r) for r in team.requests["work"])


def works_for(team: SimulatedTeam, part: str) -> int:
    return sum(1 for r in team.requests.get("work", []) if task_of(r).endswith(f"part {part}"))


async def test_a_replan_reuses_finished_work_and_cancels_dropped_activities(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    unsure = {"judge": {"rubric": "on topic", "threshold": 0.8}}
    v1 = {"activities": [act("a"), act("b", verify=unsure), act("c"), act("d", "c")]}
    v2 = {"activities": [act("a"), act("b2"), act("e", "a")]}
    team = SimulatedTeam(
        plans=[v1, v2],
        judge=lambda output, rubric: {"score": 0.7, "reasons": ["unsure"], "feedback": ""},
    )
    fake.answer_with(lambda r: _delayed(team(r), 1.0 if task_of(r).endswith("part c") else 0))
    async with running(orch.worker()):
        handle = await orch.submit("replan me", model=MODEL)
        await decide(orch, handle.run_id, "replan", note="split b differently")
        result = await handle.result(timeout=30)
    assert result["plan_version"] == 2
    assert set(result["activities"]) == {"a", "b2", "e"}
    assert result["activities"]["a"]["reused"] is True
    assert works_for(team, "a") == 1, "a finished in v1: the fake saw no second request"
    assert works_for(team, "d") == 0, "d was waiting on c when the re-plan stopped new work"
    log = await events_of(orch, handle.run_id)
    (replanned,) = [e for e in log if e["event"] == "replanned"]
    assert replanned["reused"] == {"a": "a"}
    assert sorted(replanned["dropped"]) == ["b", "c", "d"]
    stopped = [e for e in log if e["event"] == "activity" and e["id"] == "d"]
    assert [(e["state"], e.get("go")) for e in stopped] == [("started", False), ("cancelled", None)]
    second = str(team.requests["planner"][1].messages[0]["content"])
    assert "split b differently" in second and "Previous plan" in second


async def test_a_decomposed_activity_runs_as_a_child_run_within_the_depth_limit(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    parent = {"activities": [act("a", split=True), act("b")]}
    child = {"activities": [act("s1", split=True), act("s2")]}

    def work(task: str, feedback: str | None) -> str:
        if "decompose" in task or task.endswith("part s1"):  # s1 asks though not offered
            return '{"decompose": "three sub-parts"}'
        return f"text of {task.split()[-1]}"

    team = SimulatedTeam(plans=[parent, child], work=work)
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("deep work", model=MODEL, max_depth=1)
        task = await decide(orch, f"{handle.run_id}.", "reject")  # s1, in the child run
        result = await handle.result(timeout=30)
    assert "depth limit 1" in task["title"] or "depth limit 1" in task["context"]["reason"]
    assert team.calls["planner"] == 2 and team.calls["integrator"] == 2
    offered = [task_of(r) for r in team.requests["work"] if "decompose" in task_of(r)]
    assert len(offered) == 1, "only a (depth 0) was offered a sub-plan, not s1 (depth 1)"
    a = result["activities"]["a"]
    assert a["status"] == "accepted" and "text of s2" in a["output"]
    assert "text of s1" not in a["output"]  # rejected in the child: not integrated there
    child_run = await orch.handle(task["run_id"]).info()
    assert child_run.parent == {"run_id": handle.run_id, "seq": child_run.parent["seq"]}


async def test_a_sigkilled_worker_mid_pipeline_repeats_no_recorded_model_call(
    fake: FakeLLM, orch: Orchestrator, spawn_worker: Spawn
) -> None:
    judged = {"judge": {"rubric": "specific", "threshold": 0.5}}
    n = 12
    plan = {"activities": [act(f"s{i}", verify=judged) for i in range(n)]}
    team = SimulatedTeam(
        plans=[plan], work=lambda task, fb: f"text of {task.split()[-1]}", latency={"work": 0.25}
    )
    fake.answer_with(team)
    env = {"OPENAI_BASE_URL": fake.openai_url, "OPENAI_API_KEY": "sk-test"}
    first = await start_worker(spawn_worker, module="tests.subagent_workflows", **env)
    handle = await orch.submit("twelve sections", model=MODEL, max_parallel=4)

    async def accepted() -> int:
        return sum(1 for e in await events_of(orch, handle.run_id) if e.get("state") == "accepted")

    await wait_for(lambda: accepted_at_least(accepted, 3), "3 accepted activities")
    await stop_worker(first)
    before = [
        e.data["result"]
        for e in await orch.store.read_log(handle.run_id)
        if e.type == "activity_completed"
    ]
    agents = [r for r in before if isinstance(r, dict) and "calls" in r]
    texts = {r["text"] for r in agents if r["text"].startswith("text of s")}
    judged_outputs = {r["output"] for r in before if isinstance(r, dict) and "verdicts" in r}
    assert 3 <= len(judged_outputs) < n, "killed mid-pipeline"
    second = await start_worker(spawn_worker, module="tests.subagent_workflows", **env)
    try:
        result = await handle.result(timeout=60)
    finally:
        await stop_worker(second)
    assert {i for i, w in result["activities"].items() if w["status"] == "accepted"} == {
        f"s{i}" for i in range(n)
    }
    assert team.calls["planner"] == 1 and team.calls["integrator"] == 1
    sent = Counter(task_of(r).split()[-1] for r in team.requests["work"])
    assert len(texts) >= 3
    for text in texts:
        assert sent[text.removeprefix("text of ")] == 1, f"{text} was recorded, then sent again"
    judge_sent = Counter(
        str(r.messages[0]["content"]).split("<<<OUTPUT\n")[-1].split("\nOUTPUT>>>")[0]
        for r in team.requests["judge"]
    )
    for output in judged_outputs:
        assert judge_sent[output] == 1, f"the verdict on {output!r} was recorded, then asked again"


async def accepted_at_least(count: Callable[[], Awaitable[int]], n: int) -> bool:
    return await count() >= n


async def test_pii_is_redacted_by_one_policy_and_escalated_by_another(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {
        "activities": [
            act("a", verify={"pii": "redact"}),
            act("b", verify={"pii": "escalate"}),
            act("c", "a"),
        ]
    }
    team = SimulatedTeam(
        plans=[plan], work=lambda task, fb: f"{task}: write to ana.lopez@example.com"
    )
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("contacts", model=MODEL)
        task = await decide(orch, handle.run_id, "reject")
        result = await handle.result(timeout=30)
    assert "Activity 'b'" in task["title"] and "uncertain" in task["context"]["reason"]
    a = result["activities"]["a"]
    assert a["status"] == "accepted" and "ana.lopez@example.com" not in a["output"]
    assert "redacted" in a["output"]
    c_request = next(r for r in team.requests["work"] if task_of(r).endswith("part c"))
    assert "ana.lopez@example.com" not in str(c_request.messages[0]["content"])
    assert result["activities"]["b"]["status"] == "rejected"
    assert "write part b" not in integrated_inputs(team)


async def test_outputs_that_contradict_each_other_are_escalated_before_integration(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {"activities": [act("a"), act("b"), act("c")]}
    team = SimulatedTeam(
        plans=[plan],
        work=lambda task, fb: f"see [ref:{'a' if task.endswith('b') else 'nowhere'}]",
    )
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("cite each other", model=MODEL)
        task = await decide(orch, handle.run_id, "reject")
        result = await handle.result(timeout=30)
    assert task["title"].startswith("Cross-check references: activity 'a' cites 'nowhere'")
    assert {"a", "c"} <= set(task["context"]["outputs"])  # both cite nothing
    states = {i: w["status"] for i, w in result["activities"].items()}
    assert states == {"a": "rejected", "b": "accepted", "c": "rejected"}
    assert "nowhere" not in integrated_inputs(team)


async def test_a_failing_final_verification_retries_the_integrator_with_feedback(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {"activities": [act("a")], "final": {"rules": {"patterns": {"": "^Summary"}}}}
    team = SimulatedTeam(plans=[plan])
    team.integrate = lambda parts: "Summary: " + parts if team.calls["integrator"] > 1 else parts
    fake.answer_with(team)
    async with running(orch.worker()):
        result = await (await orch.submit("summarize", model=MODEL)).result(timeout=30)
    assert result["answer"].startswith("Summary: ")
    second = str(team.requests["integrator"][1].messages[0]["content"])
    assert "Feedback on your previous answer" in second and "Summary" in second


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"goal": "   "}, "needs a goal"),
        ({"goal": "x" * 20_001}, "characters"),
        ({"goal": "fine", "budget_usd": 0}, "allows no model call"),
        ({"goal": "fine", "template": "horoscope"}, "no workflow template"),
        ({"goal": "fine", "plan": {"activities": []}}, "activities"),
        ({"goal": "fine", "max_parallel": 0}, "max_parallel"),
        (
            {"goal": "fine", "plan": {"activities": [act(f"s{i}") for i in range(10_000)]}},
            "10000 activities; at most 100",
        ),
    ],
)
async def test_bad_submissions_are_refused_with_what_to_fix(
    orch: Orchestrator, options: dict[str, Any], message: str
) -> None:
    goal = options.pop("goal")
    with pytest.raises(UserError, match=message):
        await orch.submit(goal, **options)
    assert await orch.list_runs() == []  # nothing was started


async def test_a_plan_over_the_limits_goes_back_then_to_a_person(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    team = SimulatedTeam(plans=[{"activities": [act(f"s{i}") for i in range(150)]}])
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("everything", model=MODEL, max_plan_attempts=2)
        task = await decide(orch, handle.run_id, "reject")
        with pytest.raises(RunFailedError, match="no valid plan"):
            await handle.result(timeout=30)
    assert "150 activities" in task["context"]["problems"]
    assert "at most 100" in str(team.requests["planner"][1].messages[0]["content"])
    assert "work" not in team.calls  # nothing of the refused plan ran


async def test_a_verifier_that_hangs_is_an_error_not_a_failure_and_escalates(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    async def hangs(output: Any) -> bool:
        await asyncio.sleep(3600)
        return True

    slow = FunctionVerifier(hangs, name="hangs", timeout=0.1)
    plan = {"activities": [act("a", verify={"custom": ["hangs"], "max_retries": 3}), act("b")]}
    team = SimulatedTeam(plans=[plan])
    fake.answer_with(team)
    async with running(orch.worker(verifiers={"hangs": slow})):
        handle = await orch.submit("check slowly", model=MODEL)
        task = await decide(orch, handle.run_id, "approve")
        with pytest.raises(HumanTaskClosedError, match="already decided"):
            await orch.human_tasks.decide(task["id"], "reject", by="bo")
        result = await handle.result(timeout=30)
    assert "could not check" in task["context"]["reason"]
    assert works_for(team, "a") == 1, "a broken verifier never burns the output's retries"
    assert result["activities"]["a"]["status"] == "accepted"
    assert result["activities"]["a"]["decided_by"] == "ana"


async def test_a_retry_moves_to_the_fallback_model_and_a_persons_note_reaches_the_model(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    verify = {"rules": {"banned": ["draft"]}, "max_retries": 1, "fallback_model": "openai:gpt-4.1"}
    team = SimulatedTeam(
        plans=[{"activities": [act("a", verify=verify)]}], work=lambda t, f: "draft"
    )
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("no drafts", model=MODEL)
        await decide(orch, handle.run_id, "retry", note="use the word final")
        team.work = lambda t, f: "final"
        result = await handle.result(timeout=30)
    models = [r.model for r in team.requests["work"]]
    assert models == ["gpt-4.1-mini", "gpt-4.1", "gpt-4.1"]
    assert "use the word final" in str(team.requests["work"][2].messages[0]["content"])
    assert result["activities"]["a"]["output"] == "final"


async def test_a_template_shapes_the_planners_prompt(fake: FakeLLM, orch: Orchestrator) -> None:
    team = SimulatedTeam(plans=[{"activities": [act("a")]}])
    fake.answer_with(team)
    async with running(orch.worker()):
        await (await orch.submit("heat pumps", template="research_report", model=MODEL)).result(
            timeout=30
        )
    prompt = str(team.requests["planner"][0].messages[0]["content"])
    assert "research_report" in prompt and "cited" in prompt


async def test_an_exhausted_budget_is_escalated_not_overspent(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    team = SimulatedTeam()
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit(
            "cheap", model=MODEL, plan={"activities": [act("a")]}, budget_tokens=500
        )
        task = await decide(orch, handle.run_id, "reject")
        with pytest.raises(RunFailedError, match="no activity output was accepted"):
            await handle.result(timeout=30)
    assert "budget" in task["context"]["reason"]
    assert "work" not in team.calls  # refused before it was sent
    usage = await orch.budget(handle.run_id)
    assert usage.spent_tokens == 0


async def test_an_integrator_that_fails_is_escalated_and_an_edit_is_the_answer(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    team = SimulatedTeam(plans=[{"activities": [act("a")]}])
    fake.answer_with(lambda r: unauthorized() if kind_of(r) == "integrator" else team(r))
    async with running(orch.worker()):
        handle = await orch.submit("integrate by hand", model=MODEL)
        task = await decide(orch, handle.run_id, "edit", data={"output": "written by ana"})
        result = await handle.result(timeout=30)
    assert "integrator" in task["context"]["reason"] and "approve" not in task["decisions"]
    assert result["answer"] == "written by ana"


async def test_a_follow_up_builds_on_a_finished_run_and_reuses_its_work(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    first = {"activities": [act("a"), act("b"), act("c", "a")]}
    follow = {"activities": [act("a"), act("c", "a"), act("d", "c")]}
    team = SimulatedTeam(plans=[first, follow])
    fake.answer_with(team)
    async with running(orch.worker()):
        one = await orch.submit("a report", model=MODEL)
        await one.result(timeout=30)
        two = await orch.submit("a report, plus a part d", model=MODEL, previous=one.run_id)
        result = await two.result(timeout=30)
    assert works_for(team, "a") == 1 and works_for(team, "c") == 1, "reused, not re-sent"
    assert works_for(team, "d") == 1
    assert result["activities"]["a"]["reused"] and result["activities"]["c"]["reused"]
    planner = str(team.requests["planner"][1].messages[0]["content"])
    assert "Previous plan" in planner and "Revise the previous plan" in planner


async def test_a_follow_up_of_a_run_that_is_not_a_finished_pipeline_is_refused(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    team = SimulatedTeam(plans=[{"activities": [act("a")]}])
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("x", model=MODEL, previous="no-such-run")
        with pytest.raises(RunFailedError, match="no run 'no-such-run'"):
            await handle.result(timeout=30)
    assert "planner" not in team.calls


async def test_a_missing_key_fails_the_run_at_once_instead_of_asking_the_planner_again(
    orch: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with running(orch.worker()):
        handle = await orch.submit("anything", model=MODEL)
        with pytest.raises(RunFailedError, match="OPENAI_API_KEY"):
            await handle.result(timeout=30)
    assert await orch.human_tasks.list(run_id=handle.run_id) == []


async def test_the_judge_sees_the_inputs_an_output_was_made_from(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    judged = {"judge": {"rubric": "uses the facts it was given", "threshold": 0.5}}
    plan = {"activities": [act("a"), act("b", "a", verify=judged)]}
    team = SimulatedTeam(plans=[plan], work=lambda task, fb: f"facts of {task.split()[-1]}")
    fake.answer_with(team)
    async with running(orch.worker()):
        await (await orch.submit("two parts", model=MODEL)).result(timeout=30)
    (judge,) = team.requests["judge"]
    assert "facts of a" in str(judge.messages[0]["content"])  # b's input, from a


async def test_a_planner_that_never_made_a_plan_leaves_one_to_edit(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    """Issue 16: the rescue form was empty ('Last plan: null'); a person had to write a
    plan's JSON from nothing. It now holds a one-activity plan for the goal."""
    team = SimulatedTeam(plans=["I would rather not plan this."])
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("a short note on tides", model=MODEL, max_plan_attempts=1)
        async with asyncio.timeout(60):  # the planner's own retries come first
            while not (tasks := await orch.human_tasks.list(run_id=handle.run_id)):
                await asyncio.sleep(0.02)
        seen = tasks[0].context
        shown = io.StringIO()
        show(tasks[0], shown)  # what the terminal shows before asking
        edit = {"plan": seen["last_plan"]}  # taken as it came
        await orch.human_tasks.decide(tasks[0].id, "edit", by="ana", data=edit)
        result = await handle.result(timeout=30)
    assert "why:" in shown.getvalue() and "a short note on tides" in shown.getvalue()
    assert seen["last_plan"]["activities"][0]["instructions"] == "a short note on tides"
    assert set(result["activities"]) == {"work"}  # the starting plan ran as it was
    assert result["activities"]["work"]["status"] == "accepted"
