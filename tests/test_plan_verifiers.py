"""The planner knows the workers' verifiers (issue 14, items 7 and 9): its prompt lists
the custom verifiers and cross-checks with what each checks; a plan naming a verifier
the workers lack goes back to the planner with the problem; a verifier cannot take a
built-in check's name. On the real pipeline over the wire-level fake and real Redis."""

from __future__ import annotations

from typing import Any

import pytest

from taskloom import Orchestrator
from taskloom.agents.fake_llm import FakeLLM
from taskloom.pipeline.pipeline import pipeline_events
from taskloom.testing.simulated import SimulatedTeam, system_prompt
from taskloom.verifiers import FunctionVerifier, VerifierConfigError, verifier
from tests.helpers import act, running

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"


@verifier
def house_style(output: Any) -> bool:
    """Follows the house style guide: no exclamation marks.

    (More lines the planner does not need.)"""
    return "!" not in str(output)


async def test_a_plan_naming_an_unknown_verifier_is_fed_back_and_the_next_plan_runs(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    figures = FunctionVerifier(lambda output: True, name="sourced")
    unknown = {"activities": [act("a", verify={"custom": ["tone"]}), act("b", "a")]}
    fixed = {"activities": [act("a", verify={"custom": ["house_style"]}), act("b", "a")]}
    team = SimulatedTeam(plans=[unknown, fixed])
    fake.answer_with(team)
    registered = {"house_style": house_style, "sourced": (figures, "Every figure matches a source")}
    async with running(orch.worker(verifiers=registered)):
        handle = await orch.submit("write two parts", model=MODEL)
        result = await handle.result(timeout=30)

    assert result["plan_version"] == 1
    assert result["plan"]["activities"][0]["verify"]["custom"] == ["house_style"]
    verdicts = {v["verifier"]: v["status"] for v in result["activities"]["a"]["verdicts"]}
    assert verdicts["house_style"] == "pass"  # the registered verifier really ran

    events = [e async for e in pipeline_events(handle, follow=False)]
    [invalid] = [e for e in events if e["event"] == "plan_invalid"]
    [problem] = invalid["problems"]
    assert "'tone'" in problem and "house_style, sourced" in problem

    first, second = (system_prompt(r) for r in team.requests["planner"])
    for prompt in (first, second):  # what exists, and what each checks
        assert '"house_style": "Follows the house style guide: no exclamation marks."' in prompt
        assert '"sourced": "Every figure matches a source"' in prompt
        assert '"figures": "Figures stated for the same quantity by different' in prompt
        assert '"references": "Every reference to another activity must name one' in prompt
        assert "More lines" not in prompt
    assert "## Fix this" not in first
    assert "'tone'" in second.split("## Fix this", 1)[1]  # the problem went back


async def test_without_custom_verifiers_the_planner_is_told_there_are_none(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    team = SimulatedTeam(plans=[{"activities": [act("a")]}])
    fake.answer_with(team)
    async with running(orch.worker()):
        await (await orch.submit("write one part", model=MODEL)).result(timeout=30)
    assert "none: leave `verify.custom` empty" in system_prompt(team.requests["planner"][0])


async def test_a_rule_a_text_role_can_never_pass_goes_back_to_the_planner(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    never = {"activities": [act("a", verify={"rules": {"required": ["summary"]}})]}
    fixed = {"activities": [act("a", verify={"rules": {"patterns": {"": "part"}}})]}
    team = SimulatedTeam(plans=[never, fixed])
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("write one part", model=MODEL)
        result = await handle.result(timeout=30)
    assert result["escalations"] == 0
    assert result["activities"]["a"]["status"] == "accepted"
    second = system_prompt(team.requests["planner"][1])
    assert "answers in plain text" in second.split("## Fix this", 1)[1]


@pytest.mark.parametrize("name", ["totals", "schema", "References", "pii"])
async def test_a_verifier_named_like_a_builtin_check_is_refused_at_registration(
    orch: Orchestrator, name: str
) -> None:
    with pytest.raises(VerifierConfigError) as info:
        orch.worker(verifiers={"house_style": house_style, name: house_style})
    message = str(info.value)
    assert repr(name) in message and "built-in" in message and "another name" in message
