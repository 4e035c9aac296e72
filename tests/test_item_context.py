"""Every inbox item carries its context (issue 14): a "subagent failed" item whose
output never validated carries the model's last answer and the attempt history; a
cross-check item both activities' specs, outputs, histories and why it is there; titles
say what is wrong. `taskloom inbox show` and the web item page show them. Real pipeline,
the fake LLM over the openai SDK, real Redis."""

from __future__ import annotations

import asyncio
import html

import httpx
import pytest
from pydantic import BaseModel

from taskloom import Agent, ManualClock, Orchestrator
from taskloom.agents.fake_llm import FakeLLM
from taskloom.engine.human import HumanTask
from taskloom.terminal.inbox_cli import _render
from taskloom.testing.simulated import SimulatedTeam
from taskloom.web import create_app
from tests.helpers import act, running
from tests.test_web import BASE_URL, SECRET, TOKEN, csrf_of

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"
PROSE = "Sorry, I cannot give JSON; the heat pump market grew a lot."


class Section(BaseModel):
    title: str
    body: str


async def open_tasks(orch: Orchestrator, run_id: str, n: int) -> list[HumanTask]:
    async with asyncio.timeout(90):  # the failing subagent's own retries come first
        while True:
            tasks = [t for t in await orch.human_tasks.list() if t.run_id == run_id]
            if len(tasks) >= n:
                return tasks
            await asyncio.sleep(0.05)


async def test_items_carry_the_last_raw_output_histories_and_say_what_is_wrong(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    plan = {
        "activities": [
            act("a", role="sectioner"),
            act("b", facts=["revenue"]),
            act("c", facts=["revenue"]),
        ]
    }
    said = {"b": "Revenue was $4.2M.", "c": "Revenue: 4.5 million."}
    team = SimulatedTeam(plans=[plan], work=lambda task, fb: said.get(task.split()[-1], PROSE))
    fake.answer_with(team)
    sectioner = Agent(name="sectioner", role="writes one section", output=Section)
    async with running(orch.worker(agents=[sectioner])):
        handle = await orch.submit("a market brief", model=MODEL)
        tasks = await open_tasks(orch, handle.run_id, 2)
        failed = next(t for t in tasks if t.title.startswith("Activity 'a'"))
        cross = next(t for t in tasks if t.title.startswith("Cross-check figures"))
        # The failed subagent's item: what it produced, its attempts, why.
        assert "the subagent failed after" in failed.title and PROSE not in failed.title
        assert "(step" not in failed.title and "LLMOutputError" not in failed.title
        ctx = failed.context
        assert ctx["last_output"] == PROSE and ctx["output"] is None
        assert ctx["history"][-1]["status"] == "error" and ctx["history"][-1]["output"] == PROSE
        assert ctx["activity"]["id"] == "a" and ctx["goal"] == "a market brief"
        # The cross-check's item: both sides, with their specs and histories.
        assert cross.title.endswith("'b' and 'c' give different figures for revenue")
        assert set(cross.context["activities"]) == {"b", "c"}
        assert set(cross.context["history"]) == {"b", "c"}
        assert cross.context["why"].startswith("the accepted outputs were checked")
        # What `taskloom inbox show` prints.
        shown = "\n".join(_render(failed, 0))
        assert "last answer of the model (it never validated)" in shown and PROSE in shown
        assert "attempt 1: error" in shown
        shown = "\n".join(_render(cross, 0))
        assert "activity: b (role writer)" in shown and "activity: c (role writer)" in shown
        assert "history of b:" in shown and "Revenue: 4.5 million." in shown
        # What the web item page shows.
        app = create_app(orch, secret=SECRET, inbox_token=TOKEN, clock=ManualClock())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            page = await http.get("/signin")
            form = {"csrf": csrf_of(page.text), "name": "ana", "token": TOKEN}
            assert (await http.post("/signin", data=form)).status_code == 303
            body = (await http.get(f"/items/{failed.run_id}/{failed.seq}")).text
            assert "it never validated" in body and html.escape(PROSE, quote=True) in body
            assert 'id="output"' not in body  # no empty "Output: null" beside the answer
            assert "schema, totals, truncation, injection, citations; up to" in body
            assert "&#34;rules&#34;: null" not in body and "split" not in body
            body = (await http.get(f"/items/{cross.run_id}/{cross.seq}")).text
            for shown in ("Activity b", "Activity c", "4.5 million", "rerun:c", "b #1", "replan"):
                assert shown in body, shown
        for task in (failed, cross):
            await orch.human_tasks.decide(task.id, "reject", by="ana")
        with pytest.raises(Exception, match="no activity output was accepted"):
            await handle.result(timeout=30)
