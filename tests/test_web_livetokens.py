"""A running activity's live tokens on its run page: the text its model streams shows
under the activity (server-rendered, escaped and bounded, for a page without
JavaScript), the live stream sends it as it grows (``tokens`` messages), and it goes
once the activity has its output; in Chromium, it appears on an open page without a
reload.

The scenario is held by conditions, not by timing: the streaming role's first attempt
streams a few words and loses its connection (the engine retries it); its retry waits
at the fake LLM until the test has seen the first words, then streams the whole text."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from taskloom import Orchestrator
from taskloom.agents.agent import Agent
from taskloom.agents.fake_llm import Disconnect, FakeLLM, Request, Step, reply
from taskloom.testing.simulated import SimulatedTeam, kind_of
from taskloom.web import create_app
from taskloom.web.runs import LIVE_TAIL
from tests.helpers import act, running, wait_until
from tests.test_web import csrf_of
from tests.test_web_browser import CHROMIUM_FLAGS, SECRET, TOKEN, required_chromium, serving
from tests.test_web_runs import read_live

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"
NARRATOR = Agent(name="narrator", role="a storyteller who thinks aloud", stream=True)
OPENING = "Once <b>upon</b> a <script>document.title = 'pwned'</script> time, "
STORY = OPENING + " ".join(f"word{n:03d}" for n in range(380))  # 3,100 characters, 800 tokens
CUT = 8
"""Events the first attempt streams before its connection drops: the assistant's role,
then a word each (the opening's seven)."""


@dataclass
class Storyteller:
    """The fake LLM's answers: the simulated team, but the narrator's first call is cut
    off mid-stream and its retry waits for :attr:`go`."""

    team: SimulatedTeam
    go: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0

    async def __call__(self, request: Request) -> Step:
        if kind_of(request) != "work":
            return self.team(request)
        self.calls += 1
        if self.calls == 1:
            return Disconnect(after_chunks=CUT, text=STORY)
        await self.go.wait()
        return reply(STORY)


@pytest.fixture
async def story(fake: FakeLLM) -> Storyteller:
    plan = {"activities": [act("story", role="narrator")]}
    teller = Storyteller(SimulatedTeam(plans=[plan]))
    fake.answer_with(teller)
    return teller


@pytest.fixture
async def site(orch: Orchestrator, story: Storyteller) -> AsyncIterator[str]:
    app = create_app(orch, secret=SECRET, inbox_token=TOKEN)
    async with running(orch.worker(agents=[NARRATOR])), serving(app, "127.0.0.1") as url:
        yield url


async def test_the_live_stream_sends_a_running_activitys_text_as_it_streams(
    site: str, orch: Orchestrator, story: Storyteller
) -> None:
    async with httpx.AsyncClient(base_url=site) as http:
        signin = await http.get("/signin")
        form = {"csrf": csrf_of(signin.text), "name": "ana", "token": TOKEN}
        await http.post("/signin", data=form)
        handle = await orch.submit("tell a story", model=MODEL)
        url = f"/runs/{handle.run_id}"

        async def cut_off() -> httpx.Response | None:
            page = await http.get(url)
            return page if _live_of(page.text) == OPENING else None

        # Without JavaScript: the page shows the text so far, escaped, under its activity.
        page = await wait_until(cut_off, "the first attempt's words on the page", timeout=30)
        assert "<b>upon</b>" not in page.text and "<script>document" not in page.text
        row = page.text.split('id="act-story"')[1].split("</tr>")[1]
        assert 'class="live-row" data-for="story"' in row  # right under the activity

        live = re.search(r'data-live-url="([^"]+)"', page.text)
        assert live
        messages: list[tuple[str, str]] = []
        opened = asyncio.Event()
        stream = live[1].replace("&amp;", "&")
        following = asyncio.create_task(read_live(http, stream, messages, opened=opened))
        await opened.wait()
        story.go.set()  # the retry streams the whole story now
        async with asyncio.timeout(60):
            await following
        assert await handle.result(timeout=10) is not None

    tokens = [json.loads(d) for k, d in messages if k == "tokens"]
    assert tokens, "no tokens message while the story streamed"
    for message in tokens:
        assert message["id"] == "story"
        assert 0 < len(message["text"]) <= LIVE_TAIL and message["text"] in STORY
    # the retry's text as it grew (a message per batch of pieces: how many is timing)
    views = [json.loads(d) for k, d in messages if k == "view"]
    assert "live-row" not in views[-1]["parts"]["run-activities"]  # gone once it ended
    assert 'data-id="story" data-state="accepted"' in views[-1]["parts"]["run-graph"]


def _live_of(page: str) -> str:
    """The live text under activity ``story``, unescaped (empty if none is shown)."""
    m = re.search(r'<pre class="live-tokens" id="live-story"[^>]*>(.*?)</pre>', page, re.S)
    return html.unescape(m[1]) if m else ""


async def test_an_open_run_page_shows_the_streaming_text_without_a_reload(
    site: str, orch: Orchestrator, story: Storyteller, artifacts: Path
) -> None:
    executable = required_chromium()
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(f"{site}/signin")
            await page.fill("input[name=name]", "ana")
            await page.fill("input[name=token]", TOKEN)
            await page.click("button:has-text('Sign in')")
            handle = await orch.submit("tell a story", model=MODEL)
            await page.goto(f"{site}/runs/{handle.run_id}")  # before the plan
            await page.evaluate("window.notReloaded = true")
            await expect(page.locator("html")).to_have_class("live")

            box = page.locator("#live-story")
            await expect(box).to_have_text(OPENING.strip(), timeout=30_000)
            assert await box.locator("b, script").count() == 0  # text, not markup
            assert await page.title() != "pwned"
            # In the page, at once: each view event draws the box anew, and a locator's
            # scroll fails when the element it found is replaced before it is stable.
            await page.evaluate("document.getElementById('live-story').scrollIntoView()")
            await page.screenshot(path=artifacts / "run-live-tokens.png")

            story.go.set()
            await expect(box).to_have_count(0, timeout=30_000)  # gone with its output
            await expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
            await expect(page.locator("#act-story")).to_have_attribute("data-state", "accepted")
            assert await page.evaluate("window.notReloaded === true"), "the page reloaded"
            assert await page.title() != "pwned"
        finally:
            await browser.close()
