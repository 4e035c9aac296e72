"""The web inbox in a real headless Chromium (Debian's ``chromium``, driven by
Playwright): sign in, filter, open an item raised by a running workflow, edit its output
once wrongly and once rightly, and watch the run finish on its run page; a page of
another site that posts forms to the inbox leaves the person signed in."""

from __future__ import annotations

import asyncio
import html
import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from taskloom import Context, Orchestrator, workflow
from taskloom.web import create_app
from tests.helpers import running

pytestmark = pytest.mark.anyio

TOKEN = "browser-test-inbox-token"
SECRET = "browser-test-secret-" + "x" * 32
MARKUP = (
    "Draft <script>document.title = 'pwned'; alert('pwned')</script>"
    "<img src=x onerror=\"document.title = 'pwned'\"> summary"
)
CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no calls home on a closed network
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str | None:
    """Debian's chromium (``.ci/run`` installs it), or TASKLOOM_CHROMIUM."""
    for candidate in (
        os.environ.get("TASKLOOM_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def required_chromium() -> str:
    """:func:`chromium`, failing the test in CI (which installs it) and skipping it
    elsewhere when there is none."""
    executable = chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium binary: .ci/run installs Debian's chromium; it must be there")
        pytest.skip("no chromium binary (apt-get install chromium; .ci/run installs it)")
    return executable


@workflow(name="browser.review")
async def review(ctx: Context, title: str, assignee: str) -> dict[str, Any]:
    """Escalates like the pipeline does for a text output, then finishes with the
    person's edited output."""
    decision = await ctx.escalate(
        title,
        context={
            "goal": "summarise the field notes",
            "activity": {"id": "summary", "role": "writer", "instructions": "summarise"},
            "output": MARKUP,
            "verdicts": [
                {
                    "verifier": "rules",
                    "status": "fail",
                    "score": 0.0,
                    "reasons": ["contains markup"],
                    "feedback": "remove the markup",
                }
            ],
            "history": [{"attempt": 1, "output": MARKUP, "status": "fail"}],
            "reason": "verification still fails after its retries",
            "output_schema": {"type": "string"},
        },
        decisions=["approve", "edit", "reject", "retry"],
        assignee=assignee,
    )
    data = decision.data if isinstance(decision.data, dict) else {}
    return {"output": data.get("output", MARKUP), "by": decision.by}


@pytest.fixture
async def site(orch: Orchestrator, make_worker: Any) -> AsyncIterator[str]:
    """The web inbox on a free loopback port, served by uvicorn in this event loop."""
    app = create_app(orch, secret=SECRET, inbox_token=TOKEN)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    async with running(make_worker(workflows=[review])):
        try:
            async with asyncio.timeout(10):
                while not server.started:
                    await asyncio.sleep(0.02)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await serving
            sock.close()


async def test_a_person_edits_an_output_in_the_browser_and_the_run_completes(
    site: str, orch: Orchestrator
) -> None:
    executable = required_chromium()
    from playwright.async_api import Dialog, async_playwright, expect

    target = await orch.start(review, "Check the field-notes summary", "ana")
    other = await orch.start(review, "Check the budget table", "bob")
    async with asyncio.timeout(10):
        while len(await orch.human_tasks.list()) < 2:
            await asyncio.sleep(0.02)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = await browser.new_page(java_script_enabled=True)
            dialogs: list[str] = []

            async def refuse(dialog: Dialog) -> None:  # an alert() would mean a script ran
                dialogs.append(dialog.message)
                await dialog.dismiss()

            page.on("dialog", refuse)

            # Sign in (the list sends us to the sign-in page and back).
            await page.goto(f"{site}/")
            await expect(page).to_have_url(f"{site}/signin?next=%2F")
            await page.fill("input[name=name]", "ana")
            await page.fill("input[name=token]", "not the token")
            await page.click("button:has-text('Sign in')")
            await expect(page.locator("#signin-error")).to_contain_text("not the inbox")
            await page.fill("input[name=name]", "ana")
            await page.fill("input[name=token]", TOKEN)
            await page.click("button:has-text('Sign in')")
            await expect(page).to_have_url(f"{site}/")
            await expect(page.locator("#counts")).to_contain_text("2 open items")

            # Filter to ana's items.
            await page.fill("input[name=assignee]", "ana")
            await page.click("button:has-text('Filter')")
            items = page.locator("#items")
            await expect(items).to_contain_text("Check the field-notes summary")
            await expect(items).not_to_contain_text("Check the budget table")

            # Open the item: the model's markup is shown as text, never run.
            await page.click("text=Check the field-notes summary")
            output = page.locator("#output pre")
            await expect(output).to_contain_text("<script>document.title = 'pwned'")
            await expect(output).to_contain_text('<img src=x onerror="document.title')
            assert await page.title() != "pwned"
            assert await page.locator("main script, main img").count() == 0

            # An invalid edit (empty) is refused next to the field, nothing recorded.
            editor = page.locator("textarea#edit-output")
            await editor.fill("")
            async with page.expect_response(lambda r: r.url.endswith("/decide")) as refused:
                await page.click("button:has-text('Save the edited output')")
            assert (await refused.value).status == 400
            await expect(page.locator("#edit-errors")).to_contain_text("the output is empty")
            assert (await orch.human_tasks.get(f"{target.run_id}/0")).status == "open"

            # A valid edit is recorded and the run goes on with it.
            await editor.fill("The field notes, summarised by ana.")
            async with page.expect_response(lambda r: r.url.endswith("/decide")) as accepted:
                await page.click("button:has-text('Save the edited output')")
            assert (await accepted.value).status == 303
            await expect(page.locator("#status")).to_have_text("decided")

            # The run page: reload until the run has completed.
            await page.click(f"a[href='/runs/{target.run_id}']")
            status = page.locator("#run-status")
            async with asyncio.timeout(30):
                while (await status.inner_text()) != "completed":
                    await asyncio.sleep(0.2)
                    await page.reload()
            await expect(page.locator("#result")).to_contain_text(
                "The field notes, summarised by ana."
            )
            await expect(page.locator("#log")).to_contain_text("decided 'edit' by ana")
            assert dialogs == [] and await page.title() != "pwned"
        finally:
            await browser.close()

    assert await orch.handle(target.run_id).result(timeout=5) == {
        "output": "The field notes, summarised by ana.",
        "by": "ana",
    }
    assert (await orch.handle(other.run_id).info()).status == "waiting"


@asynccontextmanager
async def serving(app: Any, host: str) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free port of ``host``, in this event loop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def forging_site(site: str) -> Starlette:
    """Another site's page (``/?to=PATH``) whose form posts itself to ``site + PATH`` as
    soon as it loads, the way a cross-site request forgery arrives."""

    async def page(request: Request) -> HTMLResponse:
        action = html.escape(site + request.query_params["to"], quote=True)
        return HTMLResponse(
            f'<!doctype html><form id="f" method="post" action="{action}">'
            '<input name="csrf" value="forged"><input name="decision" value="approve">'
            "</form><script>document.getElementById('f').submit()</script>"
        )

    return Starlette(routes=[Route("/", page)])


async def test_a_cross_site_form_does_not_sign_the_person_out(
    site: str, orch: Orchestrator
) -> None:
    executable = required_chromium()
    from playwright.async_api import async_playwright, expect

    run = await orch.start(review, "Check the field-notes summary", "ana")
    async with asyncio.timeout(10):
        while not await orch.human_tasks.list(run_id=run.run_id):
            await asyncio.sleep(0.02)
    decide = f"/items/{run.run_id}/0/decide"

    # 127.0.0.2 is another site than 127.0.0.1: the browser keeps the SameSite=Lax
    # session cookie off the forged POST.
    async with (
        serving(forging_site(site), "127.0.0.2") as evil,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = await browser.new_page()
            await page.goto(f"{site}/signin")
            await page.fill("input[name=name]", "ana")
            await page.fill("input[name=token]", TOKEN)
            await page.click("button:has-text('Sign in')")
            await expect(page).to_have_url(f"{site}/")

            for target in ("/signout", decide):
                async with page.expect_response(
                    lambda r, t=target: r.url == f"{site}{t}" and r.request.method == "POST"
                ) as forged:
                    await page.goto(f"{evil}/?to={target}")
                reply = await forged.value
                assert reply.status in (401, 403), target

                # Still signed in: the inbox opens without a detour to the sign-in page.
                await page.goto(f"{site}/")
                await expect(page).to_have_url(f"{site}/")
                await expect(page.locator("#counts")).to_contain_text("1 open item")
                assert "set-cookie" not in await reply.all_headers(), target
        finally:
            await browser.close()
    assert (await orch.human_tasks.get(f"{run.run_id}/0")).status == "open"
