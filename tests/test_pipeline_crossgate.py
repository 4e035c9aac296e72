"""Cross-checks as soon as their activities are accepted (issue 14): two activities that
state different figures for the same quantity, in text, are caught before a third that
depends on one of them starts; one decision keeps one side and re-runs the other. Real
pipeline, the fake LLM over the openai SDK, real Redis, a scripted person."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskloom import Orchestrator
from taskloom.agents.fake_llm import FakeLLM
from taskloom.pipeline.crossgate import gate_plan, plan_facts
from taskloom.pipeline.plan import Plan
from taskloom.testing.simulated import SimulatedTeam, task_of
from taskloom.verifiers import Figures
from tests.helpers import act, running
from tests.test_pipeline import events_of, integrated_inputs

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"


def started(team: SimulatedTeam, part: str) -> int:
    return sum(1 for r in team.requests.get("work", []) if task_of(r).endswith(f"part {part}"))


async def open_item(orch: Orchestrator, run_id: str) -> Any:
    async with asyncio.timeout(30):
        while True:
            tasks = [t for t in await orch.human_tasks.list() if t.run_id == run_id]
            if tasks:
                return tasks[0]
            await asyncio.sleep(0.02)


async def test_a_contradiction_is_caught_before_a_dependent_starts_and_one_side_reruns(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {
        "activities": [
            act("a", facts=["revenue"]),
            act("b", facts=["revenue"]),
            act("c", "a"),
            act("d", facts=["headcount"]),
        ]
    }
    said = {
        "a": "Acme's revenue was $4.2M, up from last year.",
        "d": "Headcount: 120 people.",
        "c": "A summary built on part a.",
    }

    def work(task: str, feedback: str | None) -> str:
        part = task.split()[-1]
        if part == "b":
            return "The revenue: 4.2 million dollars." if feedback else "Revenue: 4.5 million."
        return said[part]

    team = SimulatedTeam(plans=[plan], work=work)

    def answer(request: Any) -> Any:
        step = team(request)
        if task_of(request).endswith("part b") and "Feedback" not in str(request.messages[0]):
            import dataclasses

            return dataclasses.replace(step, latency=0.3)  # a is accepted first
        return step

    fake.answer_with(answer)
    async with running(orch.worker()):
        handle = await orch.submit("a revenue brief", model=MODEL)
        item = await open_item(orch, handle.run_id)
        # c takes a as input: it has not started while a's figure is contested.
        assert started(team, "c") == 0
        log = await events_of(orch, handle.run_id)
        assert ("c", "started") not in [(e.get("id"), e.get("state")) for e in log]
        assert item.title.startswith("Cross-check figures: 'a' and 'b' give different")
        assert "revenue" in item.title
        ctx = item.context
        assert set(ctx["outputs"]) == {"a", "b"}  # only the outputs that disagree
        assert set(ctx["activities"]) == {"a", "b"} and ctx["goal"] == "a revenue brief"
        assert "rerun:a" in item.decisions and "rerun:b" in item.decisions
        await orch.human_tasks.decide(item.id, "rerun:b", by="ana", note="a is audited")
        result = await handle.result(timeout=30)
    works = result["activities"]
    assert all(w["status"] == "accepted" for w in works.values())
    assert works["b"]["output"] == "The revenue: 4.2 million dollars."
    assert started(team, "b") == 2 and started(team, "a") == 1 and started(team, "c") == 1
    retry = [r for r in team.requests["work"] if task_of(r).endswith("part b")][1]
    assert "4.5 million" in str(retry.messages[0]["content"])  # the contradiction as feedback
    assert "a is audited" in str(retry.messages[0]["content"])
    assert "4.5 million" not in integrated_inputs(team)
    assert result["escalations"] == 1


async def test_figures_that_agree_pass_without_a_person_and_unrelated_work_is_not_held(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {
        "activities": [
            act("a", facts=["revenue"]),
            act("b", facts=["revenue"]),
            act("c", "a"),
            act("d"),
            act("e", "d"),
        ]
    }
    said = {
        "a": "Revenue was $4.2M in 2024.",
        "b": "Our 2024 revenue came to USD 4,200,000; revenue in 2023 was $3.9M.",
        "c": "Built on a.",
        "d": "Revenue was $9M at a competitor.",  # d states no declared fact: not compared
        "e": "Built on d.",
    }
    team = SimulatedTeam(plans=[plan], work=lambda task, fb: said[task.split()[-1]])
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("a revenue brief", model=MODEL)
        result = await handle.result(timeout=30)
    assert all(w["status"] == "accepted" for w in result["activities"].values())
    assert result["escalations"] == 0 and await orch.human_tasks.list() == []


def test_peers_come_from_facts_or_the_quantity_words_of_instructions() -> None:
    plan = Plan.model_validate(
        {
            "activities": [
                {"id": "x", "role": "w", "instructions": "Report Q3 revenue and margin"},
                {"id": "y", "role": "w", "instructions": "Draft the investor note on revenue"},
                {"id": "z", "role": "w", "instructions": "Summarize", "inputs": ["x"]},
                {"id": "q", "role": "w", "instructions": "Check", "facts": ["Revenue (Q3)"]},
            ]
        }
    )
    facts = plan_facts(plan)
    assert facts["x"] == ["margin", "revenue"] and facts["z"] == []
    shape = gate_plan(plan, facts)
    assert shape.owns == {"y": ["x"], "q": ["x", "y"]}
    assert shape.waits == {"x": ["y", "q"], "y": ["q"]}


def test_a_pair_whose_wait_would_deadlock_is_left_to_the_check_before_integration() -> None:
    # x~p share revenue, a~d share headcount; p needs a, d needs x: gating both pairs
    # would have x wait for p, p for a, a for d and d for x.
    plan = Plan.model_validate(
        {
            "activities": [
                {"id": "x", "role": "w", "instructions": "i", "facts": ["revenue"]},
                {"id": "a", "role": "w", "instructions": "i", "facts": ["headcount"]},
                {
                    "id": "p",
                    "role": "w",
                    "instructions": "i",
                    "facts": ["revenue"],
                    "inputs": ["a"],
                },
                {
                    "id": "d",
                    "role": "w",
                    "instructions": "i",
                    "facts": ["headcount"],
                    "inputs": ["x"],
                },
            ]
        }
    )
    shape = gate_plan(plan, plan_facts(plan))
    assert shape.owns == {"p": ["x"]}  # the second pair would close the cycle


async def test_figures_compare_text_and_json_at_the_rounder_precision() -> None:
    check = Figures()
    same = {
        "a": "Revenue was $4.2M.",
        "b": {"revenue_usd": 4_230_000},
        "c": "| Metric | Value |\n|---|---|\n| Revenue | 4.2 million |",
    }
    assert [v.status for v in await check.verify_all(same)] == ["pass"]
    differ = {"a": "Revenue was $4.2M.", "b": "revenue: 4.5 million", "c": "Growth was 12%."}
    (verdict,) = await check.verify_all(differ)
    assert verdict.status == "fail" and verdict.activities == ["a", "b"]
    assert "4.5 million" in verdict.feedback
    other_year = {"a": "Revenue in 2023 was $4.2M.", "b": "Revenue in 2024 was $4.5M."}
    assert [v.status for v in await check.verify_all(other_year)] == ["pass"]
    kinds = {"a": "Revenue was $4.2M.", "b": "Revenue was €4.5M.", "c": "Revenue was 12%."}
    assert [v.status for v in await check.verify_all(kinds)] == ["pass"]


async def test_figures_read_prose_locales_and_words_as_the_same_quantity() -> None:
    check = Figures()
    same = {
        "a": "Revenue rose 6% to €512m in 2024 on higher prices.",
        "b": "The portfolio's revenue of €512 million in 2024 funded two parks.",
        "c": "The 2024 harvest came to 12.480,5 t of grapes.",
        "d": "Dear members, the 2024 harvest came to roughly 12,500 tonnes.",
        "e": "The city welcomed four million visitors in 2024.",
        "f": "With 4 million visitors in 2024, a tax would raise €9m.",
        "g": "EUR 2.4 million raised; wells serve 48,000 people.",
        "h": "Funds of EUR 3.1 million were pledged; 3.5 million raised overall.",
    }
    assert [v.status for v in await check.verify_all(same)] == ["pass"]
    for id, wrong in (
        ("b", "The portfolio's revenue of €548 million in 2024 funded two parks."),
        ("d", "Dear members, the 2024 harvest came to roughly 13,950 tonnes."),
        ("f", "With 5.2 million visitors in 2024, a tax would raise €9m."),
    ):
        verdicts = await check.verify_all({**same, id: wrong})
        assert [v.status for v in verdicts] == ["fail"], id
        assert id in verdicts[0].activities


def test_plan_facts_match_plural_and_singular_quantity_words() -> None:
    plan = Plan.model_validate(
        {
            "activities": [
                act("a", instructions="Report tourist visitor numbers for 2024"),
                act("b", instructions="Explain the tax using the visitors we had"),
            ]
        }
    )
    assert plan_facts(plan) == {"a": ["visitor"], "b": ["visitors"]}
    assert gate_plan(plan, plan_facts(plan)).owns == {"b": ["a"]}
