"""The web inbox while Redis is out of reach: a page that says so (503, Retry-After, the
security headers) and one log line, not a bare "Internal Server Error" with a traceback
for every request (found by a drill: `taskloom serve`, then its Redis SIGKILLed)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskloom import Orchestrator
from taskloom.settings import Settings
from taskloom.web import create_app
from taskloom.web.app import STORE_DOWN_RETRY_S
from tests.helpers import RestartableRedis
from tests.test_web import SECRET, TOKEN
from tests.test_web_hardening import CSP, client, signed_in

pytestmark = pytest.mark.anyio


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RestartableRedis]:
    redis = RestartableRedis(tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        redis.close()


async def test_pages_say_redis_is_out_of_reach_with_a_503(
    server: RestartableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{server.port}/0", key_prefix="web-out")
    async with Orchestrator(settings=settings) as orch:
        app = create_app(orch, secret=SECRET, inbox_token=TOKEN)
        async with client(app) as http:
            await signed_in(http)
            assert (await http.get("/")).status_code == 200
            server.kill()
            with caplog.at_level(logging.WARNING, logger="taskloom.web"):
                page = await http.get("/")
            assert page.status_code == 503, page.text
            assert page.headers["retry-after"] == str(STORE_DOWN_RETRY_S)
            assert CSP in page.headers
            assert "state store (Redis)" in page.text and "Nothing was recorded" in page.text
            said = [r.getMessage() for r in caplog.records if r.name == "taskloom.web"]
            assert len(said) == 1 and "GET /: Redis out of reach" in said[0], said
            assert all(r.exc_info is None for r in caplog.records)
            server.start()  # back: the same session's page is served again
            assert (await http.get("/")).status_code in (200, 303)
