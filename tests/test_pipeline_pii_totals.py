"""Issue 14 on the real pipeline (fake LLM over the openai SDK, real Redis, a scripted
person): IBANs and national phone numbers are stopped before integration by the PII
policy, a wrong table total by the built-in totals verifier (on by default), and the
clean twins are accepted without a person."""

from __future__ import annotations

from typing import Any

import pytest

from taskloom import Orchestrator
from taskloom.agents.fake_llm import FakeLLM
from taskloom.testing.simulated import SimulatedTeam, task_of
from tests.helpers import act, running
from tests.test_pipeline import decide, integrated_inputs

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"
IBAN = "DE89 3704 0044 0532 0130 00"
PHONE = "(030) 1234-5678"
FIGURES = (
    "Umsatz 2024: 1.234.567 EUR (2019-2023: +12%), Rechnung 2024-000123, "
    "Stand 12.03.2024, 10115 Berlin."
)


def table(total: str) -> str:
    return (
        "Revenue by region:\n\n"
        "| Region | Revenue (EUR) | Share |\n|---|---:|---:|\n"
        "| North | 1,200,000 | 40% |\n| South | 1,000,000 | 33% |\n"
        f"| West | 800,000 | 27% |\n| **Total** | **{total}** | 100% |\n"
    )


def requests_for(team: SimulatedTeam, part: str) -> list[str]:
    return [
        str(r.messages[0]["content"])
        for r in team.requests.get("work", [])
        if task_of(r).endswith(f"part {part}")
    ]


async def test_an_iban_and_a_national_phone_number_are_stopped_before_integration(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {
        "activities": [
            act("a", verify={"pii": "block", "max_retries": 1}),
            act("b", verify={"pii": "escalate"}),
            act("c", verify={"pii": "redact"}),
        ]
    }

    def work(task: str, feedback: str | None) -> str:
        if task.endswith(" a"):
            return "Pay the invoice by transfer." if feedback else f"Pay to IBAN {IBAN}."
        if task.endswith(" b"):
            return f"Ruf Frau Berg an: {PHONE}."
        return f"Refunds go to {IBAN} or {PHONE}."

    team = SimulatedTeam(plans=[plan], work=work)
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("payment instructions", model=MODEL)
        task = await decide(orch, handle.run_id, "reject")
        result = await handle.result(timeout=30)
    # block: failed with feedback naming the IBAN (masked), the retry removed it.
    a = result["activities"]["a"]
    assert a["status"] == "accepted" and a["attempts"] == 2
    assert a["output"] == "Pay the invoice by transfer."
    retry = requests_for(team, "a")[1]
    assert "1 IBAN" in retry and "DE** ****" in retry and IBAN not in retry
    # escalate: a person was asked about the phone number, and rejected it.
    assert "Activity 'b'" in task["title"] and "1 phone number" in task["context"]["reason"]
    assert result["activities"]["b"]["status"] == "rejected"
    # redact: both replaced before anything saw the output.
    c = result["activities"]["c"]["output"]
    assert c == "Refunds go to [iban redacted] or [phone redacted]."
    integrated = integrated_inputs(team) + result["answer"]
    assert IBAN not in integrated and PHONE not in integrated
    assert result["escalations"] == 1


async def test_the_clean_twin_with_figures_is_accepted_without_a_person(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {"activities": [act("a", verify={"pii": "escalate"}), act("b", verify={"pii": "block"})]}
    team = SimulatedTeam(plans=[plan], work=lambda task, fb: f"{task}: {FIGURES}")
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("figures", model=MODEL)
        result = await handle.result(timeout=30)
    for work in result["activities"].values():
        assert work["status"] == "accepted" and work["attempts"] == 1
        assert work["decided_by"] == "verifiers" and FIGURES in work["output"]
    assert result["escalations"] == 0 and await orch.human_tasks.list() == []


async def test_a_wrong_table_total_is_retried_with_the_feedback_or_escalated(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    # No verify spec names totals: the built-in check runs on every output.
    plan = {"activities": [act("a"), act("b", verify={"max_retries": 1})]}

    def work(task: str, feedback: str | None) -> str:
        if task.endswith(" a"):
            return table("3,000,000" if feedback else "3,100,000")
        return table("2,900,000")  # wrong on every attempt

    team = SimulatedTeam(plans=[plan], work=work)
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("revenue tables", model=MODEL)
        task = await decide(orch, handle.run_id, "reject")
        result = await handle.result(timeout=30)
    a = result["activities"]["a"]
    assert a["status"] == "accepted" and a["attempts"] == 2 and a["decided_by"] == "verifiers"
    assert "3,000,000" in a["output"]
    retry = requests_for(team, "a")[1]
    assert "row 'Total', column 'Revenue (EUR)': states 3,100,000" in retry
    assert "add up to 3,000,000" in retry
    assert "Activity 'b'" in task["title"] and "states 2,900,000" in task["context"]["reason"]
    assert result["activities"]["b"]["status"] == "rejected"
    assert result["activities"]["b"]["attempts"] == 2
    integrated = integrated_inputs(team)
    assert "3,100,000" not in integrated and "2,900,000" not in integrated
    assert result["escalations"] == 1


async def test_tables_that_add_up_are_accepted_without_a_person(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    rounded = "| Item | EUR m |\n|---|---|\n| A | 1.2 |\n| B | 3.4 |\n| C | 5.6 |\n| Total | 10.3 |"
    json_rows: list[dict[str, Any]] = [
        {"line": "Sales", "amount": "$12,500.00"},
        {"line": "Refunds", "amount": "($1,500.00)"},
        {"line": "Total", "amount": "$11,000.00"},
    ]
    outputs = {"a": table("3,000,000"), "b": rounded, "c": f"```json\n{json_rows}\n```"}
    outputs["c"] = outputs["c"].replace("'", '"')
    plan = {"activities": [act("a"), act("b"), act("c")]}
    team = SimulatedTeam(plans=[plan], work=lambda task, fb: outputs[task.split()[-1]])
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("tables", model=MODEL)
        result = await handle.result(timeout=30)
    for work in result["activities"].values():
        assert work["status"] == "accepted" and work["attempts"] == 1
        totals = [v for v in work["verdicts"] if v["verifier"] == "totals"]
        assert totals and totals[0]["reasons"] == ["every total in 1 table(s) adds up"]
    assert result["escalations"] == 0 and "10.3" in result["answer"]
