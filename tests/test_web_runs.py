"""The run pages over HTTP: the runs list (search, status, paging through the status
indexes), the start form, cancel and re-run forms, and the live stream of a run page,
against real Redis and real runs."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from taskloom import Context, ManualClock, Orchestrator, workflow
from taskloom.agents.fake_llm import FakeLLM
from taskloom.testing.simulated import SimulatedTeam
from taskloom.web import MagicLinks, create_app, runlist
from tests.helpers import act, running, wait_until
from tests.test_pipeline import accepted
from tests.test_web import BASE_URL, SECRET, TOKEN, Web, csrf_of, review
from tests.test_web_browser import serving

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"
NO_SECRETS = {"rules": {"banned": ["secret"]}, "max_retries": 0}


@workflow(name="webruns.plain")
async def plain(ctx: Context, n: int) -> int:
    return n


@pytest.fixture
async def web(orch: Orchestrator) -> AsyncIterator[Web]:
    app = create_app(orch, secret=SECRET, inbox_token=TOKEN, clock=ManualClock())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http:
        w = Web(http, app, orch, ManualClock(), MagicLinks(orch.store, secret=SECRET))
        await w.signin()
        yield w


def listed(page: httpx.Response) -> list[str]:
    """The run ids of a runs list page, in order."""
    assert page.status_code == 200, page.text
    return re.findall(r'<tr data-run="([^"]+)">', page.text)


def older(page: httpx.Response) -> str | None:
    """The link to the next page, if there is one."""
    m = re.search(r'<a href="([^"]+)" id="older">', page.text)
    return m[1].replace("&amp;", "&") if m else None


async def every_page(web: Web, url: str) -> list[list[str]]:
    pages = []
    next_url: str | None = url
    while next_url:
        page = await web.page(next_url)
        pages.append(listed(page))
        next_url = older(page)
    return pages


# -- the list ---------------------------------------------------------------------------
async def test_the_list_pages_through_every_run_newest_first_and_finds_by_text_and_status(
    web: Web, orch: Orchestrator, make_worker: Any
) -> None:
    async with running(make_worker(workflows=[plain])):
        done = [await orch.start(plain, n) for n in range(3)]
        for handle in done:
            await handle.result(timeout=10)
    pending = [
        await orch.submit(f"{'solar roof' if n % 2 else 'heat pump'} study {n}", model=MODEL)
        for n in range(120)
    ]
    with_template = await orch.submit(
        "a templated report", model=MODEL, template="code_review", budget_usd=2.5
    )

    pages = await every_page(web, "/runs")
    assert [len(p) for p in pages] == [50, 50, 24]
    everything = [run_id for page in pages for run_id in page]
    assert len(set(everything)) == 124, "no run twice, none left out"
    newest_first = [r.run_id for r in await orch.list_runs(limit=500)]
    assert everything == newest_first  # the status indexes' order, merged

    first = await web.page("/runs")
    row = first.text.split(f'<tr data-run="{with_template.run_id}">')[1].split("</tr>")[0]
    assert "a templated report" in row and "code_review" in row and "pending" in row

    solar = await every_page(web, "/runs?q=SOLAR+roof")
    assert [len(p) for p in solar] == [50, 10]
    found = {run_id for page in solar for run_id in page}
    assert found == {h.run_id for n, h in enumerate(pending) if n % 2}

    completed = await every_page(web, "/runs?status=completed")
    assert completed == [[h.run_id for h in reversed(done)]]
    assert listed(await web.page(f"/runs?q={pending[7].run_id}")) == [pending[7].run_id]
    nothing = await web.page("/runs?q=no+such+words&status=failed")
    assert listed(nothing) == [] and "No run matches" in nothing.text

    bad_status = await web.page("/runs?status=lost")
    bad_cursor = await web.page("/runs?after=not-a-cursor")
    assert bad_status.status_code == bad_cursor.status_code == 400
    assert "is not a page cursor" in bad_cursor.text


async def test_a_search_stops_after_its_limit_and_offers_to_read_on(
    web: Web, orch: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    oldest = await orch.submit("the needle in the haystack", model=MODEL)
    for n in range(40):
        await orch.submit(f"hay {n}", model=MODEL)
    # the oldest status change of all (runs made in one millisecond tie on the score)
    await orch.store.raw.zadd(orch.store.keys.index("pending"), {oldest.run_id: 1})
    monkeypatch.setattr(runlist, "SCAN_LIMIT", 30)
    first = await web.page("/runs?q=needle")
    assert listed(first) == [] and "Search further (30 runs read)" in first.text
    assert "among the 30 most recent read" in first.text
    assert await every_page(web, "/runs?q=needle") == [[], [oldest.run_id]]
    query = parse_qs(urlsplit(older(first) or "").query)
    assert query["q"] == ["needle"] and query["after"][0].count(":") == 1


async def test_runs_indexed_in_the_same_millisecond_are_paged_without_repeats(
    web: Web, orch: Orchestrator
) -> None:
    handles = [await orch.submit(f"tied {n}", model=MODEL) for n in range(7)]
    index = orch.store.keys.index("pending")
    await orch.store.raw.zadd(index, {h.run_id: 1_700_000_000_000 for h in handles})
    from taskloom.engine.runindex import RunIndex

    seen, cursor = [], None
    while True:
        page = await RunIndex(orch.store).page(statuses=["pending"], after=cursor, limit=3)
        seen.append([e.info.run_id for e in page.entries])
        cursor = page.next
        if cursor is None:
            break
    assert [len(p) for p in seen] == [3, 3, 1]
    assert [r for p in seen for r in p] == sorted((h.run_id for h in handles), reverse=True)


# -- starting a run -----------------------------------------------------------------------
async def test_the_start_form_checks_each_field_and_starts_one_run_per_form(
    web: Web, orch: Orchestrator
) -> None:
    form_page = await web.page("/runs/new?goal=prefilled+goal")
    assert form_page.status_code == 200 and "prefilled goal" in form_page.text
    assert '<option value="research_report">' in form_page.text
    key = re.search(r'name="key" value="([0-9a-f]{32})"', form_page.text)
    assert key
    form = {"csrf": csrf_of(form_page.text), "key": key[1]}

    no_csrf = await web.http.post("/runs", data={"goal": "x", "model": MODEL, "key": key[1]})
    assert no_csrf.status_code == 403
    bad = await web.http.post(
        "/runs", data=form | {"goal": " ", "budget": "-3", "model": "gpt-4", "template": "nope"}
    )
    assert bad.status_code == 400
    for shown in (
        "Say what you want done",
        "positive amount of US dollars",
        "has no provider prefix",
        "Choose one of code_review",
    ):
        assert shown in bad.text, shown
    assert await orch.list_runs() == []  # nothing was started

    good = form | {"goal": "A report", "template": "research_report", "budget": "2.50"}
    started = await web.http.post("/runs", data=good | {"model": MODEL})
    assert started.status_code == 303
    assert started.headers["location"] == f"/runs/web-{key[1]}"
    again = await web.http.post("/runs", data=good | {"model": MODEL})  # sent twice
    assert again.headers["location"] == started.headers["location"]
    (run,) = await orch.list_runs()
    assert run.run_id == f"web-{key[1]}"
    assert (await orch.budget(run.run_id)).max_usd == Decimal("2.50")
    page = await web.page(started.headers["location"])
    assert "A report" in page.text and "research_report" in page.text
    assert "no worker is running" in page.text  # nobody has taken it up


# -- cancel and re-run ------------------------------------------------------------------
async def test_a_waiting_run_is_cancelled_from_its_page_and_then_rerun_from_an_activity(
    web: Web, orch: Orchestrator, fake: FakeLLM
) -> None:
    plan = {"activities": [act("a"), act("b", verify=NO_SECRETS), act("c", "a", "b")]}
    team = SimulatedTeam(
        plans=[plan], work=lambda task, fb: "secret" if task.endswith(" b") else f"ok {task}"
    )
    fake.answer_with(team)
    async with running(orch.worker()):
        handle = await orch.submit("three parts", model=MODEL)
        await wait_until(lambda: orch.human_tasks.list(run_id=handle.run_id), "the escalation")
        await wait_until(lambda: accepted(orch, handle.run_id, "a"), "a to be accepted")
        page = await web.page(f"/runs/{handle.run_id}")
        assert 'id="cancel-form"' in page.text and 'id="rerun-form"' not in page.text
        refused = await web.http.post(
            f"/runs/{handle.run_id}/rerun", data={"csrf": csrf_of(page.text), "activity": "b"}
        )
        assert refused.status_code == 400  # no key: the form is not the page's
        cancel = await web.http.post(
            f"/runs/{handle.run_id}/cancel", data={"csrf": csrf_of(page.text)}
        )
        assert cancel.status_code == 303
        await wait_until(
            lambda: _status_is(orch, handle.run_id, "cancelled"), "the run to be cancelled"
        )
        again = await web.http.post(
            f"/runs/{handle.run_id}/cancel", data={"csrf": csrf_of(page.text)}
        )
        assert again.status_code == 400 and "already ended" in again.text

        ended = await web.page(f"/runs/{handle.run_id}")
        assert 'id="rerun-form"' in ended.text and "/static/run.js" not in ended.text
        key = re.search(r'name="key" value="([0-9a-f]{32})"', ended.text)
        assert key
        form = {"csrf": csrf_of(ended.text), "key": key[1]}
        unknown = await web.http.post(
            f"/runs/{handle.run_id}/rerun", data=form | {"activity": "zz"}
        )
        assert unknown.status_code == 400 and "no activity &#39;zz&#39;" in unknown.text
        team.work = lambda task, fb: f"ok {task}"
        rerun = await web.http.post(f"/runs/{handle.run_id}/rerun", data=form | {"activity": "b"})
        assert rerun.status_code == 303
        new_id = rerun.headers["location"].rsplit("/", 1)[-1]
        result = await orch.handle(new_id).result(timeout=30)
    assert result["activities"]["a"].get("reused") is True  # accepted before the cancel
    assert not result["activities"]["b"].get("reused") and not result["activities"]["c"].get(
        "reused"
    )
    page = await web.page(f"/runs/{new_id}")
    assert f'A re-run of <a href="/runs/{handle.run_id}">' in page.text
    assert "from activity <strong>b</strong>, and of what is built on it (c)" in page.text
    listing = await web.page("/runs")
    assert f're-run from b of <a href="/runs/{handle.run_id}">' in listing.text


async def _status_is(orch: Orchestrator, run_id: str, status: str) -> bool:
    return (await orch.handle(run_id).info()).status == status


# -- the live stream --------------------------------------------------------------------
async def read_live(
    http: httpx.AsyncClient,
    url: str,
    messages: list[tuple[str, str]],
    *,
    opened: asyncio.Event | None = None,
) -> None:
    """Read a run page's live stream into ``messages`` (kind, data) until its ``end``;
    ``opened`` is set at its first line (the stream is set up by then)."""
    async with http.stream("GET", url, timeout=60) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = ""
        async for line in stream.aiter_lines():
            if opened is not None:
                opened.set()
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                messages.append((kind, line.removeprefix("data: ")))
                if kind == "end":
                    return


async def test_the_live_stream_sends_the_page_anew_until_the_run_ends(
    orch: Orchestrator, fake: FakeLLM
) -> None:
    plan = {"activities": [act("a", verify=NO_SECRETS), act("b", "a")]}
    fake.answer_with(SimulatedTeam(plans=[plan], work=lambda task, fb: f"secret {task}"))
    app = create_app(orch, secret=SECRET, inbox_token=TOKEN)
    async with (
        running(orch.worker()),
        serving(app, "127.0.0.1") as site,
        httpx.AsyncClient(base_url=site) as http,
    ):
        if True:
            signin = await http.get("/signin")
            await http.post(
                "/signin", data={"csrf": csrf_of(signin.text), "name": "ana", "token": TOKEN}
            )
            handle = await orch.submit("two parts", model=MODEL)
            (task,) = await wait_until(
                lambda: orch.human_tasks.list(run_id=handle.run_id), "the escalation"
            )
            page = await http.get(f"/runs/{handle.run_id}")
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "connect-src 'self'" in csp
            assert "default-src 'none'" in csp and "unsafe-inline" not in csp.split("script-src")[1]
            live = re.search(r'data-live-url="([^"]+)"', page.text)
            assert live and '<script src="/static/run.js" defer>' in page.text
            assert '<noscript><meta http-equiv="refresh"' in page.text
            script = await http.get("/static/run.js")
            assert script.headers["content-type"].startswith("text/javascript")
            assert "EventSource" in script.text

            messages: list[tuple[str, str]] = []
            url = live[1].replace("&amp;", "&")
            following = asyncio.create_task(read_live(http, url, messages))
            await orch.human_tasks.decide(task.id, "edit", by="ana", data={"output": "clean a"})
            async with asyncio.timeout(30):
                await following
            ended = await http.get(live[1].replace("&amp;", "&"))
            assert ended.status_code == 204  # an ended run: the browser stops asking
    kinds = [k for k, _ in messages]
    assert kinds[-1] == "end" and kinds.count("view") >= 1
    views = [json.loads(d) for k, d in messages if k == "view"]
    last = views[-1]
    assert last["status"] == "completed"
    assert set(last["parts"]) == {
        "run-head",
        "run-items",
        "run-graph",
        "run-timeline",
        "run-answer",
        "run-activities",
    }
    assert 'data-id="a" data-state="accepted"' in last["parts"]["run-graph"]
    assert 'data-id="b" data-state="accepted"' in last["parts"]["run-graph"]
    assert 'id="rerun-form"' in last["parts"]["run-head"]  # the form of an ended run
    shown = re.findall(r'<tr class="[a-z]+">', page.text)
    added = "".join(v["log"] for v in views)
    assert last["log_count"] == len(shown) + len(re.findall(r'<tr class="[a-z]+">', added))
    assert "human_decided" not in added and "decided &#39;edit&#39; by ana" in added
    assert "run completed" in added and "run created" not in added  # only what is new
    assert 'data-id="a" data-state="waiting"' in page.text  # as the page was first drawn


async def test_a_magic_link_reaches_no_run_page_form_or_stream(web: Web, make_worker: Any) -> None:
    async with running(make_worker(workflows=[review])):
        task = await web.escalate()
    link = await web.links.create(task.id, ttl=3600)
    async with web.client() as outsider:
        for method, url in (
            ("GET", "/runs/new"),
            ("GET", f"/runs/{task.run_id}/live"),
            ("POST", "/runs"),
            ("POST", f"/runs/{task.run_id}/cancel"),
            ("POST", f"/runs/{task.run_id}/rerun"),
        ):
            reply = await outsider.request(method, f"{url}?link={link.token}")
            assert reply.status_code == 403, url
        assert (await outsider.get("/runs/new")).status_code == 303  # to the sign-in page
        assert (await outsider.post("/runs", data={"goal": "x"})).status_code == 401


async def test_a_live_stream_ends_when_the_browser_goes_away(
    orch: Orchestrator, make_worker: Any
) -> None:
    app = create_app(orch, secret=SECRET, inbox_token=TOKEN)
    async with running(make_worker(workflows=[review])):
        waiting = await orch.start(review, "Check the notes", "ana", None, {"type": "string"})
        await wait_until(lambda: orch.human_tasks.list(run_id=waiting.run_id), "the item")
        # uvicorn stops only once every request's task has ended: the stream must notice
        # that its client left (the run still waits), not run on for its 5 minutes.
        try:
            async with (
                asyncio.timeout(30),
                serving(app, "127.0.0.1") as site,
                httpx.AsyncClient(base_url=site) as http,
            ):
                signin = await http.get("/signin")
                form = {"csrf": csrf_of(signin.text), "name": "ana", "token": TOKEN}
                await http.post("/signin", data=form)
                async with http.stream("GET", f"/runs/{waiting.run_id}/live") as stream:
                    assert await anext(stream.aiter_lines()) == "retry: 2000"
        except TimeoutError:
            raise AssertionError("the live stream outlived its client") from None
        assert (await orch.handle(waiting.run_id).info()).status == "waiting"
