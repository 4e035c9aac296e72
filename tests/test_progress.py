"""A pipeline run's progress folded from its log (``taskloom.pipeline.progress``): plan
versions, each activity's state and numbers, and the timeline's bars, as recorded."""

from __future__ import annotations

import pytest

from taskloom import Orchestrator
from taskloom.agents.fake_llm import FakeLLM
from taskloom.pipeline.progress import RunProgress
from taskloom.testing.simulated import SimulatedTeam
from tests.helpers import act, running, wait_until
from tests.test_pipeline import MODEL, accepted, decide

pytestmark = pytest.mark.anyio


async def test_a_replanned_run_folds_into_versions_states_and_bars(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    no_lorem = {"rules": {"banned": ["lorem"]}, "max_retries": 1}
    strict = {"rules": {"banned": ["draft"]}, "max_retries": 0}
    v1 = {"activities": [act("a", verify=no_lorem), act("b", verify=strict), act("c", "a", "b")]}
    v2 = {"activities": [act("a", verify=no_lorem), act("b2"), act("c", "a", "b2")]}

    def work(task: str, feedback: str | None) -> str:
        if task.endswith(" a") and feedback is None:
            return "lorem"
        return "a draft" if task.endswith(" b") else f"text of {task[-2:]}"

    fake.answer_with(SimulatedTeam(plans=[v1, v2], work=work))
    async with running(orch.worker()):
        handle = await orch.submit("fold me", model=MODEL)
        await wait_until(lambda: accepted(orch, handle.run_id, "a"), "a to be accepted")
        await decide(orch, handle.run_id, "replan", note="split b")
        await handle.result(timeout=30)

    progress = RunProgress()
    events = [e async for e in handle.events(follow=False)]
    for event in events:
        progress.feed(event)
    assert progress.ended == "run_completed" and progress.answer_status == "pass"
    assert progress.start_ms <= progress.versions[0].at_ms <= progress.end_ms
    first, second = progress.versions
    assert (first.version, first.by, second.version) == (1, "planner", 2)
    assert second.reused == {"a": "a"} and sorted(second.dropped) == ["b", "c"]

    a1, b1, c1 = (first.steps[i] for i in "abc")
    assert (a1.state, a1.attempts, a1.verdict) == ("accepted", 2, "pass")
    assert a1.tokens > 0 and a1.cost_usd > 0
    assert (b1.state, b1.verdict, b1.decided) == ("replan", "fail", "replan by ana")
    assert any("draft" in r for r in b1.reasons)
    assert c1.state == "blocked" and "b" in c1.note

    a2, b2, c2 = (second.steps[i] for i in ("a", "b2", "c"))
    assert (a2.state, a2.reused_from, a2.attempts, a2.tokens) == ("reused", "v1", 2, a1.tokens)
    assert b2.state == c2.state == "accepted" and c2.attempts == 1

    assert [(b.kind, b.outcome, b.attempt) for b in a1.bars] == [
        ("work", "done", 1),
        ("verify", "fail", 1),
        ("work", "done", 2),
        ("verify", "pass", 2),
    ]
    assert [b.kind for b in b1.bars] == ["work", "verify", "wait"]
    assert b1.bars[-1].outcome == "replan"
    for bars in (a1.bars, b1.bars):
        assert all(b.end_ms is not None and b.start_ms <= b.end_ms for b in bars)
        ends = [b.end_ms or 0 for b in bars]
        assert all(end <= b.start_ms for end, b in zip(ends, bars[1:], strict=False))

    order = [r.label for r in progress.rows()]
    rows = {r.label: r for r in progress.rows()}
    assert order[0] == "Planning" and order[-1] == "Integration"
    assert [b.kind for b in rows["Planning"].bars] == ["plan", "plan"]
    assert rows["b"].state == "dropped" and rows["a"].state == "reused"
    assert rows["c"].bars[-1].start_ms > b1.bars[-1].end_ms  # c ran only in v2
    assert [b.kind for b in rows["Integration"].bars] == ["integrate", "verify"]

    again = RunProgress()  # the same log, folded again, tells the same
    for event in events:
        again.feed(event)
    assert again.rows() == progress.rows()


async def test_an_activity_with_a_sub_plan_names_its_child_run(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    parent = {"activities": [act("a", split=True), act("b")]}
    child = {"activities": [act("s1"), act("s2")]}

    def work(task: str, feedback: str | None) -> str:
        return '{"decompose": "two parts"}' if "decompose" in task else f"text of {task[-2:]}"

    fake.answer_with(SimulatedTeam(plans=[parent, child], work=work))
    async with running(orch.worker()):
        handle = await orch.submit("deep work", model=MODEL, max_depth=1)
        await handle.result(timeout=30)
    progress = RunProgress()
    async for event in handle.events(follow=False):
        progress.feed(event)
    a = progress.steps["a"]
    assert a.state == "accepted" and a.child_run.startswith(f"{handle.run_id}.")
    assert [b.kind for b in a.bars] == ["work", "sub-plan", "verify"]
    assert a.bars[1].outcome == "pass"
    assert (await orch.handle(a.child_run).info()).parent["run_id"] == handle.run_id  # type: ignore[index]
