"""Issue 15, findings 8 and 9: input limits answered with 400, security headers on
every response (500s included), trusted hosts, HSTS, no link tokens in the access log,
and a worker's /metrics behind a bearer token without reviewers' addresses in labels."""

from __future__ import annotations

import asyncio
import html
import logging
import re
import subprocess
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from taskloom import HumanTask, Orchestrator
from taskloom.engine.human import HumanTasks, new_task, task_spec
from taskloom.engine.metrics import Metrics
from taskloom.engine.store import now_ms
from taskloom.errors import ConfigurationError, UserError
from taskloom.pipeline.edits import Editable
from taskloom.settings import Settings
from taskloom.web import MagicLinks, create_app
from tests.helpers import running, start_taskloom, taskloom, wait_until
from tests.test_web import BASE_URL, SCORED, SECRET, TOKEN, cli_env, csrf_of, review

pytestmark = pytest.mark.anyio

CSP = "content-security-policy"


def client(app: Any, base_url: str = BASE_URL, **kwargs: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, **kwargs)
    return httpx.AsyncClient(transport=transport, base_url=base_url)


async def signed_in(http: httpx.AsyncClient) -> None:
    page = await http.get("/signin")
    reply = await http.post(
        "/signin", data={"csrf": csrf_of(page.text), "name": "ana", "token": TOKEN}
    )
    assert reply.status_code == 303, reply.text


async def escalated(orch: Orchestrator, output: Any, schema: dict[str, Any]) -> HumanTask:
    handle = await orch.start(review, "Check the summary", output, "ana", schema)
    (task,) = await wait_until(lambda: orch.human_tasks.list(run_id=handle.run_id), "the item")
    return task  # type: ignore[no-any-return]


async def read_until(
    proc: subprocess.Popen[str], pattern: str, seen: list[str] | None = None
) -> re.Match[str]:
    """Read ``proc``'s output line by line (into ``seen``) up to one matching ``pattern``."""
    assert proc.stdout is not None
    while True:
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line, f"the process ended before printing {pattern!r}"
        if seen is not None:
            seen.append(line)
        if m := re.search(pattern, line):
            return m


@pytest.fixture
async def worker(make_worker: Any) -> AsyncIterator[None]:
    async with running(make_worker(workflows=[review])):
        yield


# -- finding 8: input limits answer 400 ---------------------------------------------------
async def test_a_deeply_nested_edit_through_a_magic_link_is_a_400_and_the_link_still_works(
    orch: Orchestrator, worker: None
) -> None:
    task = await escalated(orch, {"title": "t", "score": 1}, SCORED)
    link = await MagicLinks(orch.store, secret=SECRET).create(task.id, ttl=3600)
    app = create_app(orch, secret=SECRET, inbox_token=TOKEN)
    action = f"{urlsplit(link.url).path}/decide?link={link.token}"
    async with client(app) as outsider:
        page = await outsider.get(f"{urlsplit(link.url).path}?link={link.token}")
        form = {"csrf": csrf_of(page.text), "decision": "edit", "output": "[" * 5000}
        deep = await outsider.post(action, data=form)
        assert deep.status_code == 400, deep.text[:300]
        assert "more than 64 levels deep" in html.unescape(deep.text)
        assert CSP in deep.headers
        good = '{"title": "better", "score": 7}'
        ok = await outsider.post(action, data=form | {"output": good})
        assert ok.status_code == 200, ok.text[:300]
    result = await orch.handle(task.run_id).result(timeout=10)
    assert result["output"] == {"title": "better", "score": 7}


def test_an_edit_is_bounded_in_depth_and_size_before_it_is_parsed() -> None:
    from taskloom.pipeline.edits import MAX_EDIT_BYTES, MAX_EDIT_DEPTH

    as_json = Editable("output", None, None)
    for text in ("[" * 5000, "{" * 100_000, '{"a": ' * 65 + "1" + "}" * 65):
        value, errors = as_json.parse(text)
        assert value is None and f"more than {MAX_EDIT_DEPTH} levels" in errors[0], text[:20]
    nested = "[" * MAX_EDIT_DEPTH + "]" * MAX_EDIT_DEPTH
    assert as_json.parse(nested)[1] == []  # up to the limit it is taken
    assert as_json.parse('["[[[[' + "[" * 100 + '"]')[1] == []  # brackets in strings
    as_text = Editable("output", "draft", {"type": "string"})
    value, errors = as_text.parse("x" * (MAX_EDIT_BYTES + 1))
    assert value is None and f"keep it under {MAX_EDIT_BYTES}" in errors[0]


async def test_an_age_of_400_digits_is_a_400_not_a_500(orch: Orchestrator) -> None:
    app = create_app(orch, secret=SECRET, inbox_token=TOKEN)
    async with client(app, raise_app_exceptions=False) as http:
        await signed_in(http)
        for age in ("1" * 400, "1" * 400 + "d", "3651d"):
            reply = await http.get("/", params={"age": age})
            assert reply.status_code == 400, age
            assert "up to 3650d" in reply.text
        assert (await http.get("/", params={"age": "3650d"})).status_code == 200
    with pytest.raises(UserError, match="finite"):
        await orch.human_tasks.list(older_than=float("inf"))


async def test_inbox_list_older_than_400_digits_is_a_clear_error(
    redis_url: str, prefix: str
) -> None:
    env = cli_env(redis_url, prefix)
    proc = await asyncio.to_thread(taskloom, "inbox", "list", "--older-than", "9" * 400, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "is not an age" in proc.stderr and "up to 3650d" in proc.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("runs", "--limit", "9" * 400), "from 1 to 10000"),
        (("dlq", "list", "--limit", "0"), "from 1 to 10000"),
        (("inbox", "list", "--limit", "9" * 5000), "from 1 to 10000"),
        (("worker", "--metrics-port", "99999"), "from 0 to 65535"),
        (("worker", "--concurrency", "-1"), "from 1 to 10000"),
        (("serve", "--port", "1" * 400), "from 0 to 65535"),
        (("run", "a goal", "--budget-usd", "inf"), "finite number above 0"),
        (("run", "a goal", "--max-parallel", "0"), "from 1 to 10000"),
    ],
)
async def test_numeric_cli_options_are_range_checked_with_a_clear_error(
    redis_url: str, prefix: str, args: tuple[str, ...], says: str
) -> None:
    proc = await asyncio.to_thread(taskloom, *args, env=cli_env(redis_url, prefix))
    assert proc.returncode == 2, proc.stderr[-500:]
    assert "Traceback" not in proc.stderr and says in proc.stderr


# -- finding 8: every response carries the security headers ------------------------------
async def test_a_500_and_a_404_carry_the_security_headers(
    orch: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: HumanTasks) -> None:
        raise RuntimeError("redis fell over")

    app = create_app(orch, secret=SECRET, inbox_token=TOKEN)
    async with client(app, raise_app_exceptions=False) as http:
        await signed_in(http)
        monkeypatch.setattr(HumanTasks, "stats", broken)
        crashed = await http.get("/")
        missing = await http.get("/no/such/page")
    assert crashed.status_code == 500 and "redis fell over" not in crashed.text
    assert missing.status_code == 404
    for reply in (crashed, missing):
        assert "default-src 'none'" in reply.headers[CSP]
        assert reply.headers["x-frame-options"] == "DENY"
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["referrer-policy"] == "no-referrer"


# -- finding 9: trusted hosts and HSTS ----------------------------------------------------
async def test_a_foreign_host_header_is_refused_so_dns_rebinding_reaches_nothing(
    orch: Orchestrator,
) -> None:
    app = create_app(orch, secret=SECRET, inbox_token=TOKEN)  # public URL 127.0.0.1:8765
    async with client(app, base_url="http://127.0.0.1:8765") as http:
        assert (await http.get("/signin")).status_code == 200
        for host in ("localhost:8765", "[::1]:8765", "LOCALHOST"):
            assert (await http.get("/signin", headers={"Host": host})).status_code == 200
        for host in ("attacker.example", "attacker.example:8765", "127.0.0.1.attacker.example"):
            rebound = await http.get("/signin", headers={"Host": host})
            assert rebound.status_code == 400, host
            assert "Sign in" not in rebound.text and CSP in rebound.headers
            post = await http.post("/signin", headers={"Host": host}, data={"name": "x"})
            assert post.status_code == 400

    public = create_app(
        orch, secret=SECRET, inbox_token=TOKEN, public_url="https://inbox.example.com"
    )
    async with client(public, base_url="https://inbox.example.com") as http:
        assert (await http.get("/signin")).status_code == 200
        other = await http.get("/signin", headers={"Host": "other.example.com"})
        assert other.status_code == 400

    listed = create_app(
        orch, secret=SECRET, inbox_token=TOKEN, trusted_hosts=["*.corp.example", "10.0.0.5"]
    )
    async with client(listed, base_url="http://a.corp.example") as http:
        assert (await http.get("/signin")).status_code == 200
        assert (await http.get("/signin", headers={"Host": "10.0.0.5"})).status_code == 200
        assert (await http.get("/signin", headers={"Host": "localhost"})).status_code == 400


def test_trusted_hosts_default_to_the_public_url_and_loopback_and_are_configurable() -> None:
    from taskloom.web.hardening import default_trusted_hosts

    assert default_trusted_hosts("https://Inbox.Example.com/") == [
        "inbox.example.com",
        "localhost",
        "127.0.0.1",
        "[::1]",
    ]
    assert default_trusted_hosts("http://[::1]:8765") == ["[::1]", "localhost", "127.0.0.1"]
    env = {"TASKLOOM_TRUSTED_HOSTS": "inbox.example.com, *.corp.example"}
    assert Settings.from_env(env).trusted_hosts == ["inbox.example.com", "*.corp.example"]
    with pytest.raises(ConfigurationError, match=r"\*\.example\.com"):
        Settings.from_env({"TASKLOOM_TRUSTED_HOSTS": "inbox*.example.com"})


async def test_hsts_is_sent_when_the_public_url_is_https_and_only_then(
    orch: Orchestrator,
) -> None:
    https = create_app(
        orch, secret=SECRET, inbox_token=TOKEN, public_url="https://inbox.example.com"
    )
    async with client(https, base_url="https://inbox.example.com") as http:
        for url in ("/signin", "/no/such/page", "/"):
            reply = await http.get(url)
            assert reply.headers["strict-transport-security"] == "max-age=31536000", url
    plain = create_app(orch, secret=SECRET, inbox_token=TOKEN)
    async with client(plain) as http:
        assert "strict-transport-security" not in (await http.get("/signin")).headers


# -- finding 9: no link tokens in the access log ------------------------------------------
async def test_debug_serve_keeps_link_tokens_out_of_the_access_log(
    redis_url: str, prefix: str, tmp_path: Any
) -> None:
    token = "SeCrEtToKeN-" + "x" * 40 + ".signature-part"
    env = cli_env(redis_url, prefix, TASKLOOM_INBOX_TOKEN=TOKEN, TASKLOOM_DATA_DIR=str(tmp_path))
    proc = start_taskloom("--debug", "serve", "--port", "0", env=env)
    try:
        m = await read_until(proc, r"http://127\.0\.0\.1:(\d+)/")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{m.group(1)}") as http:
            await http.get(f"/items/r-1/0?link={token}")
            await http.get(f"/signin?next=%2Fitems%2Fr-1%2F0%3Flink%3D{token}")
            await http.post(f"/items/r-1/0/decide?x=1&link={token}", data={"a": "b"})
            rebound = await http.get("/signin", headers={"Host": "attacker.example"})
            await http.get("/signin?done=1")  # the last line of the log to wait for
        seen: list[str] = []
        await read_until(proc, "done=1", seen)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    log = "".join(seen)
    assert "GET /items/r-1/0?link=[redacted]" in log
    assert "link%3D[redacted]" in log
    assert "decide?x=1&link=[redacted]" in log
    assert "SeCrEtToKeN" not in log
    assert rebound.status_code == 400  # the real server trusts only its own names


def test_the_redactor_hides_link_and_token_values_in_any_log_record() -> None:
    from taskloom.web.hardening import TokenRedactor, redact

    assert redact("/x?link=a.b&c=1 /y?token=zz") == "/x?link=[redacted]&c=1 /y?token=[redacted]"
    assert redact("next=%2Fa%3Flink%3Dabc%26b%3D1") == "next=%2Fa%3Flink%3D[redacted]%26b%3D1"
    assert redact("/blink=1") == "/blink=1"
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s"',
        ("1.2.3.4", "GET", "/?link=t"),
        None,
    )
    assert TokenRedactor().filter(record)
    assert record.getMessage() == '1.2.3.4 - "GET /?link=[redacted]"'


# -- finding 9: the worker's /metrics -----------------------------------------------------
async def test_a_workers_metrics_need_the_bearer_token_when_one_is_set() -> None:
    token = "m" * 40
    async with await Metrics().serve(port=0, token=token) as server:
        assert server.host == "127.0.0.1"  # loopback unless told
        async with httpx.AsyncClient() as http:
            bare = await http.get(server.url)
            wrong = await http.get(server.url, headers={"Authorization": "Bearer nope"})
            basic = await http.get(server.url, headers={"Authorization": f"Basic {token}"})
            ok = await http.get(server.url, headers={"Authorization": f"Bearer {token}"})
    for refused in (bare, wrong, basic):
        assert refused.status_code == 401
        assert "taskloom_" not in refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
    assert ok.status_code == 200 and "taskloom_runs_total" in ok.text
    with pytest.raises(ConfigurationError, match="metrics_token"):
        Settings.from_env({"TASKLOOM_METRICS_TOKEN": "short"})


async def test_the_worker_cli_serves_metrics_behind_the_token(redis_url: str, prefix: str) -> None:
    token = "w" * 40
    env = cli_env(redis_url, prefix, TASKLOOM_METRICS_TOKEN=token)
    proc = start_taskloom("worker", "--metrics-port", "0", env=env)
    try:
        url = (await read_until(proc, r"metrics on (http://\S+)")).group(1)
        async with httpx.AsyncClient() as http:
            assert (await http.get(url)).status_code == 401
            auth = {"Authorization": f"Bearer {token}"}
            assert (await http.get(url, headers=auth)).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_inbox_metrics_never_label_a_series_with_a_reviewers_address(
    orch: Orchestrator,
) -> None:
    inbox = HumanTasks(orch.store)
    for seq, assignee in enumerate(("ana@example.com", "bob@example.com", None)):
        spec = task_spec(
            title="t",
            context=None,
            decisions=["ok"],
            assignee=assignee,
            group="reviewers",
            sla=None,
            fallback=[],
        )
        await inbox.open(new_task("run-m", str(seq), spec, created_ms=now_ms()))
    metrics = Metrics()
    metrics.set_inbox(await inbox.stats())
    text = metrics.render().decode()
    assert "example.com" not in text and "assignee=" not in text
    assert 'taskloom_inbox_open_items{assigned="yes"} 2.0' in text
    assert 'taskloom_inbox_open_items{assigned="no"} 1.0' in text
