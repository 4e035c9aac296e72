"""Inbox notifications: events written with each change, webhooks signed, retried and
delivered once per endpoint (across crashes), e-mail over SMTP, inbox metrics."""

from __future__ import annotations

import asyncio
import contextlib
import email
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import pytest

from taskloom import ManualClock, Orchestrator, RetryPolicy, Settings, Store
from taskloom.engine.human import HumanTasks, new_task, task_spec
from taskloom.engine.metrics import Metrics
from taskloom.engine.store import now_ms
from taskloom.errors import ConfigurationError, UserError
from taskloom.inbox.notify import (
    GROUP,
    SIGNATURE_TOLERANCE_S,
    Notifier,
    endpoint_hash,
    install,
    sign,
    verify_signature,
)
from taskloom.settings import MIN_WEBHOOK_SECRET_CHARS
from tests.conftest import worker_env
from tests.helpers import ROOT, at_least, running, samples, taskloom, wait_until
from tests.test_human import refund

pytestmark = pytest.mark.anyio

SECRET = "s3cret-shared-with-the-receiver-0123456789"
FAST = RetryPolicy(max_attempts=4, initial_interval=1.0, max_interval=60.0, jitter=0.0)


# -- a webhook receiver and an SMTP server on loopback ----------------------------------
@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str:
        return self.headers.get("x-taskloom-delivery", "")


@dataclass
class Receiver:
    """A minimal HTTP/1.1 webhook endpoint. It answers ``fail_status`` to the first
    ``fail_first`` requests, then ``status``; requests whose key ``hold`` picks get no
    answer until ``released`` is set, and then the connection is dropped."""

    fail_first: int = 0
    fail_status: int = 500
    status: int = 200
    retry_after: str | None = None
    hold: Callable[[str], bool] = lambda key: False
    requests: list[Request] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    """Keys this receiver answered 2xx, in order."""
    duplicates: list[str] = field(default_factory=list)
    """Keys that arrived again after a 2xx: must stay empty."""
    released: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.released.set()
        self._server.close()
        await self._server.wait_closed()

    def counts(self) -> Counter[str]:
        return Counter(r.key for r in self.requests)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in head[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(method, path, headers, body)
            if request.key in self.acked:
                self.duplicates.append(request.key)
            self.requests.append(request)
            if self.hold(request.key):
                await self.released.wait()
                return  # drop the connection, unanswered
            if self.fail_first > 0:
                self.fail_first -= 1
                status = self.fail_status
            else:
                status = self.status
            extra = f"Retry-After: {self.retry_after}\r\n" if self.retry_after else ""
            head = f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n"
            writer.write(f"{head}{extra}\r\n".encode())
            await writer.drain()
            if 200 <= status < 300:
                self.acked.append(request.key)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@dataclass
class SmtpServer:
    """Enough of SMTP for smtplib: it refuses the first ``fail_first`` connections with
    a 421, then takes mail."""

    fail_first: int = 0
    mails: list[tuple[str, list[str], Message]] = field(default_factory=list)
    port: int = 0

    async def __aenter__(self) -> SmtpServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        try:
            if self.fail_first > 0:
                self.fail_first -= 1
                say("421 too busy, try later")
                return
            say("220 test ESMTP")
            sender, recipients = "", []
            while line := (await reader.readline()).decode().rstrip("\r\n"):
                verb, _, arg = line.partition(" ")
                verb = verb.upper()
                if verb in ("EHLO", "HELO"):
                    say("250 test")
                elif verb == "MAIL":
                    sender = arg.split(":", 1)[1].strip("<> ")
                    say("250 ok")
                elif verb == "RCPT":
                    recipients.append(arg.split(":", 1)[1].strip("<> "))
                    say("250 ok")
                elif verb == "DATA":
                    say("354 go on")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    message = email.message_from_bytes(data[: -len(b".\r\n")])
                    self.mails.append((sender, recipients, message))
                    say("250 queued")
                elif verb == "QUIT":
                    say("221 bye")
                    break
                else:
                    say("250 ok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


# -- helpers ------------------------------------------------------------------------------
async def outbox(store: Store) -> list[dict[str, Any]]:
    rows = await store.raw.xrange(store.keys.inbox_outbox)
    return [json.loads(fields["e"]) for _, fields in rows]


async def open_task(
    inbox: HumanTasks, n: int, *, assignee: str | None = "ana", sla: float | None = None
) -> str:
    """Open a task on a made-up run (enough for "opened" events); returns its id."""
    spec = task_spec(
        title=f"Check item {n}",
        context={"n": n},
        decisions=["approve", "reject"],
        assignee=assignee,
        group=None,
        sla=sla,
        fallback=[],
    )
    task = new_task(f"run-{n}", "0", spec, created_ms=now_ms())
    assert await inbox.open(task)
    return task.id


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


# -- events -------------------------------------------------------------------------------
async def test_every_step_of_an_sla_chain_is_an_event_in_the_outbox(
    orch: Orchestrator, make_worker: Any
) -> None:
    clock, metrics, store = ManualClock(), Metrics(), orch.store

    async def kinds(n: int) -> list[str]:
        events = await wait_until(lambda: at_least(outbox(store), n), f"{n} events", timeout=10)
        return [e["kind"] for e in events]

    async with running(make_worker(workflows=[refund], clock=clock, metrics=metrics)):
        handle = await orch.start(refund, 300, 3600, "reassign-then-reject")
        task_id = f"{handle.run_id}/0"
        assert await kinds(1) == ["opened"]
        start = clock.now_ms()
        clock.advance(2881)  # 80% of the hour: near its SLA, still with ana
        assert await kinds(2) == ["opened", "sla_near"]
        clock.advance(720)  # past the hour: breached, then passed on to the lead
        assert await kinds(4) == ["opened", "sla_near", "sla_breached", "reassigned"]
        clock.advance(49)  # 80% of the lead's minute
        assert (await kinds(5))[-1] == "sla_near"
        clock.advance(12)
        assert (await kinds(7))[-2:] == ["sla_breached", "decided"]
        assert await handle.result(timeout=10) == {
            "decision": "reject",
            "by": "sla",
            "note": "decided by the SLA fallback",
        }
    events = await outbox(store)
    assert [e["id"] for e in events] == [
        f"{task_id}:opened:0",
        f"{task_id}:sla_near:0",
        f"{task_id}:sla_breached:0",
        f"{task_id}:reassigned:1",
        f"{task_id}:sla_near:1",
        f"{task_id}:sla_breached:1",
        f"{task_id}:decided:0",
    ]
    by_kind = {e["id"]: e for e in events}
    assert [e["task"]["assignee"] for e in events] == ["ana"] * 3 + ["lead"] * 4
    assert by_kind[f"{task_id}:sla_near:0"]["ts"] == start + 2881_000
    assert by_kind[f"{task_id}:reassigned:1"]["task"]["sla_due_ms"] == start + 3601_000 + 60_000
    assert by_kind[f"{task_id}:decided:0"]["task"]["decision"]["decision"] == "reject"
    assert [e["task"]["status"] for e in events] == ["open"] * 6 + ["decided"]
    breaches = samples(metrics.render().decode())
    assert breaches[("taskloom_human_task_sla_breaches_total", frozenset())] == 2


async def test_expiry_a_persons_decision_and_a_breach_without_fallback_are_events(
    orch: Orchestrator, make_worker: Any
) -> None:
    clock, store, inbox = ManualClock(), orch.store, orch.human_tasks
    async with running(make_worker(workflows=[refund], clock=clock)):
        expiring = await orch.start(refund, 1, 60, "expire")
        decided = await orch.start(refund, 2, None, "none")
        waiting = await orch.start(refund, 3, 30, "none")
        await wait_until(lambda: at_least(inbox.list(), 3), "three tasks")
        clock.advance(61)  # straight past the SLA: no "near" any more, breached at once
        assert await expiring.result(timeout=10) == {"expired": "Refund 1 EUR?: nobody answered"}
        await inbox.decide(f"{decided.run_id}/0", "approve", by="ana", note="ok")
        assert (await decided.result(timeout=10))["decision"] == "approve"
        await wait_until(lambda: at_least(outbox(store), 7), "seven events")
        assert (await inbox.get(f"{waiting.run_id}/0")).status == "open"  # still waits
        await waiting.cancel()
    ids = [e["id"] for e in await outbox(store)]
    assert sorted(i for i in ids if not i.endswith(":opened:0")) == sorted(
        [
            f"{expiring.run_id}/0:sla_breached:0",
            f"{expiring.run_id}/0:expired:0",
            f"{waiting.run_id}/0:sla_breached:0",
            f"{decided.run_id}/0:decided:0",
        ]
    )
    clock.advance(3600)  # nothing more happens to a breached task with no fallback left
    await asyncio.sleep(0.5)
    assert len(await outbox(store)) == 7


async def test_a_change_that_does_not_happen_emits_nothing(store: Store) -> None:
    inbox = HumanTasks(store)
    task_id = await open_task(inbox, 1)
    task = await inbox.get(task_id)
    assert not await inbox.open(task)  # already open: no second "opened"
    assert [e["id"] for e in await outbox(store)] == [f"{task_id}:opened:0"]


async def test_the_operator_default_sla_applies_to_tasks_without_one(store: Store) -> None:
    inbox = HumanTasks(store, default_sla=600)
    task_id = await open_task(inbox, 1)
    task = await inbox.get(task_id)
    assert task.sla_due_ms == task.created_ms + 600_000
    # The timer waits for the "near" point first: 80% of the window.
    score = await store.raw.zscore(store.keys.inbox_sla, task_id)
    assert score == task.created_ms + 480_000
    assert await inbox.apply_due_slas(now=task.created_ms + 479_000) == []
    near = await inbox.apply_due_slas(now=task.created_ms + 480_000)
    assert [(s.task_id, s.kind) for s in near] == [(task_id, "sla_near")]
    assert await inbox.apply_due_slas(now=task.created_ms + 599_000) == []
    breached = await inbox.apply_due_slas(now=task.created_ms + 600_000)
    assert [s.kind for s in breached] == ["sla_breached"]
    assert await store.raw.zscore(store.keys.inbox_sla, task_id) is None
    assert (await inbox.get(task_id)).sla_state == "breached"
    with pytest.raises(UserError, match="positive"):
        HumanTasks(store, default_sla=0)


# -- webhooks -----------------------------------------------------------------------------
async def test_webhooks_are_signed_and_retried_with_backoff_until_acknowledged(
    store: Store,
) -> None:
    clock = ManualClock()
    inbox = HumanTasks(store)
    async with (
        Receiver(fail_first=2, fail_status=503, retry_after="5") as flaky,
        Receiver() as steady,
        Notifier(
            store,
            webhooks=[flaky.url, steady.url],
            webhook_secret=SECRET,
            clock=clock,
            retry=FAST,
        ) as notifier,
    ):
        notifier.start()
        task_id = await open_task(inbox, 1)
        await wait_until(lambda: len(flaky.requests) == 1 and steady.acked, "first tries")
        key = f"{task_id}:opened:0:{endpoint_hash(flaky.url)}"
        assert steady.acked == [f"{task_id}:opened:0:{endpoint_hash(steady.url)}"]

        # Retry-After: 5 is longer than the first backoff (1 s): it wins.
        due = await wait_until(lambda: _due(store, key, clock.now_ms()), "a retry due")
        assert due == clock.now_ms() + 5000
        clock.advance(4.9)
        await asyncio.sleep(0.2)
        assert len(flaky.requests) == 1, "not before it is due"
        clock.advance(0.1)
        await wait_until(lambda: len(flaky.requests) == 2, "the second try")
        due = await wait_until(lambda: _due(store, key, clock.now_ms()), "the next retry")
        assert due == clock.now_ms() + 5000  # backoff 2 s, Retry-After still 5 s
        flaky.retry_after = None
        clock.advance(5)
        await wait_until(lambda: flaky.acked == [key], "the third try, acknowledged")

        delivery = await wait_until(lambda: _delivered(notifier, key), "delivered")
        assert delivery.attempts == 2 and delivery.event is None
        clock.advance(3600)
        await asyncio.sleep(0.3)

    assert len(flaky.requests) == 3 and len(steady.requests) == 1
    assert flaky.duplicates == [] and steady.duplicates == []
    bodies = {r.body for r in flaky.requests}
    assert len(bodies) == 1, "every retry sends the same body"
    for r in flaky.requests + steady.requests:
        assert r.method == "POST" and r.path == "/hook"
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-taskloom-event"] == "opened"
        assert r.headers["idempotency-key"] == r.key
        assert int(r.headers["x-taskloom-timestamp"]) > 1_600_000_000
        assert verify_signature(r.body, r.headers["x-taskloom-signature"], SECRET)
        assert not verify_signature(r.body, r.headers["x-taskloom-signature"], "other")
        assert not verify_signature(r.body + b" ", r.headers["x-taskloom-signature"], SECRET)
    event = json.loads(flaky.requests[0].body)
    assert set(event) == {"id", "kind", "task", "ts"}
    assert (event["id"], event["kind"], event["task"]["id"]) == (
        f"{task_id}:opened:0",
        "opened",
        task_id,
    )
    assert {r.key for r in flaky.requests} == {key}, "the same idempotency key each time"


async def test_a_captured_delivery_stops_verifying_after_the_tolerance(
    store: Store, receiver: Receiver
) -> None:
    async with Notifier(store, webhooks=[receiver.url], webhook_secret=SECRET) as notifier:
        await open_task(HumanTasks(store), 1)
        assert await notifier.deliver_due() == 1
    (captured,) = receiver.requests
    header = captured.headers["x-taskloom-signature"]
    # Stripe's scheme: the signature covers the timestamp, which travels inside it.
    signed = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header)
    assert signed is not None, header
    sent = int(signed.group(1))
    assert sent == int(captured.headers["x-taskloom-timestamp"])
    body = captured.body
    assert verify_signature(body, header, SECRET)
    assert verify_signature(body, header, SECRET, now=sent + SIGNATURE_TOLERANCE_S)
    # Replayed later, as captured: refused.
    assert not verify_signature(body, header, SECRET, now=sent + SIGNATURE_TOLERANCE_S + 1)
    assert not verify_signature(body, header, SECRET, now=sent + 86400)
    # Replayed later with a fresh timestamp: the HMAC no longer matches.
    later = sent + 3600
    forged = f"t={later},v1={signed.group(2)}"
    assert not verify_signature(body, forged, SECRET, now=later)
    # Another body under the captured signature: refused.
    assert not verify_signature(body.replace(b"opened", b"decided"), header, SECRET, now=sent)


def _signed(body: bytes, secret: str, t: int) -> str:
    """The documented header, made by hand: ``t=<t>,v1=<hex HMAC-SHA256 of "<t>." + body>``."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def test_a_receiver_can_accept_two_secrets_while_rotating() -> None:
    new, old = "n" * 40, SECRET
    header = sign(b"{}", old, timestamp=1_700_000_000)
    assert header == _signed(b"{}", old, 1_700_000_000)
    assert verify_signature(b"{}", header, [new, old], now=1_700_000_000)
    assert verify_signature("{}", header, (old,), now=1_700_000_010)
    assert not verify_signature(b"{}", header, [new], now=1_700_000_000)
    assert not verify_signature(b"{}", header, [], now=1_700_000_000)


_OK = _signed(b"{}", SECRET, 1_700_000_000)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "t=,v1=",
        "t=1700000000",
        "v1=" + _OK.split("v1=")[1],
        "t=abc," + _OK.split(",")[1],
        "t=-1700000000," + _OK.split(",")[1],
        "t=99999999999999999999999999," + _OK.split(",")[1],
        "t=1700000000,v1=\u00e9" + _OK.split("v1=")[1][1:],  # non-ASCII
        "t=1700000000,v1=\u0661\u0662",  # non-ASCII digits
        "\u00e9" * 10_000,
        "t=\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660," + _OK.split(",")[1],
        # The old, replayable form (an HMAC of the body alone) is no longer accepted.
        "sha256=" + hmac.new(SECRET.encode(), b"{}", hashlib.sha256).hexdigest(),
        b"t=1700000000",
        12345,
    ],
)
def test_verify_signature_refuses_malformed_headers_without_raising(header: Any) -> None:
    assert verify_signature(b"{}", _OK, SECRET, now=1_700_000_000), "the control"
    assert verify_signature(b"{}", header, SECRET, now=1_700_000_000) is False


def test_verify_signature_never_raises_on_odd_bodies_or_secrets() -> None:
    assert verify_signature(b"{}", "sha256=caf\u00e9", SECRET) is False  # was a TypeError
    for body in (b"", "caf\u00e9", "\ud800", None, 3.5):
        assert verify_signature(body, _OK, SECRET, now=1_700_000_000) is False
    for secret in ("", None, [None, 3], "\ud800", b"bytes"):
        assert verify_signature(b"{}", _OK, secret, now=1_700_000_000) is False
    assert verify_signature(b"{}", _OK, SECRET, now=float("nan")) is False
    assert verify_signature(b"{}", _OK, SECRET, tolerance=-1, now=1_700_000_000) is False


async def test_a_short_webhook_secret_is_refused_at_startup(
    store: Store, redis_url: str, prefix: str
) -> None:
    short = "x" * (MIN_WEBHOOK_SECRET_CHARS - 1)
    how = "secrets.token_urlsafe"
    with pytest.raises(ConfigurationError, match=how):
        Notifier(store, webhooks=["http://127.0.0.1:9/hook"], webhook_secret=short)
    with pytest.raises(ConfigurationError, match=f"at least {MIN_WEBHOOK_SECRET_CHARS}.*{how}"):
        Settings.from_env({"TASKLOOM_WEBHOOK_SECRET": short})
    env = worker_env(
        redis_url,
        prefix,
        TASKLOOM_WEBHOOKS="http://127.0.0.1:9/hook",
        TASKLOOM_WEBHOOK_SECRET=short,
    )
    proc = taskloom("worker", env=env, timeout=60)
    assert proc.returncode != 0
    assert how in proc.stderr and short not in proc.stderr + proc.stdout
    Notifier(store, webhooks=["http://127.0.0.1:9/hook"], webhook_secret=short + "x")


async def test_a_killed_notifier_never_redelivers_what_was_acknowledged(
    store: Store, redis_url: str, prefix: str
) -> None:
    inbox = HumanTasks(store)
    async with Receiver(hold=lambda key: key.startswith("run-3/")) as receiver:
        setup = Notifier(store, webhooks=[receiver.url], webhook_secret=SECRET)
        await setup.setup()  # the group exists: events now wait for a notifier
        await setup.aclose()
        ids = [await open_task(inbox, n) for n in range(1, 6)]
        script = textwrap.dedent(
            f"""
            import asyncio
            from redis.asyncio import Redis
            from taskloom import Store
            from taskloom.inbox.notify import Notifier

            async def main():
                store = Store(Redis.from_url({redis_url!r}, decode_responses=True),
                              prefix={prefix!r})
                async with Notifier(store, webhooks=[{receiver.url!r}],
                                    webhook_secret={SECRET!r}, timeout=30, lease=60) as n:
                    await n.run()

            asyncio.run(main())
            """
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, env=worker_env(redis_url, prefix)
        )
        try:
            held = f"{ids[2]}:opened:0:{endpoint_hash(receiver.url)}"
            await wait_until(
                lambda: len(receiver.acked) == 4 and held in receiver.counts(),
                "four acknowledged, one in flight",
                timeout=20,
            )
            for i in ids[:2] + ids[3:]:
                key = f"{i}:opened:0:{endpoint_hash(receiver.url)}"
                await wait_until(lambda k=key: _delivered(setup, k), f"{key} recorded")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        receiver.released.set()  # the held request's connection is dropped, unanswered
        receiver.hold = lambda key: False

        # A new notifier, an hour later (its lease long over), takes the one in flight.
        later = ManualClock(now_ms() + 3_600_000)
        async with Notifier(
            store, webhooks=[receiver.url], webhook_secret=SECRET, clock=later
        ) as restarted:
            assert await restarted.deliver_due() == 1
            assert await restarted.deliver_due() == 0
    assert receiver.duplicates == []
    assert receiver.counts()[held] == 2  # first unanswered, then acknowledged
    assert sorted(receiver.acked) == sorted(
        f"{i}:opened:0:{endpoint_hash(receiver.url)}" for i in ids
    )


async def test_an_event_read_by_a_dead_notifier_is_taken_over(
    store: Store, receiver: Receiver
) -> None:
    inbox = HumanTasks(store)
    async with Notifier(
        store, webhooks=[receiver.url], webhook_secret=SECRET, claim_idle=0.2, timeout=5
    ) as notifier:
        task_id = await open_task(inbox, 1)
        # Another notifier read the event and died before taking it in.
        await store.raw.xreadgroup(GROUP, "dead-one", {store.keys.inbox_outbox: ">"}, count=10)
        assert await notifier.deliver_due() == 0  # not idle long enough yet
        await asyncio.sleep(0.3)
        assert await notifier.deliver_due() == 1
        assert await notifier.deliver_due() == 0
    assert receiver.acked == [f"{task_id}:opened:0:{endpoint_hash(receiver.url)}"]
    pending = await store.raw.xpending(store.keys.inbox_outbox, GROUP)
    assert pending["pending"] == 0


async def test_notifiers_share_the_work_and_deliver_each_event_once(
    store: Store, receiver: Receiver
) -> None:
    inbox = HumanTasks(store)
    notifiers = [
        Notifier(store, webhooks=[receiver.url], webhook_secret=SECRET, consumer=f"n{i}")
        for i in range(3)
    ]
    for n in notifiers:
        await n.setup()
        n.start()
    try:
        ids = [await open_task(inbox, i) for i in range(30)]
        await wait_until(lambda: len(receiver.acked) >= 30, "30 deliveries")
        await asyncio.sleep(0.2)
    finally:
        for n in notifiers:
            await n.aclose()
    assert receiver.duplicates == []
    assert Counter(receiver.acked) == Counter(
        f"{i}:opened:0:{endpoint_hash(receiver.url)}" for i in ids
    )
    assert all(n == 1 for n in receiver.counts().values())


async def test_deliveries_give_up_into_the_dead_set_and_can_be_redriven(store: Store) -> None:
    clock, inbox = ManualClock(), HumanTasks(store)
    async with (
        Receiver(fail_first=1000, fail_status=500) as receiver,
        Notifier(
            store,
            webhooks=[receiver.url],
            webhook_secret=SECRET,
            clock=clock,
            retry=RetryPolicy(max_attempts=3, initial_interval=1, jitter=0),
        ) as notifier,
    ):
        first = await open_task(inbox, 1)
        second = await open_task(inbox, 2)
        assert await notifier.deliver_due() == 0
        for _ in range(4):
            clock.advance(10)
            assert await notifier.deliver_due() == 0
        assert len(receiver.requests) == 6  # 3 tries each, then no more
        dead = await notifier.dead()
        keys = [f"{t}:opened:0:{endpoint_hash(receiver.url)}" for t in (first, second)]
        assert sorted(d.id for d in dead) == sorted(keys)
        assert all(d.status == "dead" and d.attempts == 3 for d in dead)
        assert dead[0].last_error == "HTTP 500" and dead[0].event is not None
        assert dead[0].endpoint == receiver.url
        assert await notifier.pending() == 0
        stats = await inbox.stats()
        assert stats.notifications_dead == 2

        receiver.fail_first = 0
        await notifier.redrive(keys[0])
        await notifier.discard(keys[1])
        assert await notifier.deliver_due() == 1
        assert await notifier.dead() == []
        assert await notifier.get(keys[1]) is None
        with pytest.raises(UserError, match="no dead delivery"):
            await notifier.redrive(keys[0])
    assert receiver.acked == [keys[0]]


async def test_a_timeout_or_a_refused_connection_is_retried(store: Store) -> None:
    clock, inbox = ManualClock(), HumanTasks(store)
    async with (
        Receiver(hold=lambda key: True) as slow,
        Notifier(
            store,
            webhooks=[slow.url, "http://127.0.0.1:9/nothing-listens"],
            webhook_secret=SECRET,
            clock=clock,
            retry=FAST,
            timeout=0.3,
            lease=5,
        ) as notifier,
    ):
        await open_task(inbox, 1)
        assert await notifier.deliver_due() == 0
        errors = [d.last_error for d in await _all_deliveries(notifier)]
    assert len(errors) == 2
    assert any("ConnectError" in e for e in errors)
    assert any("Timeout" in e for e in errors)


# -- e-mail -------------------------------------------------------------------------------
async def test_an_assignee_with_an_email_address_gets_mail(store: Store) -> None:
    clock, inbox = ManualClock(), HumanTasks(store)
    async with (
        SmtpServer(fail_first=1) as smtp,
        Notifier(
            store,
            smtp_url=f"smtp://127.0.0.1:{smtp.port}",
            notify_from="taskloom@example.test",
            public_url="https://inbox.example.test/",
            clock=clock,
            retry=FAST,
        ) as notifier,
    ):
        ana = await open_task(inbox, 1, assignee="ana@example.test", sla=3600)
        await open_task(inbox, 2, assignee="bob")  # not an address: no mail
        await open_task(inbox, 3, assignee=None)
        assert await notifier.deliver_due() == 0  # the server is busy at first
        clock.advance(1)
        assert await notifier.deliver_due() == 1
        assert await notifier.deliver_due() == 0
    ((sender, recipients, message),) = smtp.mails
    assert (sender, recipients) == ("taskloom@example.test", ["ana@example.test"])
    assert message["Subject"] == "[taskloom] New task for you: Check item 1"
    assert message["To"] == "ana@example.test"
    mailbox = endpoint_hash("mailto:ana@example.test")
    assert message["X-Taskloom-Delivery"] == f"{ana}:opened:0:{mailbox}"
    text = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "Decisions: approve, reject" in text
    assert "Due: " in text
    assert "Open it: https://inbox.example.test/items/run-1/0" in text


# -- wiring and configuration -------------------------------------------------------------
async def test_install_runs_a_notifier_beside_the_worker(
    orch: Orchestrator, make_worker: Any, receiver: Receiver
) -> None:
    settings = Settings(webhooks=[receiver.url], webhook_secret=SECRET, inbox_sla=600)
    worker = make_worker(workflows=[refund])
    notifier = install(worker, settings)
    assert notifier is not None and worker.resources["notifier"] is notifier
    assert worker.human_tasks.default_sla == 600
    await notifier.setup()
    async with running(worker):
        handle = await orch.start(refund, 7, None, "none")
        await wait_until(lambda: receiver.acked, "the opened event at the webhook")
        await orch.human_tasks.decide(f"{handle.run_id}/0", "approve", by="ana")
        await wait_until(lambda: len(receiver.acked) == 2, "the decided event")
        await handle.result(timeout=10)
    assert [json.loads(r.body)["kind"] for r in receiver.requests] == ["opened", "decided"]
    assert notifier._task is None, "the worker closed it when it stopped"
    plain = make_worker(workflows=[refund])
    assert install(plain, Settings()) is None and "notifier" not in plain.resources


async def test_bad_configuration_is_refused_early(store: Store) -> None:
    with pytest.raises(ConfigurationError, match="TASKLOOM_WEBHOOK_SECRET"):
        Notifier(store, webhooks=["https://hooks.example.test/x"])
    with pytest.raises(ConfigurationError, match="not an http"):
        Notifier(store, webhooks=["ftp://example.test/x"], webhook_secret=SECRET)
    with pytest.raises(ConfigurationError, match="smtp://host:25"):
        Notifier(store, smtp_url="mail.example.test:25")
    with pytest.raises(UserError, match="timeout < lease"):
        Notifier(store, webhooks=[], timeout=30, lease=10)
    assert not Notifier(store).enabled


# -- metrics ------------------------------------------------------------------------------
async def test_inbox_metrics_are_kept_in_redis_across_processes(
    orch: Orchestrator, make_worker: Any
) -> None:
    clock, inbox = ManualClock(), orch.human_tasks
    async with running(make_worker(workflows=[refund], clock=clock)):
        handles = [await orch.start(refund, n, 3600, "reassign-then-reject") for n in (1, 2, 3)]
        tasks = await wait_until(lambda: at_least(inbox.list(), 3), "three tasks")
        stats = await inbox.stats()
        assert stats.open_by_assignee == {"ana": 3}
        # Another process (the CLI, the web inbox) decides: Redis counts it all the same.
        other = HumanTasks(Store(orch.store.client, prefix=orch.store.keys.prefix))
        first = tasks[0]
        await other.decide(first.id, "approve", by="ana", at_ms=first.created_ms + 90_000)
        clock.advance(3601)  # the other two pass on to the lead
        await wait_until(
            lambda: _stats_open(inbox, {"lead": 2}), "the open items to move to the lead"
        )
        second = (await inbox.list(assignee="lead"))[0]
        await inbox.decide(second.id, "reject", by="lead", at_ms=second.created_ms + 2 * 86400_000)
        metrics = Metrics()
        metrics.set_inbox(await inbox.stats())
        for h in handles:  # stop what still waits; a run may end by itself meanwhile
            if (await h.info()).status != "completed":
                with contextlib.suppress(UserError):  # "has already ended"
                    await h.cancel()
    got = samples(metrics.render().decode())
    assert got[("taskloom_inbox_open_items", frozenset({("assigned", "yes")}))] == 1
    assert got[("taskloom_inbox_open_items", frozenset({("assigned", "no")}))] == 0
    decisions = "taskloom_inbox_decisions_total"
    assert got[(decisions, frozenset({("decision", "approve")}))] == 1
    assert got[(decisions, frozenset({("decision", "reject")}))] == 1
    latency = "taskloom_inbox_decision_latency_seconds"
    assert got[(f"{latency}_bucket", frozenset({("le", "60.0")}))] == 0
    assert got[(f"{latency}_bucket", frozenset({("le", "120.0")}))] == 1
    assert got[(f"{latency}_bucket", frozenset({("le", "86400.0")}))] == 1
    assert got[(f"{latency}_bucket", frozenset({("le", "172800.0")}))] == 2
    assert got[(f"{latency}_bucket", frozenset({("le", "+Inf")}))] == 2
    assert got[(f"{latency}_count", frozenset())] == 2
    assert got[(f"{latency}_sum", frozenset())] == pytest.approx(90 + 2 * 86400)
    assert got[("taskloom_inbox_notifications_dead", frozenset())] == 0


async def test_the_worker_exposes_the_inbox_metrics(orch: Orchestrator, make_worker: Any) -> None:
    metrics = Metrics()
    await HumanTasks(orch.store).open(
        new_task(
            "run-x",
            "0",
            task_spec(
                title="t",
                context=None,
                decisions=["ok"],
                assignee="ana",
                group=None,
                sla=None,
                fallback=[],
            ),
            created_ms=now_ms(),
        )
    )
    async with running(make_worker(metrics=metrics)):
        await wait_until(
            lambda: 'taskloom_inbox_open_items{assigned="yes"} 1.0' in metrics.render().decode(),
            "the worker to refresh its inbox gauges",
        )


# -- small helpers --------------------------------------------------------------------------
async def _due(store: Store, delivery_id: str, now: int) -> int | None:
    """The delivery's next due time, once it is a retry (not a lease in flight)."""
    fields = await store.raw.hgetall(store.keys.notify_delivery(delivery_id))
    score = await store.raw.zscore(store.keys.notify_due, delivery_id)
    if not fields or score is None or int(fields.get("attempts", 0)) == 0:
        return None
    return int(score) if int(fields["updated_ms"]) == now else None


async def _delivered(notifier: Notifier, delivery_id: str) -> Any:
    d = await notifier.get(delivery_id)
    return d if d is not None and d.status == "delivered" else None


async def _all_deliveries(notifier: Notifier) -> list[Any]:
    store = notifier.store
    ids = await store.raw.zrange(store.keys.notify_due, 0, -1)
    return [await notifier.get(i) for i in ids]


async def _stats_open(inbox: HumanTasks, expected: dict[str, int]) -> bool:
    return dict((await inbox.stats()).open_by_assignee) == expected


async def test_a_workflows_escalation_without_an_sla_gets_the_operator_default(
    client: Any, prefix: str, redis_url: str
) -> None:
    from taskloom import Context, workflow

    @workflow(name="asks_without_sla")
    async def asks(ctx: Context) -> str:
        return (await ctx.escalate("ok?")).decision

    settings = Settings(redis_url=redis_url, key_prefix=prefix, inbox_sla=600)
    orch = Orchestrator(client=client, settings=settings)
    await orch.connect()
    async with running(orch.worker(workflows=[asks])):
        handle = await orch.start(asks)
        tasks = await wait_until(
            lambda: orch.human_tasks.list(run_id=handle.run_id), "the escalation"
        )
        (task,) = tasks
        assert task.sla_due_ms is not None
        assert 595_000 <= task.sla_due_ms - task.created_ms <= 600_000
        await orch.human_tasks.decide(task.id, "approve", by="ana")
        assert await handle.result(timeout=20) == "approve"


async def test_a_mail_to_an_outside_reviewer_carries_a_magic_link_to_the_item(
    store: Store,
) -> None:
    from taskloom.inbox.links import MagicLinks
    from taskloom.inbox.notify import magic_links

    clock, inbox = ManualClock(), HumanTasks(store)
    secret = "s" * 40
    settings = Settings(secret=secret, public_url="https://inbox.example.test")
    async with (
        SmtpServer() as smtp,
        Notifier(
            store,
            smtp_url=f"smtp://127.0.0.1:{smtp.port}",
            clock=clock,
            retry=FAST,
            link=magic_links(store, settings, clock),
        ) as notifier,
    ):
        task_id = await open_task(inbox, 1, assignee="partner@example.test", sla=7200)
        assert await notifier.deliver_due() == 1
    ((_, _, message),) = smtp.mails
    text = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    url = next(w for w in text.split() if "?link=" in w)
    assert url.startswith("https://inbox.example.test/items/run-1/0?link=")
    links = MagicLinks(store, secret=secret, public_url=settings.public_url, clock=clock)
    token = url.split("?link=", 1)[1]
    link = await links.check(token, task_id)
    assert link.reviewer == "partner@example.test"
    # until the SLA is due, plus the grace (LINK_GRACE, 15 minutes)
    assert 8000_000 <= link.expires_ms - clock.now_ms() <= 8101_000
