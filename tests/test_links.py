"""Magic links belong to an item's current assignment: reassigning the item ends them,
each reviewer holds one live link per item, a mailed link lives as long as the item's
SLA (plus a grace), and a revocation is never undone by a decision that fails."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from taskloom import Context, ManualClock, Orchestrator, Reassign, UserError, workflow
from taskloom.engine.human import HumanTasks
from taskloom.inbox.links import LinkRefusedError
from taskloom.inbox.notify import LINK_GRACE, Notifier, magic_links
from taskloom.settings import Settings
from taskloom.web import MagicLinks, create_app
from tests.helpers import running, wait_until
from tests.test_notify import FAST, SmtpServer, open_task

pytestmark = pytest.mark.anyio

SECRET = "l" * 20 + "-test-secret-for-magic-links"
TOKEN = "inbox-token-for-link-tests"
ALICE, BOB = "alice@example.test", "bob@example.test"


@workflow(name="links.approve")
async def approve(ctx: Context, sla: float) -> dict[str, Any]:
    """Alice has ``sla`` seconds to answer; then the item passes to Bob for an hour."""
    decision = await ctx.escalate(
        "Approve the partner's invoice?",
        decisions=["approve", "reject"],
        assignee=ALICE,
        sla=sla,
        fallback=[Reassign(BOB, sla=3600)],
    )
    return {"decision": decision.decision, "by": decision.by}


@dataclass
class Site:
    orch: Orchestrator
    clock: ManualClock
    http: httpx.AsyncClient
    links: MagicLinks


@pytest.fixture
async def site(orch: Orchestrator, make_worker: Any) -> AsyncIterator[Site]:
    clock = ManualClock()
    app = create_app(orch, secret=SECRET, inbox_token=TOKEN, clock=clock)
    async with (
        running(make_worker(workflows=[approve], clock=clock)),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost:8765"
        ) as http,
    ):
        yield Site(orch, clock, http, MagicLinks(orch.store, secret=SECRET, clock=clock))


def mailed_links(mails: list[tuple[str, list[str], Message]], to: str) -> list[str]:
    """The magic links (path and query) in the mails sent to ``to``, in order."""
    found = []
    for _, recipients, message in mails:
        text = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
        url = next(w for w in text.split() if w.startswith("http"))
        if recipients == [to] and "?link=" in url:
            parts = urlsplit(url)
            found.append(f"{parts.path}?{parts.query}")
    return found


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, "no CSRF field on the page"
    return html.unescape(m.group(1))


async def test_a_reassigned_item_ends_the_links_mailed_to_its_earlier_reviewer(
    site: Site,
) -> None:
    orch, clock, inbox = site.orch, site.clock, site.orch.human_tasks
    settings = Settings(secret=SECRET, public_url="http://localhost:8765")
    async with (
        SmtpServer() as smtp,
        Notifier(
            orch.store,
            smtp_url=f"smtp://127.0.0.1:{smtp.port}",
            clock=clock,
            retry=FAST,
            link=magic_links(orch.store, settings, clock),
        ) as notifier,
    ):

        async def mailed(n: int) -> bool:
            await notifier.deliver_due()
            return len(smtp.mails) >= n

        handle = await orch.start(approve, 4.0)
        (task,) = await wait_until(lambda: inbox.list(run_id=handle.run_id), "Alice's item")
        await wait_until(lambda: mailed(1), "the mail that the item opened")
        clock.advance(3.3)  # 80 % of the SLA: "due soon"
        await wait_until(lambda: mailed(2), "the mail that the item is due soon")
        clock.advance(1)  # breached: the fallback passes the item to Bob
        await wait_until(lambda: inbox.list(assignee=BOB), "the item to move to Bob")
        await wait_until(lambda: mailed(4), "the mails about the breach and to Bob")
    alice = mailed_links(smtp.mails, ALICE)
    assert alice and [r for _, r, _ in smtp.mails].count([ALICE]) == 3
    (bob,) = mailed_links(smtp.mails, BOB)
    c = site.http  # a link visit carries no session
    for url in alice:
        page = await c.get(url)
        assert page.status_code == 403, page.text
        assert "This item has moved on" in page.text and "passed on" in page.text
        path, query = url.split("?")
        post = await c.post(f"{path}/decide?{query}", data={"decision": "approve"})
        assert post.status_code == 403 and "passed on" in post.text
    page = await c.get(bob)
    assert page.status_code == 200
    path, query = bob.split("?")
    form = {"csrf": csrf_of(page.text), "decision": "approve"}
    done = await c.post(f"{path}/decide?{query}", data=form)
    assert done.status_code == 200 and "was recorded" in done.text
    assert (await c.post(f"{path}/decide?{query}", data=form)).status_code == 410
    assert await handle.result(timeout=10) == {"decision": "approve", "by": BOB}
    states = {(link.reviewer, link.state) for link in await site.links.list(task.id)}
    assert states == {(ALICE, "revoked"), (BOB, "used")}


async def test_a_reviewer_holds_one_live_link_per_item(site: Site) -> None:
    inbox = HumanTasks(site.orch.store)
    task_id = await open_task(inbox, 1, assignee="ana")
    links = site.links
    first = await links.create(task_id, ttl=3600, reviewer="carol")
    second = await links.create(task_id, ttl=3600, reviewer="carol")
    other = await links.create(task_id, ttl=3600, reviewer="dave")
    anonymous = [await links.create(task_id, ttl=3600) for _ in range(2)]
    with pytest.raises(LinkRefusedError, match="replaced this one") as refused:
        await links.check(first.token, task_id)
    assert refused.value.status == 403
    for link in (second, other, *anonymous):
        assert (await links.check(link.token, task_id)).id == link.id
    # A mail asks again: the live link is given again, the same token, while it lasts.
    again = await links.create(task_id, ttl=3600, reviewer="carol", reuse=True)
    assert (again.id, again.url) == (second.id, second.url)
    states = {link.id: link.state for link in await links.list(task_id)}
    assert (states[first.id], states[second.id], states[other.id]) == ("revoked", "open", "open")


async def test_a_mailed_link_lives_as_long_as_the_items_sla_plus_a_grace(site: Site) -> None:
    store, clock = site.orch.store, site.clock
    inbox = HumanTasks(store)
    settings = Settings(secret=SECRET, link_ttl=86400)
    make = magic_links(store, settings, clock)
    short = await inbox.get(await open_task(inbox, 1, assignee=ALICE, sla=4))
    long = await inbox.get(await open_task(inbox, 2, assignee=ALICE, sla=30 * 86400))
    none = await inbox.get(await open_task(inbox, 3, assignee=ALICE))
    expiry = {}
    for task in (short, long, none):
        url = await make(task.to_dict())
        link = await site.links.check(url.split("?link=")[1], task.id)
        expiry[task.id] = link.expires_ms
    now = clock.now_ms()
    assert short.sla_due_ms is not None
    assert expiry[short.id] == short.sla_due_ms + int(LINK_GRACE * 1000)
    assert expiry[long.id] == now + 86400_000  # capped by TASKLOOM_LINK_TTL
    assert expiry[none.id] == now + 86400_000  # no SLA: the cap
    token = (await make(short.to_dict())).split("?link=")[1]
    clock.advance((short.sla_due_ms - now) / 1000 + LINK_GRACE)
    with pytest.raises(LinkRefusedError, match="expired"):
        await site.links.check(token, short.id)


async def test_a_revocation_during_a_decision_that_fails_stays_revoked(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = site.orch.human_tasks
    handle = await site.orch.start(approve, 3600.0)
    (task,) = await wait_until(lambda: inbox.list(run_id=handle.run_id), "the item")
    link = await site.links.create(task.id, ttl=3600, reviewer="partner")
    entered, release = asyncio.Event(), asyncio.Event()
    decide = HumanTasks.decide

    async def slow(self: HumanTasks, *args: Any, **kwargs: Any) -> Any:
        entered.set()  # the link is taken: the decision is in flight
        await release.wait()
        return await decide(self, *args, **kwargs)

    monkeypatch.setattr(HumanTasks, "decide", slow)
    deciding = asyncio.create_task(site.links.decide(link, task.id, "maybe"))
    await entered.wait()
    assert (await site.links.revoke(link.id)).state == "revoked"
    release.set()
    with pytest.raises(UserError, match="'maybe' is not a decision"):
        await deciding  # the inbox refuses it: nothing recorded
    monkeypatch.undo()
    (state,) = await site.links.list(task.id)
    assert state.state == "revoked"
    with pytest.raises(LinkRefusedError, match="revoked"):
        await site.links.decide(link.token, task.id, "approve")
    assert (await inbox.get(task.id)).status == "open"
    await handle.cancel()
