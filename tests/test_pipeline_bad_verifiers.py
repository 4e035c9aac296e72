"""Bad input around verification (issue 14): a verifier that raises, times out or
returns garbage is a verifier failure: never an output failure, never a burned retry;
the item says the output could not be checked. A plan given with a route to a malformed
reviewer is refused at submit. Real pipeline, the fake LLM over the openai SDK, real
Redis, a scripted person."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskloom import Orchestrator, UserError
from taskloom.agents.fake_llm import FakeLLM
from taskloom.testing.simulated import SimulatedTeam
from taskloom.verifiers import Check, Tools, Verifier
from tests.helpers import act, running
from tests.test_pipeline import decide, works_for

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"


class Broken(Verifier):
    """A verifier that breaks in one of the ways a user's verifier can."""

    def __init__(self, how: str) -> None:
        self.name, self.how, self.timeout = "house_style", how, 0.2

    async def verify(self, check: Check, tools: Tools) -> Any:
        if self.how == "raises":
            raise KeyError("style_guide")
        if self.how == "hangs":
            await asyncio.sleep(3600)
        return {"status": "pass"} if self.how == "garbage" else 42


@pytest.mark.parametrize(
    ("how", "why"),
    [
        ("raises", "raised KeyError"),
        ("hangs", "timed out"),
        ("garbage", "not a Verdict"),
        ("number", "not a Verdict"),
    ],
)
async def test_a_broken_verifier_is_its_own_failure_and_burns_no_retry(
    fake: FakeLLM, orch: Orchestrator, how: str, why: str
) -> None:
    plan = {"activities": [act("a", verify={"custom": ["house_style"], "max_retries": 3})]}
    team = SimulatedTeam(plans=[plan])
    fake.answer_with(team)
    async with running(orch.worker(verifiers={"house_style": Broken(how)})):
        handle = await orch.submit("check it", model=MODEL)
        task = await decide(orch, handle.run_id, "approve")
        result = await handle.result(timeout=30)
    ctx = task["context"]
    assert "could not check" in ctx["reason"]
    assert why in str(ctx), ctx  # the person sees how the verifier broke
    assert works_for(team, "a") == 1, "no retry of the output was burned on a broken verifier"
    assert result["activities"]["a"]["status"] == "accepted"


async def test_a_given_plan_routing_to_a_malformed_reviewer_is_refused_at_submit(
    orch: Orchestrator,
) -> None:
    plan = {
        "activities": [act("a")],
        "routes": [{"verifiers": ["pii"], "assignee": "legal@"}],
    }
    with pytest.raises(UserError, match="not a valid e-mail address"):
        await orch.submit("g", model=MODEL, plan=plan)
    assert await orch.list_runs() == []
