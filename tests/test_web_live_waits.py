"""Many open run pages wait on a few Redis connections.

Each run page follows its run over a live stream that waits on the run's log (and the
running activities' live text). Each of those waits was a blocking XREAD of its own, so
a web server with a hundred pages open held a hundred connections, and its pool ran
dry for everything else. They now go through the Orchestrator's StreamFollower.

The test runs on a redis-server of its own, so that the server's count of blocked
clients is this test's alone.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis as SyncRedis

from taskloom import Orchestrator, Settings
from taskloom.web import create_app
from tests.helpers import own_redis, running, wait_until
from tests.test_web import SECRET, TOKEN, csrf_of, review
from tests.test_web_browser import serving

pytestmark = pytest.mark.anyio

PAGES = 40


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    home = Path(tempfile.mkdtemp(prefix="tl-live-", dir="/tmp"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    admin = SyncRedis(port=port)
    try:
        with own_redis(home, "--port", str(port), "--bind", "127.0.0.1", ready=admin.ping):
            yield f"redis://127.0.0.1:{port}/0"
    finally:
        admin.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
async def own_orch(redis_url: str) -> AsyncIterator[Orchestrator]:
    async with Orchestrator(settings=Settings(redis_url=redis_url, key_prefix="live")) as o:
        yield o


async def test_many_open_run_pages_wait_on_a_few_connections(
    own_orch: Orchestrator, redis_url: str
) -> None:
    orch, admin = own_orch, SyncRedis.from_url(redis_url)

    def blocked() -> int:
        return int(admin.info("clients")["blocked_clients"])

    app = create_app(orch, secret=SECRET, inbox_token=TOKEN)
    async with running(orch.worker(workflows=[review])):
        waiting = await orch.start(review, "Check the notes", "ana", None, {"type": "string"})
        await wait_until(lambda: orch.human_tasks.list(run_id=waiting.run_id), "the item")
        idle = blocked()  # the worker's own reads
        limits = httpx.Limits(max_connections=PAGES + 5)
        async with (
            serving(app, "127.0.0.1") as site,
            httpx.AsyncClient(base_url=site, limits=limits, timeout=60) as http,
        ):
            signin = await http.get("/signin")
            form = {"csrf": csrf_of(signin.text), "name": "ana", "token": TOKEN}
            await http.post("/signin", data=form)
            opened = 0
            started = asyncio.Event()

            async def page() -> None:
                nonlocal opened
                async with http.stream("GET", f"/runs/{waiting.run_id}/live") as stream:
                    lines = stream.aiter_lines()
                    assert await anext(lines) == "retry: 2000"
                    opened += 1
                    if opened == PAGES:
                        started.set()
                    async for _ in lines:  # held open until cancelled
                        pass

            pages = [asyncio.create_task(page()) for _ in range(PAGES)]
            try:
                await asyncio.wait_for(started.wait(), 60)
                seen = []
                for _ in range(30):  # every page is waiting now: look a few times
                    seen.append(blocked() - idle)
                    await asyncio.sleep(0.05)
                assert not any(p.done() for p in pages), "a live stream ended early"
            finally:
                for p in pages:
                    p.cancel()
                await asyncio.gather(*pages, return_exceptions=True)
    admin.close()
    assert max(seen) <= orch.follower.lanes, f"blocking reads held by {PAGES} pages: {seen}"
    assert max(seen) >= 1  # they do wait on Redis
