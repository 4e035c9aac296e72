"""Re-running an ended pipeline run from one activity: the old plan is given again, the
outputs the old run accepted before that activity are reused (read from a completed
run's result, or back from a failed run's log), the activity and all built on it run
again."""

from __future__ import annotations

from typing import Any

import pytest

from taskloom import Context, Orchestrator, RunFailedError, UserError, workflow
from taskloom.agents.fake_llm import FakeLLM
from taskloom.testing.simulated import SimulatedTeam, task_of
from tests.helpers import act, running
from tests.test_pipeline import MODEL, decide, events_of, works_for

pytestmark = pytest.mark.anyio


@workflow(name="rerun.plain")
async def plain(ctx: Context) -> str:
    return "not a pipeline"


def inputs_sent(team: SimulatedTeam, part: str) -> list[str]:
    """The prompts the subagent of ``part`` was sent, in order."""
    work = team.requests.get("work", [])
    return [str(r.messages) for r in work if task_of(r).endswith(f"part {part}")]


async def test_a_completed_run_reruns_from_an_activity_and_reuses_the_rest(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {"activities": [act("a"), act("b", "a"), act("c", "b"), act("d")]}
    team = SimulatedTeam(plans=[plan], work=lambda task, fb: f"text of {task.split()[-1]}")
    fake.answer_with(team)
    async with running(orch.worker()):
        old = await orch.submit("four parts", model=MODEL, budget_usd=1.5)
        await old.result(timeout=30)
        new = await orch.rerun(old.run_id, from_activity="b")
        result = await new.result(timeout=30)
    assert team.calls["planner"] == 1, "the old plan is given again: no planner call"
    assert [works_for(team, p) for p in "abcd"] == [1, 2, 2, 1]
    assert {i: bool(w.get("reused")) for i, w in result["activities"].items()} == {
        "a": True,
        "b": False,
        "c": False,
        "d": True,
    }
    assert "text of a" in inputs_sent(team, "b")[1], "b is given a's reused output"
    (follow,) = [e for e in await events_of(orch, new.run_id) if e["event"] == "follow_up"]
    assert follow["previous"] == old.run_id and follow["rerun"] == ["b", "c"]
    assert follow["reusable"] == ["a", "d"] and follow["version"] == 1
    assert (await orch.budget(new.run_id)).max_usd == (await orch.budget(old.run_id)).max_usd


async def test_a_failed_run_reruns_with_what_its_log_says_was_accepted(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    no_secret = {"rules": {"banned": ["secret"]}, "max_retries": 0}
    plan = {
        "activities": [act("a", verify=no_secret), act("b"), act("c", "a", "b")],
        "final": {"rules": {"banned": ["wrong"]}, "max_retries": 0},
    }
    answers = iter(["a wrong answer", "a right answer"])
    team = SimulatedTeam(
        plans=[plan],
        work=lambda task, fb: "secret draft" if task.endswith(" a") else f"text of {task[-1]}",
        integrate=lambda parts: next(answers),
    )
    fake.answer_with(team)
    async with running(orch.worker()):
        old = await orch.submit("three parts", model=MODEL)
        await decide(orch, old.run_id, "edit", data={"output": "clean a, by ana"})
        await decide(orch, old.run_id, "reject")  # the integrated answer
        with pytest.raises(RunFailedError, match="rejected"):
            await old.result(timeout=30)
        new = await orch.rerun(old.run_id, from_activity="c")
        result = await new.result(timeout=30)
    assert result["answer"] == "a right answer"
    assert [works_for(team, p) for p in "abc"] == [1, 1, 2]
    assert result["activities"]["a"]["reused"] and result["activities"]["b"]["reused"]
    assert result["activities"]["a"]["output"] == "clean a, by ana"  # the edit, not the draft
    again = inputs_sent(team, "c")[1]
    assert "clean a, by ana" in again and "text of b" in again


async def test_what_cannot_be_rerun_is_refused_with_why(
    fake: FakeLLM, orch: Orchestrator, make_worker: Any
) -> None:
    team = SimulatedTeam(plans=[{"activities": [act("a")]}])
    fake.answer_with(team)
    async with running(orch.worker(workflows=[plain])):
        done = await orch.submit("one part", model=MODEL)
        await done.result(timeout=30)
        with pytest.raises(UserError, match="no activity 'zz'; its activities are: a"):
            await orch.rerun(done.run_id, from_activity="zz")
        other = await orch.start(plain)
        await other.result(timeout=30)
        with pytest.raises(UserError, match="not a pipeline run"):
            await orch.rerun(other.run_id, from_activity="a")
    waiting = await orch.submit("nobody runs it", model=MODEL)
    with pytest.raises(UserError, match="still pending"):
        await orch.rerun(waiting.run_id, from_activity="a")
