"""The web inbox over HTTP: sign-in, the list, item pages, decisions, CSRF, edits, the
run page, /metrics and magic links, against real Redis and runs on a real worker."""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from taskloom import (
    ConfigurationError,
    Context,
    HumanTask,
    ManualClock,
    Orchestrator,
    workflow,
)
from taskloom.agents.fake_llm import FakeLLM
from taskloom.inbox.signing import Signer, load_secret
from taskloom.settings import Settings
from taskloom.testing.simulated import SimulatedTeam
from taskloom.web import MagicLinks, create_app
from taskloom.web.app import SESSION_COOKIE
from tests.helpers import ROOT, running, start_taskloom, taskloom, wait_until

pytestmark = pytest.mark.anyio

SECRET = "s" * 20 + "-test-secret-for-the-web-inbox"
TOKEN = "inbox-token-for-tests"
SCRIPT = "<script>alert('pwned')</script>"
BASE_URL = "http://localhost:8765"  # a Host the inbox answers by default (loopback)
TEXT = {"type": "string"}
SCORED = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["title", "score"],
}


@workflow(name="web.review")
async def review(
    ctx: Context, title: str, output: Any, assignee: str | None, schema: dict[str, Any]
) -> dict[str, Any]:
    """An escalation shaped like the pipeline's, then the decision (and edit) as result."""
    decision = await ctx.escalate(
        title,
        context={
            "goal": "summarise the field notes",
            "activity": {
                "id": "summary",
                "role": "writer",
                "instructions": "summarise the notes in one paragraph",
                "inputs": ["notes"],
            },
            "output": output,
            "verdicts": [
                {
                    "verifier": "rules",
                    "status": "fail",
                    "score": 0.25,
                    "reasons": [f"contains markup {SCRIPT}"],
                    "evidence": {"match": SCRIPT},
                    "feedback": "remove the markup",
                }
            ],
            "history": [{"attempt": 1, "output": output, "status": "fail", "feedback": "again"}],
            "reason": "verification still fails after its retries",
            "output_schema": schema,
        },
        decisions=["approve", "edit", "reject", "retry"],
        assignee=assignee,
        sla=3600,
    )
    data = decision.data if isinstance(decision.data, dict) else {}
    return {
        "decision": decision.decision,
        "by": decision.by,
        "note": decision.note,
        "output": data.get("output", output),
    }


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, "no CSRF field on the page"
    return html.unescape(m.group(1))


def textarea_of(page: str, name: str = "output") -> str:
    m = re.search(rf'<textarea id="edit-{name}" name="{name}"[^>]*>(.*?)</textarea>', page, re.S)
    assert m, f"no {name} field on the page"
    return html.unescape(m.group(1))


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@dataclass
class Web:
    http: httpx.AsyncClient
    app: Any
    orch: Orchestrator
    clock: ManualClock
    links: MagicLinks

    async def signin(self, name: str = "ana") -> None:
        page = await self.http.get("/signin")
        reply = await self.http.post(
            "/signin", data={"csrf": csrf_of(page.text), "name": name, "token": TOKEN}
        )
        assert reply.status_code == 303, reply.text

    async def escalate(
        self,
        title: str = "Check the summary",
        output: Any = "a draft summary",
        *,
        assignee: str | None = "ana",
        schema: dict[str, Any] = TEXT,
    ) -> HumanTask:
        handle = await self.orch.start(review, title, output, assignee, schema)
        (task,) = await wait_until(
            lambda: self.orch.human_tasks.list(run_id=handle.run_id), f"the item of {title!r}"
        )
        return task  # type: ignore[no-any-return]

    async def page(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(url, **kwargs)

    async def decide(self, task: HumanTask, decision: str, **fields: str) -> httpx.Response:
        url = f"/items/{task.run_id}/{task.seq}"
        page = await self.http.get(url)
        assert page.status_code == 200, page.text
        form = {"csrf": csrf_of(page.text), "decision": decision, **fields}
        return await self.http.post(f"{url}/decide", data=form)

    def client(self) -> httpx.AsyncClient:
        """Another browser: no cookies shared with ``http``."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE_URL)


@pytest.fixture
async def web(orch: Orchestrator, make_worker: Any) -> AsyncIterator[Web]:
    clock = ManualClock()
    app = create_app(orch, secret=SECRET, inbox_token=TOKEN, clock=clock)
    links = MagicLinks(orch.store, secret=SECRET, clock=clock)
    async with (
        running(make_worker(workflows=[review])),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http,
    ):
        yield Web(http, app, orch, clock, links)


# -- signing in -------------------------------------------------------------------------
async def test_every_page_needs_a_sign_in_and_a_wrong_token_is_refused(web: Web) -> None:
    task = await web.escalate()
    for url in ("/", "/runs", f"/runs/{task.run_id}", f"/items/{task.run_id}/{task.seq}"):
        reply = await web.page(url)
        assert reply.status_code == 303, url
        assert reply.headers["location"].startswith("/signin?next=")
    metrics = await web.page("/metrics")
    assert metrics.status_code == 401 and "Bearer" in metrics.headers["www-authenticate"]
    post = await web.http.post(f"/items/{task.run_id}/{task.seq}/decide", data={"x": "1"})
    assert post.status_code == 401

    page = await web.page("/signin?next=/runs")
    csrf = csrf_of(page.text)
    wrong = await web.http.post(
        "/signin", data={"csrf": csrf, "name": "ana", "token": "guess", "next": "/runs"}
    )
    assert wrong.status_code == 401 and "not the inbox&#39;s sign-in token" in wrong.text
    no_csrf = await web.http.post("/signin", data={"name": "ana", "token": TOKEN})
    assert no_csrf.status_code == 403
    assert (await web.page("/")).status_code == 303  # still signed out

    ok = await web.http.post(
        "/signin", data={"csrf": csrf, "name": "ana", "token": TOKEN, "next": "/runs"}
    )
    assert (ok.status_code, ok.headers["location"]) == (303, "/runs")
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert (await web.page("/")).status_code == 200


async def test_a_tampered_or_old_session_cookie_signs_nobody_in(web: Web) -> None:
    await web.signin()
    value = web.http.cookies[SESSION_COOKIE]
    flipped = value[:-1] + ("A" if value[-1] != "A" else "B")
    async with web.client() as other:
        other.cookies.set(SESSION_COOKIE, flipped)
        assert (await other.get("/")).status_code == 303
        forged = Signer("another-secret-of-at-least-32-chars!!").sign(
            "session", {"u": "mallory", "c": "x", "x": 2**50}
        )
        other.cookies.set(SESSION_COOKIE, forged)
        assert (await other.get("/")).status_code == 303
    web.clock.advance(13 * 3600)  # sessions last 12 hours
    assert (await web.page("/")).status_code == 303


async def test_sign_out_ends_the_session_and_open_redirects_are_refused(web: Web) -> None:
    page = await web.page("/signin?next=//evil.example/x")
    reply = await web.http.post(
        "/signin",
        data={"csrf": csrf_of(page.text), "name": "ana", "token": TOKEN, "next": "//evil/x"},
    )
    assert reply.headers["location"] == "/"
    inbox = await web.page("/")
    out = await web.http.post("/signout", data={"csrf": csrf_of(inbox.text)})
    assert out.status_code == 303
    assert (await web.page("/")).status_code == 303


# -- the list ---------------------------------------------------------------------------
async def test_the_list_filters_by_assignee_run_and_age_and_counts(web: Web) -> None:
    a1 = await web.escalate("First for ana")
    await web.escalate("Second for ana")
    b1 = await web.escalate("One for bob", assignee="bob")
    await web.signin()
    everything = await web.page("/")
    assert "<strong>3</strong> open items" in everything.text
    assert "First for ana" in everything.text and "One for bob" in everything.text
    assert re.search(r'assignee=ana">ana</a>: 2', everything.text)

    bob = await web.page("/", params={"assignee": "bob"})
    assert "One for bob" in bob.text and "First for ana" not in bob.text
    assert "<strong>1</strong> shown" in bob.text
    by_run = await web.page("/", params={"run": a1.run_id})
    assert "First for ana" in by_run.text and "Second for ana" not in by_run.text
    old = await web.page("/", params={"age": "2h"})
    assert "No open item matches" in old.text
    young = await web.page("/", params={"age": "0s", "assignee": "bob"})
    assert "One for bob" in young.text and b1.title in young.text

    bad = await web.page("/", params={"age": "soon"})
    assert bad.status_code == 400 and "Write an age like" in bad.text


# -- the item page ----------------------------------------------------------------------
async def test_the_item_page_shows_everything_and_escapes_model_output(web: Web) -> None:
    task = await web.escalate(f"Review {SCRIPT}", f"Summary <b>bold</b> {SCRIPT}")
    await web.signin()
    page = await web.page(f"/items/{task.run_id}/{task.seq}")
    assert page.status_code == 200
    body = page.text
    assert "<script>" not in body and "<b>bold</b>" not in body
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in body
    assert "Summary &lt;b&gt;bold&lt;/b&gt;" in body
    for shown in (
        "summarise the field notes",  # goal
        "summarise the notes in one paragraph",  # activity instructions
        "writer",
        "verification still fails after its retries",  # reason
        "remove the markup",  # verdict feedback
        "contains markup &lt;script&gt;",  # verdict reasons
        "0.25",
        "again",  # history
        "due in 1h",  # SLA
        "approve, edit, reject, retry",
    ):
        assert shown in body, shown
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    runs = await web.page(f"/runs/{task.run_id}")
    assert "<script>" not in runs.text and "escalated for ana: Review &lt;script&gt;" in runs.text


async def test_unknown_items_and_routes_are_404(web: Web) -> None:
    await web.signin()
    assert (await web.page("/items/nope/0")).status_code == 404
    assert (await web.page("/runs/nope")).status_code == 404
    assert (await web.page("/no/such/page")).status_code == 404


# -- deciding ---------------------------------------------------------------------------
async def test_a_decision_is_recorded_once_and_a_second_one_gets_409(web: Web) -> None:
    task = await web.escalate()
    await web.signin()
    url = f"/items/{task.run_id}/{task.seq}"
    page = await web.page(url)
    csrf = csrf_of(page.text)
    first = await web.http.post(
        f"{url}/decide", data={"csrf": csrf, "decision": "approve", "note": "looks fine"}
    )
    assert (first.status_code, first.headers["location"]) == (303, url)
    result = await web.orch.handle(task.run_id).result(timeout=10)
    assert result == {
        "decision": "approve",
        "by": "ana",
        "note": "looks fine",
        "output": "a draft summary",
    }
    second = await web.http.post(f"{url}/decide", data={"csrf": csrf, "decision": "reject"})
    assert second.status_code == 409
    assert "already decided" in second.text and "Nothing was changed" in second.text
    events = [e.type for e in await web.orch.store.read_log(task.run_id)]
    assert events.count("human_decided") == 1
    after = await web.page(url)
    assert (
        "decided" in after.text
        and "looks fine" in after.text
        and 'name="decision"' not in after.text
    )
    assert "taskloom worker" in after.text  # a decision resumes the run only with a worker


async def test_two_decisions_racing_on_one_item_get_one_winner(web: Web) -> None:
    task = await web.escalate()
    await web.signin()
    url = f"/items/{task.run_id}/{task.seq}"
    csrf = csrf_of((await web.page(url)).text)
    replies = await asyncio.gather(
        *(
            web.http.post(f"{url}/decide", data={"csrf": csrf, "decision": d})
            for d in ("approve", "reject")
        )
    )
    assert sorted(r.status_code for r in replies) == [303, 409]


async def test_a_form_without_a_valid_csrf_token_is_refused(web: Web) -> None:
    task = await web.escalate()
    await web.signin()
    url = f"/items/{task.run_id}/{task.seq}/decide"
    missing = await web.http.post(url, data={"decision": "approve"})
    wrong = await web.http.post(url, data={"decision": "approve", "csrf": "not-it"})
    assert missing.status_code == wrong.status_code == 403
    assert "security token is missing or wrong" in missing.text
    async with web.client() as bob:  # a valid token of another session is no good here
        page = await bob.get("/signin")
        await bob.post("/signin", data={"csrf": csrf_of(page.text), "name": "bob", "token": TOKEN})
        theirs = csrf_of((await bob.get("/")).text)
    stolen = await web.http.post(url, data={"decision": "approve", "csrf": theirs})
    assert stolen.status_code == 403
    assert (await web.orch.human_tasks.get(task.id)).status == "open"


async def test_bad_forms_are_refused_with_the_right_status(web: Web) -> None:
    task = await web.escalate()
    await web.signin()
    url = f"/items/{task.run_id}/{task.seq}"
    csrf = csrf_of((await web.page(url)).text)
    unknown = await web.http.post(f"{url}/decide", data={"csrf": csrf, "decision": "replan"})
    assert unknown.status_code == 400 and "not one of this item" in unknown.text
    huge = await web.http.post(
        f"{url}/decide", data={"csrf": csrf, "decision": "edit", "output": "x" * 2_000_000}
    )
    assert huge.status_code == 413
    as_json = await web.http.post(f"{url}/decide", json={"csrf": csrf, "decision": "approve"})
    assert as_json.status_code == 415
    assert (await web.orch.human_tasks.get(task.id)).status == "open"


async def test_an_invalid_edit_is_shown_next_to_the_field_and_records_nothing(web: Web) -> None:
    task = await web.escalate(output="first draft")
    await web.signin()
    reply = await web.decide(task, "edit", output="  \r\n ")
    assert reply.status_code == 400
    assert 'id="edit-errors"' in reply.text and "the output is empty" in reply.text
    assert (await web.orch.human_tasks.get(task.id)).status == "open"
    assert "human_decided" not in [e.type for e in await web.orch.store.read_log(task.run_id)]

    ok = await web.decide(task, "edit", output="the edited\r\nsummary", note="tidied")
    assert ok.status_code == 303
    result = await web.orch.handle(task.run_id).result(timeout=10)
    assert result["decision"] == "edit" and result["output"] == "the edited\nsummary"


async def test_a_json_edit_is_checked_against_the_output_schema(web: Web) -> None:
    task = await web.escalate(output={"title": "t", "score": 1}, schema=SCORED)
    await web.signin()
    page = await web.page(f"/items/{task.run_id}/{task.seq}")
    assert "&#34;score&#34;: 1" in page.text  # the current output, as JSON, to edit
    cases = {
        "{not json": "not JSON",
        '{"title": "t"}': "score: missing (required)",
        '{"title": "t", "score": "high"}': "score: expected integer, got string",
        '["a list"]': "expected object, got array",
    }
    for text, error in cases.items():
        reply = await web.decide(task, "edit", output=text)
        assert reply.status_code == 400, text
        assert error in html.unescape(reply.text), (text, error)
        assert textarea_of(reply.text) == text  # what was typed is kept
    ok = await web.decide(task, "edit", output='{"title": "better", "score": 7}')
    assert ok.status_code == 303
    result = await web.orch.handle(task.run_id).result(timeout=10)
    assert result["output"] == {"title": "better", "score": 7}


# -- the run page, with a real pipeline --------------------------------------------------
async def test_the_run_page_tells_a_pipeline_run_from_plan_to_result(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    verify = {"rules": {"banned": ["secret"]}, "max_retries": 0}
    plan = {
        "activities": [
            {"id": "a", "role": "writer", "instructions": "write part a", "verify": verify},
            {"id": "b", "role": "writer", "instructions": "write part b", "inputs": ["a"]},
        ]
    }
    team = SimulatedTeam(plans=[plan], work=lambda task, fb: f"secret notes for {task}")
    fake.answer_with(team)
    app = create_app(orch, secret=SECRET, inbox_token=TOKEN)
    async with (
        running(orch.worker()),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http,
    ):
        w = Web(http, app, orch, ManualClock(), MagicLinks(orch.store, secret=SECRET))
        await w.signin("ana")
        handle = await orch.submit("a report in two parts", model="openai:gpt-4.1-mini")
        (task,) = await wait_until(
            lambda: orch.human_tasks.list(run_id=handle.run_id), "the escalation"
        )
        item = await w.page(f"/items/{task.run_id}/{task.seq}")
        assert "a report in two parts" in item.text and "write part a" in item.text
        assert "banned" in item.text.lower()  # the rules verdict's reason
        running_page = await w.page(f"/runs/{handle.run_id}")
        assert 'http-equiv="refresh"' in running_page.text  # reloads itself while running
        shown = html.unescape(running_page.text)
        assert "waiting" in shown and task.title[:40] in shown
        assert (await w.decide(task, "edit", output="clean notes for a")).status_code == 303
        result = await handle.result(timeout=30)
        assert result["activities"]["a"]["output"] == "clean notes for a"
        page = await w.page(f"/runs/{handle.run_id}")
    body = page.text
    assert 'id="run-status">completed<' in body and 'http-equiv="refresh"' not in body
    for shown in (
        "plan v1 by planner: 2 activities (a, b)",  # the planner's decision
        "activity a: verified fail (attempt 1)",  # verdicts
        "activity a: escalated",
        "activity a: decided &#39;edit&#39; by ana",
        "activity a: accepted (by ana)",
        "activity b: accepted (by verifiers)",
        "integrated a, b: verification pass",
        "run completed",
    ):
        assert shown in body, shown
    tokens = re.search(r'<span id="tokens">(\d+)</span>', body)
    assert tokens and int(tokens[1]) > 0 and re.search(r'<span id="cost">\$0\.\d{4}</span>', body)
    assert re.search(r'<g class="node state-accepted" data-id="a" data-state="accepted"', body)
    assert 'data-from="a" data-to="b"' in body  # the plan's graph: b needs a
    assert re.search(r'<tr id="act-a" data-state="accepted">.*?writer.*?edit by ana', body, re.S)


# -- metrics ----------------------------------------------------------------------------
async def test_metrics_need_a_session_or_the_bearer_token(web: Web) -> None:
    await web.escalate()
    async with web.client() as scraper:
        assert (await scraper.get("/metrics")).status_code == 401
        bad = await scraper.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        ok = await scraper.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and "taskloom_human_tasks_open 1.0" in ok.text
    assert 'taskloom_inbox_open_items{assigned="yes"} 1.0' in ok.text
    assert SESSION_COOKIE not in ok.headers.get("set-cookie", "")  # a scrape holds no session
    await web.signin()
    assert "taskloom_human_tasks_open" in (await web.page("/metrics")).text


async def test_an_empty_inbox_token_is_refused_where_the_app_is_made(orch: Orchestrator) -> None:
    with pytest.raises(ConfigurationError, match="TASKLOOM_INBOX_TOKEN"):
        create_app(orch, secret=SECRET, inbox_token="")


# -- magic links ------------------------------------------------------------------------
async def test_a_magic_link_opens_its_item_and_takes_one_decision(web: Web) -> None:
    task = await web.escalate(output=f"draft {SCRIPT}")
    other = await web.escalate("Another item")
    link = await web.links.create(task.id, ttl=3600, reviewer="partner@example.com")
    assert link.url.startswith("http://127.0.0.1:8765/items/")
    url = path_of(link.url)
    async with web.client() as outsider:
        page = await outsider.get(url)
        assert page.status_code == 200
        assert "You were sent this item" in page.text and "Check the summary" in page.text
        assert "<script>" not in page.text
        assert 'href="/"' not in page.text and "/runs/" not in page.text  # no way onwards
        assert SESSION_COOKIE not in page.headers.get("set-cookie", "")
        token = link.token
        for elsewhere in (
            f"/items/{other.run_id}/{other.seq}?link={token}",
            f"/?link={token}",
            f"/runs?link={token}",
            f"/runs/{task.run_id}?link={token}",
            f"/metrics?link={token}",
            f"/signin?link={token}",
        ):
            reply = await outsider.get(elsewhere)
            assert reply.status_code == 403, elsewhere
            assert "Check the summary" not in reply.text
        assert (await outsider.get("/")).status_code == 303  # the link signed nobody in

        form = {"csrf": csrf_of(page.text), "decision": "approve", "note": "ok by me"}
        on_other = await outsider.post(
            f"/items/{other.run_id}/{other.seq}/decide?link={token}", data=form
        )
        assert on_other.status_code == 403
        done = await outsider.post(f"{urlsplit(link.url).path}/decide?link={token}", data=form)
        assert done.status_code == 200 and "was recorded" in done.text
        again = await outsider.get(url)
        assert again.status_code == 410 and "already used" in again.text
        twice = await outsider.post(f"{urlsplit(link.url).path}/decide?link={token}", data=form)
        assert twice.status_code == 410
    result = await web.orch.handle(task.run_id).result(timeout=10)
    assert (result["decision"], result["by"]) == ("approve", "partner@example.com")
    assert (await web.orch.human_tasks.get(other.id)).status == "open"
    (state,) = await web.links.list(task.id)
    assert state.state == "used"


async def test_the_team_makes_and_revokes_links_on_the_item_page(web: Web) -> None:
    task = await web.escalate()
    await web.signin()
    url = f"/items/{task.run_id}/{task.seq}"
    csrf = csrf_of((await web.page(url)).text)
    made = await web.http.post(
        f"{url}/links", data={"csrf": csrf, "reviewer": "dana@partner.example", "ttl": "86400"}
    )
    assert made.status_code == 201
    m = re.search(r'<p class="notice" id="new-link">.*?<code>([^<]+)</code>', made.text, re.S)
    assert m, made.text
    link_url = html.unescape(m.group(1))
    (link,) = await web.links.list(task.id)
    assert (link.reviewer, link.state) == ("dana@partner.example", "open")
    assert link.expires_ms == web.clock.now_ms() + 86400 * 1000
    async with web.client() as outsider:
        assert (await outsider.get(path_of(link_url))).status_code == 200
        token = path_of(link_url).split("link=")[1]
        sneaky = await outsider.post(
            f"{url}/links?link={token}", data={"csrf": csrf, "ttl": "86400"}
        )
        assert sneaky.status_code == 403  # a link cannot make more links
        assert "revoke" in (await web.page(url)).text.lower()
        revoked = await web.http.post(f"{url}/links/{link.id}/revoke", data={"csrf": csrf})
        assert revoked.status_code == 303
        assert (await outsider.get(path_of(link_url))).status_code == 403
    bad = await web.http.post(f"{url}/links", data={"csrf": csrf, "ttl": "31536000"})
    assert bad.status_code == 400
    no_csrf = await web.http.post(f"{url}/links", data={"ttl": "86400"})
    assert no_csrf.status_code == 403
    assert len(await web.links.list(task.id)) == 1


async def test_a_link_form_needs_the_links_own_csrf_token(web: Web) -> None:
    task = await web.escalate()
    link = await web.links.create(task.id, ttl=3600)
    await web.signin()
    session_csrf = csrf_of((await web.page("/")).text)
    action = f"{urlsplit(link.url).path}/decide?link={link.token}"
    async with web.client() as outsider:
        for csrf in ("", "forged", session_csrf):
            reply = await outsider.post(action, data={"csrf": csrf, "decision": "approve"})
            assert reply.status_code == 403
        assert (await outsider.get(path_of(link.url))).status_code == 200  # still unused


async def test_an_invalid_edit_through_a_link_leaves_it_usable(web: Web) -> None:
    task = await web.escalate()
    link = await web.links.create(task.id, ttl=3600)
    async with web.client() as outsider:
        page = await outsider.get(path_of(link.url))
        action = f"{urlsplit(link.url).path}/decide?link={link.token}"
        form = {"csrf": csrf_of(page.text), "decision": "edit", "output": ""}
        bad = await outsider.post(action, data=form)
        assert bad.status_code == 400 and "the output is empty" in bad.text
        assert f"decide?link={link.token}" in bad.text  # the form still posts with the link
        ok = await outsider.post(action, data=form | {"output": "fixed by the partner"})
        assert ok.status_code == 200
    result = await web.orch.handle(task.run_id).result(timeout=10)
    assert result["output"] == "fixed by the partner"


async def test_links_racing_on_one_token_record_one_decision(web: Web) -> None:
    task = await web.escalate()
    link = await web.links.create(task.id, ttl=3600)
    async with web.client() as outsider:
        page = await outsider.get(path_of(link.url))
        action = f"{urlsplit(link.url).path}/decide?link={link.token}"
        replies = await asyncio.gather(
            *(
                outsider.post(action, data={"csrf": csrf_of(page.text), "decision": d})
                for d in ("approve", "reject", "retry")
            )
        )
    assert sorted(r.status_code for r in replies) == [200, 410, 410]
    events = [e.type for e in await web.orch.store.read_log(task.run_id)]
    assert events.count("human_decided") == 1


async def test_an_expired_link_is_gone(web: Web) -> None:
    task = await web.escalate()
    link = await web.links.create(task.id, ttl=60)
    async with web.client() as outsider:
        assert (await outsider.get(path_of(link.url))).status_code == 200
        web.clock.advance(61)
        reply = await outsider.get(path_of(link.url))
    assert reply.status_code == 410 and "expired" in reply.text
    assert (await web.links.list(task.id))[0].state == "expired"


async def test_a_revoked_link_is_refused(web: Web) -> None:
    task = await web.escalate()
    link = await web.links.create(task.id, ttl=3600)
    revoked = await web.links.revoke(link.url)  # by URL, token or id
    assert revoked.state == "revoked"
    async with web.client() as outsider:
        reply = await outsider.get(path_of(link.url))
    assert reply.status_code == 403 and "revoked" in reply.text


async def test_a_link_with_any_character_changed_is_refused(web: Web) -> None:
    task = await web.escalate()
    link = await web.links.create(task.id, ttl=3600)
    base = urlsplit(link.url).path
    token = link.token
    async with web.client() as outsider:
        for i, c in enumerate(token):
            for swap in {"A" if c != "A" else "B", "." if c != "." else "x"}:
                changed = token[:i] + swap + token[i + 1 :]
                reply = await outsider.get(f"{base}?link={changed}")
                assert reply.status_code == 403, (i, changed)
        for cut in (token[:-1], token + "A", token.split(".")[0], ""):
            assert (await outsider.get(f"{base}?link={cut}")).status_code == 403
        assert (await outsider.get(f"{base}?link={token}")).status_code == 200


async def test_a_link_to_a_decided_item_is_gone(web: Web) -> None:
    task = await web.escalate()
    link = await web.links.create(task.id, ttl=3600)
    await web.orch.human_tasks.decide(task.id, "reject", by="ana")
    async with web.client() as outsider:
        reply = await outsider.get(path_of(link.url))
    assert reply.status_code == 410 and "decided" in reply.text
    with pytest.raises(Exception, match="decided"):
        await web.links.create(task.id)


# -- the CLI: serve and link --------------------------------------------------------------
def cli_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLOOM_")}
    return env | {
        "TASKLOOM_REDIS_URL": redis_url,
        "TASKLOOM_KEY_PREFIX": prefix,
        "PYTHONPATH": str(ROOT),
        **extra,
    }


async def test_taskloom_link_creates_lists_and_revokes_links(
    web: Web, redis_url: str, prefix: str
) -> None:
    task = await web.escalate()
    env = cli_env(redis_url, prefix, TASKLOOM_SECRET=SECRET)
    made = await asyncio.to_thread(
        taskloom, "link", "create", task.id, "--ttl", "600", "--for", "carol", "--json", env=env
    )
    assert made.returncode == 0, made.stderr
    link = json.loads(made.stdout)
    assert (link["task_id"], link["reviewer"]) == (task.id, "carol")
    async with web.client() as outsider:
        assert (await outsider.get(path_of(link["url"]))).status_code == 200
        listed = await asyncio.to_thread(taskloom, "link", "list", task.id, env=env)
        assert f"{link['id']}  open" in listed.stdout
        gone = await asyncio.to_thread(taskloom, "link", "revoke", link["url"], env=env)
        assert gone.returncode == 0 and "is revoked" in gone.stdout
        assert (await outsider.get(path_of(link["url"]))).status_code == 403
    missing = await asyncio.to_thread(taskloom, "link", "create", "nope/0", env=env)
    assert missing.returncode == 2 and "no human task" in missing.stderr


async def test_serve_refuses_to_start_without_an_inbox_token(redis_url: str, prefix: str) -> None:
    proc = await asyncio.to_thread(taskloom, "serve", env=cli_env(redis_url, prefix))
    assert proc.returncode == 2
    assert "TASKLOOM_INBOX_TOKEN" in proc.stderr


async def test_serve_makes_a_private_secret_and_serves_on_loopback(
    redis_url: str, prefix: str
) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="tl-serve-", dir="/tmp"))
    env = cli_env(redis_url, prefix, TASKLOOM_INBOX_TOKEN=TOKEN, TASKLOOM_DATA_DIR=str(data_dir))
    proc = start_taskloom("serve", "--port", "0", env=env)
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{m.group(1)}") as http:
            page = await http.get("/signin")
            assert page.status_code == 200 and "Sign in to the inbox" in page.text
        # The default public URL names port 8765: links made for this server would open
        # nothing, and serve says what to set.
        said = [await asyncio.to_thread(proc.stdout.readline) for _ in range(2)]
        assert "magic links point at http://127.0.0.1:8765" in said[0], said
        want = f"TASKLOOM_PUBLIC_URL=http://127.0.0.1:{m.group(1)}"
        assert "not this server's port" in said[1] and want in said[1], said
        secret = data_dir / "secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        settings = Settings(data_dir=data_dir)
        assert load_secret(settings, create=False) == secret.read_text().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_web_package_exports_what_it_means_to_and_loads_starlette_late() -> None:
    import taskloom.web as web_package

    assert sorted(web_package.__all__) == web_package.__all__
    for name in web_package.__all__:
        assert getattr(web_package, name) is not None, name
    code = "import sys, taskloom.terminal.cli, taskloom.web; print('starlette' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
