"""Signing in to the web inbox, over HTTP: wrong tokens are throttled per client and for
everyone (in Redis, shared by every server process) and logged without the guess; the
tokens have a minimum strength; sessions end on the server at sign-out and when the
inbox token changes; a refused request never touches the session cookie."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from taskloom import ConfigurationError, ManualClock, Orchestrator
from taskloom.web import create_app
from taskloom.web.app import SESSION_COOKIE
from taskloom.web.throttle import SigninLimits, client_scope
from tests.helpers import taskloom
from tests.test_web import SECRET, TOKEN, cli_env, csrf_of

pytestmark = pytest.mark.anyio

LIMITS = SigninLimits(failures=5, failures_all=50, window=60)
GUESS = "guess-{}-not-the-token"

Browser = Callable[..., httpx.AsyncClient]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ms=1_800_000_000_000)  # a window boundary: 60 s to the next


@pytest.fixture
async def browser(orch: Orchestrator, clock: ManualClock) -> AsyncIterator[Browser]:
    """Makes clients of one app (several: one per client address, or a second app
    on the same Redis, as a second ``taskloom serve`` process would be)."""
    clients: list[httpx.AsyncClient] = []

    def make(ip: str = "127.0.0.1", *, app: Any = None, **options: Any) -> httpx.AsyncClient:
        options = {"signin_limits": LIMITS} | options
        app = app or create_app(orch, secret=SECRET, inbox_token=TOKEN, clock=clock, **options)
        transport = httpx.ASGITransport(app=app, client=(ip, 40000))
        client = httpx.AsyncClient(transport=transport, base_url="http://localhost:8765")
        clients.append(client)
        return client

    yield make
    await asyncio.gather(*(c.aclose() for c in clients))


async def sign_in(http: httpx.AsyncClient, token: str = TOKEN, name: str = "ana") -> httpx.Response:
    page = await http.get("/signin")
    csrf = csrf_of(page.text)
    return await http.post("/signin", data={"csrf": csrf, "name": name, "token": token})


# -- finding 2: guessing the sign-in token ------------------------------------------------
async def test_wrong_tokens_are_throttled_per_client_logged_and_the_right_one_waits(
    browser: Browser, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taskloom.web")
    guesser = browser("203.0.113.7")
    page = await guesser.get("/signin")
    csrf = csrf_of(page.text)
    for i in range(LIMITS.failures):
        form = {"csrf": csrf, "name": "eve", "token": GUESS.format(i)}
        assert (await guesser.post("/signin", data=form)).status_code == 401, i
    over = await guesser.post("/signin", data={"csrf": csrf, "name": "eve", "token": "x" * 20})
    assert over.status_code == 429
    assert over.headers["retry-after"] == "60"
    assert "too many failed sign-in attempts" in over.text.lower()
    # The right token does not get through either, until the window passes.
    right = {"csrf": csrf, "name": "eve", "token": TOKEN}
    assert (await guesser.post("/signin", data=right)).status_code == 429

    failures = [r for r in caplog.records if "wrong inbox token" in r.getMessage()]
    assert len(failures) == LIMITS.failures
    assert all("203.0.113.7" in r.getMessage() for r in failures)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "throttled" in logged
    assert "guess-" not in logged and TOKEN not in logged and "x" * 20 not in logged

    # Another address is not held back by this one's guesses.
    assert (await sign_in(browser("198.51.100.9"))).status_code == 303

    clock.advance(59)
    assert (await guesser.post("/signin", data=right)).status_code == 429
    clock.advance(1)  # the window has passed
    ok = await guesser.post("/signin", data=right)
    assert ok.status_code == 303, ok.text
    assert (await guesser.get("/")).status_code == 200


async def test_the_throttle_is_shared_by_every_server_process(
    orch: Orchestrator, browser: Browser, clock: ManualClock
) -> None:
    def app() -> Any:
        return create_app(orch, secret=SECRET, inbox_token=TOKEN, clock=clock, signin_limits=LIMITS)

    one, two = browser("203.0.113.8", app=app()), browser("203.0.113.8", app=app())
    for i in range(LIMITS.failures):
        http = (one, two)[i % 2]
        assert (await sign_in(http, GUESS.format(i))).status_code == 401
    assert (await sign_in(one)).status_code == 429
    assert (await sign_in(two)).status_code == 429


async def test_right_tokens_do_not_use_up_the_limit(browser: Browser) -> None:
    for _ in range(LIMITS.failures * 2):
        assert (await sign_in(browser("203.0.113.9"))).status_code == 303


async def test_guesses_from_many_addresses_meet_a_limit_for_everyone(
    browser: Browser, clock: ManualClock
) -> None:
    limits = SigninLimits(failures=5, failures_all=8, window=60)
    for i in range(limits.failures_all):
        guesser = browser(f"192.0.2.{i + 1}", signin_limits=limits)
        assert (await sign_in(guesser, GUESS.format(i))).status_code == 401, i
    late = browser("192.0.2.200", signin_limits=limits)
    refused = await sign_in(late)  # the right token, from an address never seen
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    clock.advance(60)
    assert (await sign_in(late)).status_code == 303


async def test_wrong_metrics_bearers_are_throttled_like_sign_ins(
    browser: Browser, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taskloom.web")
    scraper = browser("203.0.113.10")
    for i in range(LIMITS.failures):
        bad = await scraper.get("/metrics", headers={"Authorization": f"Bearer {GUESS.format(i)}"})
        assert bad.status_code == 401, i
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert (await scraper.get("/metrics", headers=right)).status_code == 429
    assert (await sign_in(scraper)).status_code == 429  # one budget for both doors
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged.count("203.0.113.10") >= LIMITS.failures and "guess-" not in logged
    clock.advance(60)
    assert (await scraper.get("/metrics", headers=right)).status_code == 200


async def test_a_metrics_token_of_its_own_replaces_the_inbox_token_as_bearer(
    browser: Browser,
) -> None:
    metrics_token = "scrape-only-token-0123456789"
    scraper = browser(metrics_token=metrics_token)
    own = await scraper.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})
    assert own.status_code == 200
    inbox = await scraper.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert inbox.status_code == 401
    assert (await sign_in(scraper, metrics_token)).status_code == 401  # it cannot sign in


@pytest.mark.parametrize(
    "token",
    ["x", "short-token", "a" * 40, "changemechangeme", SECRET],
    ids=["one-char", "short", "one-letter", "few-letters", "the-secret"],
)
async def test_a_weak_inbox_token_is_refused(orch: Orchestrator, token: str) -> None:
    with pytest.raises(ConfigurationError, match="TASKLOOM_INBOX_TOKEN") as refused:
        create_app(orch, secret=SECRET, inbox_token=token)
    if token != SECRET:
        assert "secrets.token_urlsafe(32)" in str(refused.value)
    with pytest.raises(ConfigurationError, match="TASKLOOM_METRICS_TOKEN"):
        create_app(orch, secret=SECRET, inbox_token=TOKEN, metrics_token=token)


async def test_serve_refuses_a_weak_inbox_token_and_says_how_to_make_one(
    redis_url: str, prefix: str
) -> None:
    env = cli_env(redis_url, prefix, TASKLOOM_INBOX_TOKEN="x", TASKLOOM_SECRET=SECRET)
    proc = await asyncio.to_thread(taskloom, "serve", "--port", "0", env=env)
    assert proc.returncode == 2, proc.stdout
    assert "TASKLOOM_INBOX_TOKEN is too weak" in proc.stderr
    assert "secrets.token_urlsafe(32)" in proc.stderr


def test_clients_are_counted_by_address_and_ipv6_by_block() -> None:
    assert client_scope("203.0.113.7") == "203.0.113.7"
    assert client_scope("2001:db8:1:2:aaaa::1") == client_scope("2001:db8:1:2:bbbb::9")
    assert client_scope("2001:db8:1:2::1") != client_scope("2001:db8:1:3::1")
    assert client_scope("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_scope(None) == "unknown"


# -- finding 5: sessions end on the server ------------------------------------------------
async def test_a_cookie_copied_before_sign_out_is_refused_after(browser: Browser) -> None:
    ana = browser()
    assert (await sign_in(ana)).status_code == 303
    stolen = ana.cookies[SESSION_COOKIE]
    thief = browser()
    thief.cookies.set(SESSION_COOKIE, stolen)
    assert (await thief.get("/")).status_code == 200  # a copy works while signed in
    page = await ana.get("/")
    out = await ana.post("/signout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    reply = await thief.get("/")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/signin")
    post = await thief.post("/signout", data={"csrf": csrf_of(page.text)})
    assert post.status_code == 401


async def test_changing_the_inbox_token_ends_every_session(
    orch: Orchestrator, browser: Browser, clock: ManualClock
) -> None:
    ana = browser()
    assert (await sign_in(ana)).status_code == 303
    cookie = ana.cookies[SESSION_COOKIE]
    new_token = "the-new-inbox-token-after-rotation"
    # The server restarts with a new TASKLOOM_INBOX_TOKEN and the same secret.
    restarted = create_app(
        orch, secret=SECRET, inbox_token=new_token, clock=clock, signin_limits=LIMITS
    )
    after = browser(app=restarted)
    after.cookies.set(SESSION_COOKIE, cookie)
    reply = await after.get("/")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/signin")
    assert (await sign_in(after, new_token)).status_code == 303
    assert (await after.get("/")).status_code == 200
    # The same restart with the token unchanged keeps sessions.
    same = browser(
        app=create_app(orch, secret=SECRET, inbox_token=TOKEN, clock=clock, signin_limits=LIMITS)
    )
    same.cookies.set(SESSION_COOKIE, cookie)
    assert (await same.get("/")).status_code == 200


# -- finding 6: a refused request leaves the session alone ---------------------------------
async def test_a_refused_post_sets_no_cookie(browser: Browser) -> None:
    ana = browser()
    await sign_in(ana)
    # What a cross-site form sends: no cookie (SameSite=Lax), no CSRF token.
    outsider = browser()
    for url in ("/signout", "/items/r/0/decide", "/signin"):
        reply = await outsider.post(url, data={"decision": "approve"})
        assert reply.status_code in (401, 403), url
        assert "set-cookie" not in reply.headers, url
    # With the cookie but without the CSRF token (same-site forgery): refused, kept.
    forged = await ana.post("/signout", data={"csrf": "forged"})
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    assert (await ana.get("/")).status_code == 200
