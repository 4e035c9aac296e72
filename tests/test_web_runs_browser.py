"""The run pages in a real headless Chromium: a goal started from the web form is planned
into 8 activities (one retried after a failed check, one escalated); the person asks for
a re-plan from the inbox while the run page stays open, and the page follows the run to
its end over server-sent events, without a reload; the plan graph has every node and
edge in the right state, the timeline its bars in order; then the finished run is re-run
from one activity from its page. Screenshots go to ``tmp/artifacts/`` (or
``$TASKLOOM_ARTIFACTS``)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskloom import Orchestrator
from taskloom.agents.fake_llm import FakeLLM
from taskloom.testing.simulated import SimulatedTeam
from taskloom.web import create_app
from tests.helpers import running
from tests.test_web_browser import CHROMIUM_FLAGS, SECRET, TOKEN, required_chromium, serving

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"
GOAL = "A market report on heat pumps in Germany for an installer deciding where to grow"
UNSURE = {"judge": {"rubric": "names the main risks with their likelihood", "threshold": 0.8}}
NO_FILLER = {"rules": {"banned": ["lorem"]}, "max_retries": 1}
JOBS = {
    "market": ("researcher", "Size the German heat-pump market: units and revenue by year."),
    "pricing": ("analyst", "Price ranges of installed heat pumps, by type."),
    "competitors": ("researcher", "The five largest installers and their market shares."),
    "regulation": ("researcher", "Subsidies and building rules that drive demand."),
    "risks": ("analyst", "The main risks for an installer, with their likelihood."),
    "risk_register": ("analyst", "A register of risks: each with likelihood and impact."),
    "forecast": ("analyst", "Forecast demand for the next three years."),
    "summary": ("writer", "Summarise market, prices and competition on half a page."),
    "recommendations": ("writer", "Recommend where the installer should grow, and why."),
}


def job(act_id: str, *inputs: str) -> dict[str, Any]:
    role, instructions = JOBS[act_id]
    return {"id": act_id, "role": role, "instructions": instructions, "inputs": list(inputs)}


def plan(risks: str) -> dict[str, Any]:
    """The plan: version 1 with ``risks`` (checked by a judge who is unsure), version 2
    with ``risk_register`` instead; the other seven activities are the same."""
    risky = job(risks) | ({"verify": UNSURE} if risks == "risks" else {})
    return {
        "activities": [
            job("market"),
            job("pricing") | {"verify": NO_FILLER},
            job("competitors"),
            job("regulation"),
            risky,
            job("forecast", "market", "pricing"),
            job("summary", "market", "pricing", "competitors"),
            job("recommendations", "forecast", "summary", "regulation", risks),
        ],
        "integrate": "Write the report: summary first, then forecast and recommendations.",
        "rationale": "Independent research in parallel, then analysis, then advice.",
    }


V1, V2 = plan("risks"), plan("risk_register")


def work(task: str, feedback: str | None) -> str:
    act_id = next(i for i, (_, text) in JOBS.items() if task.startswith(text))
    if act_id == "pricing" and feedback is None:
        return "lorem ipsum prices"  # the rule bans it: retried with the feedback
    return f"[simulated] {act_id}: findings for the report."


def judge(output: str, rubric: str) -> dict[str, Any]:
    return {"score": 0.6, "reasons": ["the likelihoods are not given"], "feedback": ""}


@pytest.fixture
async def team(fake: FakeLLM) -> SimulatedTeam:
    latency = {"planner": 0.3, "work": 0.25, "judge": 0.1, "integrator": 0.3}
    simulated = SimulatedTeam(plans=[V1, V2], work=work, judge=judge, latency=latency)
    fake.answer_with(simulated)
    return simulated


@pytest.fixture
async def site(orch: Orchestrator, team: SimulatedTeam) -> AsyncIterator[str]:
    app = create_app(orch, secret=SECRET, inbox_token=TOKEN)
    async with running(orch.worker(concurrency=16)), serving(app, "127.0.0.1") as url:
        yield url


def works_for(team: SimulatedTeam, act_id: str) -> int:
    text = JOBS[act_id][1]
    return sum(1 for r in team.requests.get("work", []) if text in str(r.messages[-1]))


async def test_a_planned_run_is_started_followed_live_and_rerun_in_the_browser(
    site: str, orch: Orchestrator, team: SimulatedTeam, artifacts: Path
) -> None:
    executable = required_chromium()
    from playwright.async_api import Page, async_playwright, expect

    async def states(page: Page) -> dict[str, str]:
        nodes = page.locator("#graph .node")
        ids = await nodes.evaluate_all("ns => ns.map(n => [n.dataset.id, n.dataset.state])")
        return dict(ids)

    async def edges(page: Page) -> set[tuple[str, str]]:
        found = await page.locator("#graph path.edge:not(.final)").evaluate_all(
            "es => es.map(e => [e.dataset.from, e.dataset.to])"
        )
        return {(a, b) for a, b in found}

    async def bars(page: Page, row: str) -> list[tuple[str, str, int, int]]:
        """(kind, outcome, start ms, end ms) of a timeline row's bars, as drawn: the
        bars' left edges must follow their start times."""
        found = await page.locator(f"#gantt g.row[data-row='{row}'] rect.bar").evaluate_all(
            "bs => bs.map(b => [b.dataset.kind, b.dataset.outcome, +b.dataset.startMs,"
            " +b.dataset.endMs, +b.getAttribute('x')])"
        )
        by_time = sorted(found, key=lambda b: (b[2], b[4]))
        assert [b[4] for b in by_time] == sorted(b[4] for b in found), f"{row}: bars misplaced"
        return [(k, o, start, end) for k, o, start, end, _ in found]

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 900})
            page = await context.new_page()
            await page.goto(f"{site}/signin")
            await page.fill("input[name=name]", "ana")
            await page.fill("input[name=token]", TOKEN)
            await page.click("button:has-text('Sign in')")

            # Start the run from the web's form.
            await page.click("text=Start a run")
            await page.fill("#goal", GOAL)
            await page.select_option("select[name=template]", "research_report")
            await page.fill("input[name=budget]", "1.00")
            await page.fill("input[name=model]", MODEL)
            await page.screenshot(path=artifacts / "start-form.png")
            await page.click("button:has-text('Start')")
            await expect(page.locator("#goal")).to_have_text(GOAL)
            run_id = page.url.rsplit("/", 1)[-1]
            assert run_id.startswith("web-")
            await page.evaluate("window.notReloaded = true")

            # Followed live: the plan appears, six activities finish, one waits on a person.
            graph = page.locator("#graph")
            risks = page.locator("#graph .node[data-id='risks']")
            await expect(risks).to_have_attribute("data-state", "waiting", timeout=30_000)
            for done in ("market", "pricing", "competitors", "regulation", "forecast", "summary"):
                node = page.locator(f"#graph .node[data-id='{done}']")
                await expect(node).to_have_attribute("data-state", "accepted", timeout=30_000)
            assert await page.evaluate("window.notReloaded === true"), "the page reloaded"
            assert (await states(page))["recommendations"] == "planned"
            assert await edges(page) == {
                (d, a["id"]) for a in V1["activities"] for d in a["inputs"]
            }
            await expect(page.locator("#open-items")).to_contain_text("risks")
            await expect(page.locator("html")).to_have_class("live")
            assert await page.locator("#log-box").get_attribute("open") is None  # folded away
            await page.screenshot(path=artifacts / "run-waiting.png", full_page=True)

            # The person asks for a re-plan from the inbox, in another tab.
            inbox = await context.new_page()
            item = await page.locator("#open-items a").first.get_attribute("href")
            await inbox.goto(f"{site}{item}")
            await inbox.fill("textarea[name=note]", "keep a risk register with likelihoods")
            await inbox.click("button:has-text('Re-plan with the note')")
            await expect(inbox.locator("#status")).to_have_text("decided")

            # The open page follows: plan v2, then the answer, still without a reload.
            await expect(graph).to_have_attribute("data-version", "2", timeout=30_000)
            await expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
            assert await page.evaluate("window.notReloaded === true"), "the page reloaded"
            await expect(page.locator("html")).not_to_have_class("live")
            await expect(page.locator("#result")).to_contain_text("[simulated] Integrated answer")
            await expect(page.locator("#log")).to_contain_text("run completed")  # rows added
            count = int(await page.locator("#log-count").inner_text())
            assert count == await page.locator("#log-rows tr").count() > 100
            reused = {"market", "pricing", "competitors", "regulation", "forecast", "summary"}
            assert await states(page) == {
                **dict.fromkeys(reused, "reused"),
                "risk_register": "accepted",
                "recommendations": "accepted",
                "answer": "accepted",
            }
            assert await edges(page) == {
                (d, a["id"]) for a in V2["activities"] for d in a["inputs"]
            }
            final = await page.locator("#graph path.edge.final").evaluate_all(
                "es => es.map(e => e.dataset.from)"
            )
            assert final == ["recommendations"]
            await page.screenshot(path=artifacts / "run-completed.png", full_page=True)
            timeline = await page.locator("#run-timeline").bounding_box()
            assert timeline is not None
            height = timeline["y"] + timeline["height"] + 12
            overview = {"x": 0, "y": 0, "width": 1440, "height": height}
            await page.screenshot(
                path=artifacts / "run-overview.png", full_page=True, clip=overview
            )

            # The timeline: planning first, cross-checks and integration last; pricing's
            # two attempts in order (a failed check between them); summary after
            # pricing's accepted check; the wait on a person on the dropped "risks" row.
            rows = await page.locator("#gantt g.row").evaluate_all(
                "rs => rs.map(r => r.dataset.row)"
            )
            assert rows[0] == "Planning" and rows[-2:] == ["Cross-checks", "Integration"]
            assert set(rows[1:-2]) == reused | {"risks", "risk_register", "recommendations"}
            pricing = await bars(page, "pricing")
            assert [(k, o) for k, o, _, _ in pricing] == [
                ("work", "done"),
                ("verify", "fail"),
                ("work", "done"),
                ("verify", "pass"),
            ]
            for earlier, later in itertools.pairwise(pricing):
                assert earlier[3] <= later[2], f"{later} began before {earlier} ended"
            summary = await bars(page, "summary")
            assert summary[0][2] >= pricing[-1][3], "summary started before pricing passed"
            (wait,) = [b for b in await bars(page, "risks") if b[0] == "wait"]
            assert wait[1] == "replan"
            planning = await bars(page, "Planning")
            assert [k for k, *_ in planning] == ["plan", "plan"]
            assert planning[1][2] >= wait[3], "the re-plan came after the decision"
            integration = await bars(page, "Integration")
            assert integration[0][2] >= max(b[3] for b in await bars(page, "recommendations"))
            assert (
                await page.locator("#gantt g.row[data-row='risks']").get_attribute("data-state")
                == "dropped"
            )

            # Plan v1 as it ended: risks re-planned, recommendations blocked behind it.
            await page.click("#run-graph nav.versions a:has-text('v1')")
            v1 = await states(page)
            assert v1["risks"] == "replan" and v1["recommendations"] == "blocked"
            assert v1["answer"] == "superseded"  # v1 was never integrated
            assert v1["pricing"] == "accepted"
            await expect(page.locator("#act-pricing")).to_contain_text("2")  # attempts
            await page.screenshot(path=artifacts / "run-plan-v1.png", full_page=True)

            # Re-run from "summary": a new run of plan v2; summary and recommendations
            # (which needs it) run again, every other output is reused.
            before = {a: works_for(team, a) for a in ("summary", "recommendations", "market")}
            await page.go_back()
            await page.select_option("#rerun-activity", "summary")
            await page.click("button:has-text('Re-run')")
            await expect(page.locator("#follow-up")).to_contain_text(run_id)
            await expect(page.locator("#follow-up")).to_contain_text("summary")
            await expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
            rerun = await states(page)
            assert rerun == {
                **dict.fromkeys(reused - {"summary"} | {"risk_register"}, "reused"),
                "summary": "accepted",
                "recommendations": "accepted",
                "answer": "accepted",
            }
            assert works_for(team, "summary") == before["summary"] + 1
            assert works_for(team, "recommendations") == before["recommendations"] + 1
            assert works_for(team, "market") == before["market"]
            await page.screenshot(path=artifacts / "rerun.png", full_page=True)

            # The runs list: both runs, with their goal, template, tokens and cost.
            await page.goto(f"{site}/runs")
            listed = page.locator("#runs tr[data-run]")
            await expect(listed).to_have_count(2)
            await expect(page.locator(f"#runs tr[data-run='{run_id}']")).to_contain_text(
                "research_report"
            )
            await page.screenshot(path=artifacts / "runs.png", full_page=True)
        finally:
            await browser.close()
    assert team.calls["planner"] == 2, "v1 and v2; the web's re-run reuses the plan"
