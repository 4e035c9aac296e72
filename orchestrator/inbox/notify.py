"""Notifications: webhooks and e-mail for inbox events, each delivered once per endpoint.

Every change of an inbox item appends an event to the inbox outbox (a Redis stream) in
the same script as the change (see :mod:`taskloom.engine.human`). A :class:`Notifier`
reads the outbox with a consumer group, so any number of workers and servers share the
work and each event is taken by one of them, and turns each event into one durable
*delivery* per endpoint, kept in Redis:

- every configured webhook URL gets every event;
- with ``smtp_url`` set, an assignee whose name is an e-mail address gets a short mail
  when a task is opened for them, passed to them, or nears or breaches its SLA.

A webhook is a JSON ``POST`` of the event, with these headers::

    X-Taskloom-Event: opened            (the event's kind)
    X-Taskloom-Delivery: <event id>:<endpoint hash>
    Idempotency-Key: <the same>
    X-Taskloom-Timestamp: 1712345678   (seconds, when this try was sent)
    X-Taskloom-Signature: t=1712345678,v1=<hex HMAC-SHA256 of "1712345678." + body>

    {"id": "<run id>/3:opened:0", "kind": "opened", "task": {...}, "ts": 1712345678901}

The signature is Stripe's scheme: an HMAC-SHA256, keyed with the webhook secret, over
the timestamp, a dot and the raw body, so a captured delivery cannot be sent again with
a fresh timestamp. A receiver checks it with :func:`verify_signature`, which also refuses
a timestamp more than :data:`SIGNATURE_TOLERANCE_S` (5 minutes) away from its clock, and
keeps the delivery ids it has answered 2xx to: a delivery is sent again (with the same
id and body, signed anew) only when the notifier did not record the 2xx, so
deduplicating by id makes it exactly once, and the tolerance bounds how long it must
remember them. To rotate the secret, let receivers accept the old and the new one
(``verify_signature(body, header, [new, old])``), then give taskloom the new one.

Any other answer, a connection error or a timeout is retried with exponential backoff
and jitter (``retry``, on the notifier's clock). The retry schedule is a sorted set in
Redis, and a delivery being tried is leased to its notifier: if the notifier dies, the
delivery comes due again when the lease ends and another notifier sends it. After
``retry.max_attempts`` failed tries a delivery is *dead*: :meth:`Notifier.dead` lists
them, :meth:`Notifier.redrive` tries one again and :meth:`Notifier.discard` forgets it.

A worker runs a notifier beside its loops when :func:`install` gave it one (webhooks or
SMTP configured). Standalone::

    async with Notifier(store, settings=settings) as notifier:
        await notifier.run()            # until cancelled

Events made while no notifier group existed yet (before the first notifier ever
started) are not sent; once it exists, events wait in the outbox for a notifier, up to
:data:`~taskloom.engine.human.OUTBOX_MAXLEN` of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import re
import smtplib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import parse_qs, unquote, urlsplit

from redis.exceptions import RedisError

from taskloom.display import one_line
from taskloom.engine import serde
from taskloom.engine.clock import Clock, SystemClock
from taskloom.engine.human import HumanTasks
from taskloom.engine.keys import consumer_name
from taskloom.engine.retries import RetryPolicy
from taskloom.engine.store import Store, ride_out
from taskloom.errors import ConfigurationError, TaskloomError, UserError
from taskloom.redaction import redact_text, redact_url
from taskloom.settings import MIN_WEBHOOK_SECRET_CHARS, Settings, webhook_secret_problem

if TYPE_CHECKING:
    import httpx

    from taskloom.engine.worker import Worker

__all__ = [
    "DEFAULT_RETRY",
    "LINK_GRACE",
    "SIGNATURE_TOLERANCE_S",
    "Delivery",
    "Notifier",
    "install",
    "sign",
    "verify_signature",
]

log = logging.getLogger("taskloom.inbox.notify")

GROUP = "notifiers"
"""The consumer group of the inbox outbox that notifiers share."""

DEFAULT_RETRY = RetryPolicy(
    max_attempts=12, initial_interval=5.0, max_interval=3600.0, backoff=2.0, jitter=0.5
)
"""5 s, 10 s, 20 s, ... up to an hour apart: about 4 hours of tries before giving up."""

SIGNATURE_TOLERANCE_S = 300.0
"""How far (seconds, either way) a webhook's signed timestamp may be from the receiver's
clock before :func:`verify_signature` refuses it: Stripe's default, room for clock skew
and a slow network, short enough that a captured delivery soon stops verifying."""

MAIL_KINDS = frozenset({"opened", "reassigned", "sla_near", "sla_breached"})
"""The events that mail the assignee: the ones that ask them to act."""

LINK_GRACE = 900.0
"""Seconds a mailed magic link works past its item's SLA point (15 minutes): time to
finish a decision begun just before it. The SLA's fallback (a reassignment, a default
decision) ends the link sooner; an item left with its reviewer after a breach gets a
link for this long from the mail about the breach."""

KEEP_DELIVERED_S = 7 * 86400.0
"""How long a delivered delivery's record is kept (without its event)."""

_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")
_MAIL_HEADLINES = {
    "opened": "New task for you",
    "reassigned": "A task was passed on to you",
    "sla_near": "Due soon",
    "sla_breached": "Overdue",
}


def sign(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The ``X-Taskloom-Signature`` header of ``body`` sent at ``timestamp`` (Unix
    seconds; default now): ``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>``.
    """
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_hmac(secret, t, body)}"


def verify_signature(
    body: bytes | str,
    signature: str | None,
    secret: str | Iterable[str],
    *,
    tolerance: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether ``signature`` (the ``X-Taskloom-Signature`` header) signs ``body`` (the raw
    request body) with ``secret`` (or with any of several, while rotating) and was made
    within ``tolerance`` seconds of ``now`` (default: this machine's clock). Compares in
    constant time and never raises: a missing, malformed, non-ASCII, stale or wrong
    header is ``False``. For a receiver::

        if not verify_signature(await request.body(),
                                request.headers.get("X-Taskloom-Signature"), secret):
            return Response(status_code=400)
        # then skip it if its X-Taskloom-Delivery id was already handled
    """
    try:
        return _verify(body, signature, secret, tolerance, now)
    except Exception:  # a receiver's guard must not crash it, whatever arrives
        return False


def _verify(
    body: bytes | str,
    signature: str | None,
    secret: str | Iterable[str],
    tolerance: float,
    now: float | None,
) -> bool:
    if not isinstance(signature, str) or not signature.isascii() or len(signature) > 4096:
        return False
    timestamp, candidates = None, []
    for item in signature.split(","):
        key, eq, value = item.strip().partition("=")
        if key == "t" and eq and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and eq:
            candidates.append(value.encode())
    if timestamp is None or not candidates:
        return False
    now = time.time() if now is None else now
    if not abs(now - timestamp) <= tolerance:
        return False
    data = body.encode() if isinstance(body, str) else bytes(body)
    secrets = [secret] if isinstance(secret, str) else list(secret)
    found = False
    for key in secrets:
        if not isinstance(key, str) or not key:
            continue
        expected = _hmac(key, timestamp, data).encode()
        for candidate in candidates:  # no early exit: time does not tell which matched
            found |= hmac.compare_digest(expected, candidate)
    return found


def _hmac(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def endpoint_hash(endpoint: str) -> str:
    """The short, stable name of an endpoint in delivery ids."""
    return hashlib.sha256(endpoint.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One event to one endpoint, as Redis keeps it."""

    id: str
    """``<event id>:<endpoint hash>``: the idempotency key the endpoint sees."""
    endpoint: str
    """A webhook URL, or ``mailto:<address>``."""
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    """Tries that failed so far."""
    last_error: str
    event: dict[str, Any] | None
    """The event (dropped once delivered)."""
    created_ms: int
    updated_ms: int

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> Delivery:
        """Build from the delivery's Redis hash."""
        event = fields.get("event")
        return cls(
            id=fields["id"],
            endpoint=fields.get("endpoint", ""),
            status=fields.get("status", "pending"),  # type: ignore[arg-type]
            attempts=int(fields.get("attempts") or 0),
            last_error=fields.get("last_error", ""),
            event=serde.loads(event) if event else None,
            created_ms=int(fields.get("created_ms") or 0),
            updated_ms=int(fields.get("updated_ms") or 0),
        )


@dataclass(frozen=True, slots=True)
class _Try:
    """A delivery leased to this notifier, to send now."""

    id: str
    lease: int
    attempts: int
    endpoint: str
    event_json: str


class _Failed(Exception):
    """A try that did not reach the endpoint, or that it did not accept."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Smtp:
    """Where and how to send mail, from ``smtp://[user:password@]host[:port]``
    (``?starttls=1`` to upgrade the connection) or ``smtps://`` (TLS from the start)."""

    host: str
    port: int
    ssl: bool
    starttls: bool
    user: str | None
    password: str | None = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> _Smtp:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigurationError(
                f"smtp_url must look like smtp://host:25 or smtps://user:pass@host:465 "
                f"(got {redact_url(url)!r}); fix TASKLOOM_SMTP_URL"
            )
        query = parse_qs(parts.query)
        ssl = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if ssl else 25),
            ssl=ssl,
            starttls=query.get("starttls", ["0"])[0].lower() in ("1", "true", "yes"),
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def send(self, message: EmailMessage, timeout: float) -> None:
        """Send ``message`` (blocking: run it in a thread)."""
        smtp_class = smtplib.SMTP_SSL if self.ssl else smtplib.SMTP
        with smtp_class(self.host, self.port, timeout=timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.user is not None:
                smtp.login(self.user, self.password or "")
            smtp.send_message(message)


class Notifier:
    """Delivers inbox events to webhooks and by e-mail; see the module's docs.

    Options come from ``settings`` (``webhooks``, ``webhook_secret``, ``smtp_url``,
    ``notify_from``, ``public_url``); explicit arguments win. ``link(task)`` makes the
    address a mail points to (default: the task's page in the web inbox; give a magic
    link maker for outside reviewers). ``lease`` (seconds) must outlast one try, which
    ``timeout`` bounds; ``claim_idle`` is how long an event read by a notifier that died
    waits before another takes it.
    """

    def __init__(
        self,
        store: Store,
        *,
        settings: Settings | None = None,
        webhooks: Iterable[str] | None = None,
        webhook_secret: str | None = None,
        smtp_url: str | None = None,
        notify_from: str | None = None,
        public_url: str | None = None,
        link: Callable[[dict[str, Any]], Awaitable[str]] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = 10.0,
        lease: float = 60.0,
        claim_idle: float = 30.0,
        concurrency: int = 16,
        batch: int = 100,
        clock: Clock | None = None,
        consumer: str | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        s = settings or Settings()
        self.store = store
        self.webhooks = list(dict.fromkeys(s.webhooks if webhooks is None else webhooks))
        self._secret = webhook_secret if webhook_secret is not None else s.webhook_secret
        smtp_url = smtp_url if smtp_url is not None else s.smtp_url
        self._smtp = _Smtp.parse(smtp_url) if smtp_url else None
        self.notify_from = notify_from or s.notify_from
        self.public_url = (public_url or s.public_url).rstrip("/")
        self._link = link
        if self.webhooks and not self._secret:
            raise ConfigurationError(
                "webhooks are signed with a shared secret, and none is set: set "
                "TASKLOOM_WEBHOOK_SECRET (or webhook_secret=) to at least "
                f"{MIN_WEBHOOK_SECRET_CHARS} random characters (e.g. `python -c 'import "
                "secrets; print(secrets.token_urlsafe(32))'`) and give it to the receivers"
            )
        if self._secret is not None and len(self._secret) < MIN_WEBHOOK_SECRET_CHARS:
            raise ConfigurationError(webhook_secret_problem(len(self._secret)))
        for url in self.webhooks:
            if urlsplit(url).scheme not in ("http", "https"):
                raise ConfigurationError(
                    f"webhook {redact_url(url)!r} is not an http:// or https:// URL"
                )
        if not 0 < timeout < lease:
            raise UserError(f"need 0 < timeout < lease (got timeout={timeout}, lease={lease})")
        if claim_idle <= 0 or concurrency < 1 or batch < 1:
            raise UserError("claim_idle must be > 0, concurrency and batch >= 1")
        self.retry = retry
        self.timeout = timeout
        self.lease_ms = int(lease * 1000)
        self.claim_idle = claim_idle
        self.batch = batch
        self.clock = clock or SystemClock()
        self.consumer = consumer or consumer_name()
        self._http = http
        self._own_http = http is None
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._wake = asyncio.Event()
        self._tries: set[asyncio.Task[bool]] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready = False
        self._next_reclaim = 0.0

    @property
    def enabled(self) -> bool:
        """Whether there is anywhere to deliver to (a webhook, or SMTP)."""
        return bool(self.webhooks or self._smtp)

    # -- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.setup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def setup(self) -> None:
        """Create the outbox's consumer group (from now on, events wait for a notifier)
        and the HTTP client. Idempotent; :meth:`run` and :meth:`deliver_due` call it."""
        if self._ready:
            return
        await self.store.ensure_group(self.store.keys.inbox_outbox, GROUP, start="$")
        if self._http is None:
            import httpx  # ~60 ms to import: only where notifications are configured

            self._http = httpx.AsyncClient(
                timeout=self.timeout,
                follow_redirects=False,
                headers={"User-Agent": "taskloom-notifier"},
            )
        self._ready = True

    def start(self) -> None:
        """Run :meth:`run` in the background on the running loop, once (later calls do
        nothing while it runs); :meth:`aclose` stops it."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="notifier")
            self._task.add_done_callback(_log_crash)

    async def run(self) -> None:
        """Deliver until cancelled: new events as they arrive (a blocking read of the
        outbox), retries when they fall due (a wake-up at the first due time)."""
        await self._guard(self.setup)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._forever(self._read_once))
            group.create_task(self._forever(self._retry_once))

    async def aclose(self) -> None:
        """Stop: stop taking work, give the tries in flight up to ``timeout`` to finish
        (any still running then is cancelled; its lease lapses and it is tried again,
        with the same id), leave the consumer group if nothing is pending here, and
        close the HTTP client."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._tries:
            _, late = await asyncio.wait(set(self._tries), timeout=self.timeout)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._ready:
            with contextlib.suppress(RedisError):
                await self._leave_group()
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
        self._ready = False

    async def _leave_group(self) -> None:
        """Drop this consumer from the group, unless events are pending on it (another
        notifier takes those over after ``claim_idle``), so restarts leave no trace."""
        outbox = self.store.keys.inbox_outbox
        mine = await self.store.raw.xpending_range(
            outbox, GROUP, min="-", max="+", count=1, consumername=self.consumer
        )
        if not mine:
            await self.store.raw.xgroup_delconsumer(outbox, GROUP, self.consumer)

    async def _forever(self, body: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await self._guard(body)
            except Exception:  # a bug in one pass must not stop deliveries for good
                log.exception("notifier: a pass failed; going on")
                await asyncio.sleep(1.0)

    async def _guard(self, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` once, riding out Redis outages with capped backoff."""
        await ride_out(body, what="notifier: Redis error", log=log)

    # -- one pass (tests, cron) ---------------------------------------------------------
    async def deliver_due(self) -> int:
        """Do now, without waiting, what is to do: take the events in the outbox (and
        those a dead notifier left), try every due delivery; returns how many were
        delivered."""
        await self.setup()
        tries = await self._reclaim()
        while messages := await self._read(block=None):
            tries += await self._take_events(messages)
        while due := await self._take_due():
            tries += due
        results = await asyncio.gather(*(self._attempt(t) for t in tries))
        return sum(results)

    # -- the outbox ---------------------------------------------------------------------
    async def _read(self, *, block: int | None) -> list[tuple[str, dict[str, str]]]:
        res = await self.store.raw.xreadgroup(
            GROUP,
            self.consumer,
            {self.store.keys.inbox_outbox: ">"},
            count=self.batch,
            block=block,
        )
        return [m for _, messages in res or [] for m in messages]

    async def _read_once(self) -> None:
        """Take over what a dead notifier read and left (every ``claim_idle``), then
        wait for new events (up to ``claim_idle``) and take them."""
        tries = []
        if time.monotonic() >= self._next_reclaim:
            self._next_reclaim = time.monotonic() + self.claim_idle
            tries += await self._reclaim()
        messages = await self._read(block=int(self.claim_idle * 1000))
        await self._spawn(tries + await self._take_events(messages))

    async def _reclaim(self) -> list[_Try]:
        """Events read by a notifier that died before taking them in."""
        res = await self.store.raw.xautoclaim(
            self.store.keys.inbox_outbox,
            GROUP,
            self.consumer,
            int(self.claim_idle * 1000),
            "0-0",
            count=self.batch,
        )
        return await self._take_events(res[1])

    async def _take_events(self, messages: list[tuple[str, dict[str, str]]]) -> list[_Try]:
        """Make the deliveries of each event (acknowledging it in the same script), all
        in one round trip; returns those created, leased to this notifier."""
        keys, now = self.store.keys, self.clock.now_ms()
        trimmed: list[str] = []  # trimmed while pending: nothing to send
        calls: list[tuple[list[str], list[Any], dict[str, str], str]] = []
        for msg_id, fields in messages:
            if not fields or "e" not in fields:
                trimmed.append(msg_id)
                continue
            event_json = fields["e"]
            event = serde.loads(event_json)
            endpoints = self._endpoints(event)
            ids = [f"{event['id']}:{endpoint_hash(e)}" for e in endpoints]
            pairs = (x for pair in zip(ids, endpoints, strict=True) for x in pair)
            calls.append(
                (
                    [keys.inbox_outbox, keys.notify_due, *map(keys.notify_delivery, ids)],
                    [GROUP, msg_id, now, now + self.lease_ms, event_json, *pairs],
                    dict(zip(ids, endpoints, strict=True)),
                    event_json,
                )
            )
        if not (trimmed or calls):
            return []

        def build(pipe: Any) -> None:
            if trimmed:
                pipe.xack(keys.inbox_outbox, GROUP, *trimmed)
            for call_keys, args, _, _ in calls:
                self.store.scripts.queue(pipe, "notify_enqueue", call_keys, args)

        replies = await self.store.scripts.pipeline(build)
        tries = []
        for created, (_, _, where, event_json) in zip(
            replies[1:] if trimmed else replies, calls, strict=True
        ):
            if isinstance(created, Exception):
                raise created
            tries += [_Try(i, 1, 0, where[i], event_json) for i in created]
        return tries

    def _endpoints(self, event: dict[str, Any]) -> list[str]:
        """Where ``event`` goes: every webhook, and the assignee's mailbox if it asks
        them to act."""
        endpoints = list(self.webhooks)
        assignee = (event.get("task") or {}).get("assignee")
        if (
            self._smtp is not None
            and event.get("kind") in MAIL_KINDS
            and isinstance(assignee, str)
            and _EMAIL.match(assignee)
        ):
            endpoints.append(f"mailto:{assignee}")
        return endpoints

    # -- retries ------------------------------------------------------------------------
    async def _retry_once(self) -> None:
        """Try what is due, then sleep until the first due time (or until told that a
        retry was scheduled here, or ``claim_idle`` for other notifiers' retries)."""
        self._wake.clear()
        # Lease only what can start now: a lease must not lapse while a try waits for a
        # slot, or another notifier takes the delivery again.
        while due := await self._take_due(self._concurrency - len(self._tries)):
            await self._spawn(due)
        first = await self.store.raw.zrange(self.store.keys.notify_due, 0, 0, withscores=True)
        cancel = self.clock.call_at(int(first[0][1]), self._wake.set) if first else None
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.claim_idle)
        finally:
            if cancel is not None:
                cancel()

    async def _take_due(self, most: int | None = None) -> list[_Try]:
        """Lease the deliveries due now to this notifier (at most ``most``)."""
        keys, now = self.store.keys, self.clock.now_ms()
        count = self.batch if most is None else min(self.batch, most)
        if count <= 0:
            return []
        ids = await self.store.raw.zrangebyscore(keys.notify_due, "-inf", now, 0, count)
        if not ids:
            return []
        taken = await self.store.scripts.call(
            "notify_take",
            [keys.notify_due, *map(keys.notify_delivery, ids)],
            [now, now + self.lease_ms, *ids],
        )
        return [_Try(i, int(lease), int(n or 0), e, ev) for i, lease, n, e, ev in taken]

    # -- trying -------------------------------------------------------------------------
    async def _spawn(self, tries: list[_Try]) -> None:
        """Start each try in the background, at most ``concurrency`` at once (waiting
        for a free one holds the reading back)."""
        for t in tries:
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._attempt(t))
            self._tries.add(task)
            task.add_done_callback(self._tried)

    def _tried(self, task: asyncio.Task[bool]) -> None:
        self._tries.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("notifier: a delivery crashed", exc_info=task.exception())

    async def _attempt(self, t: _Try) -> bool:
        """Send one try and record how it went; True if delivered."""
        error, retry_after = "", None
        try:
            await self._send(t)
        except _Failed as exc:
            error, retry_after = str(exc), exc.retry_after
        except Exception as exc:  # a bug here must not lose the delivery: retry it
            log.exception("notifier: delivery %s failed unexpectedly", t.id)
            error = f"{type(exc).__name__}: {exc}"
        await self._guard(lambda: self._settle(t, error, retry_after))
        return not error

    async def _settle(self, t: _Try, error: str, retry_after: float | None) -> None:
        keys, now = self.store.keys, self.clock.now_ms()
        if not error:
            args = [t.id, "ok", t.lease, now, int(KEEP_DELIVERED_S * 1000), 0, ""]
        else:
            delay = self.retry.delay(t.attempts + 1, rand=random.random())
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.retry.max_interval))
            next_ms = now + int(delay * 1000)
            args = [t.id, "fail", t.lease, now, next_ms, self.retry.max_attempts, error[:500]]
        outcome = await self.store.scripts.call(
            "notify_settle", [keys.notify_due, keys.notify_dead, keys.notify_delivery(t.id)], args
        )
        if outcome == 2:
            log.info("notifier: %s to %s failed (%s); retrying", t.id, _where(t.endpoint), error)
            self._wake.set()  # the retry loop sets its wake-up by the new due time
        elif outcome == 3:
            log.warning(
                "notifier: gave up on %s to %s after %d tries (%s); see Notifier.dead()",
                t.id,
                _where(t.endpoint),
                t.attempts + 1,
                error,
            )

    async def _send(self, t: _Try) -> None:
        if t.endpoint.startswith("mailto:"):
            if self._smtp is None:
                raise _Failed("this notifier has no smtp_url to send mail with")
            await self._mail(t, t.endpoint.removeprefix("mailto:"))
        elif t.endpoint in self.webhooks:
            await self._post(t)
        else:
            raise _Failed("the endpoint is not configured on this notifier (any more)")

    async def _post(self, t: _Try) -> None:
        assert self._http is not None and self._secret is not None  # by setup, __init__
        body = t.event_json.encode()
        event = serde.loads(body)
        sent = int(time.time())  # the receiver's clock judges it: wall time, not ours
        headers = {
            "Content-Type": "application/json",
            "X-Taskloom-Event": str(event.get("kind", "")),
            "X-Taskloom-Delivery": t.id,
            "Idempotency-Key": t.id,
            "X-Taskloom-Timestamp": str(sent),
            "X-Taskloom-Signature": sign(body, self._secret, timestamp=sent),
        }
        import httpx

        try:
            async with asyncio.timeout(self.timeout):
                response = await self._http.post(t.endpoint, content=body, headers=headers)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise _Failed(redact_text(f"{type(exc).__name__}: {exc}".rstrip(": "))) from None
        if not 200 <= response.status_code < 300:
            raise _Failed(
                f"HTTP {response.status_code}",
                retry_after=_seconds(response.headers.get("Retry-After")),
            )

    async def _mail(self, t: _Try, address: str) -> None:
        assert self._smtp is not None
        event = serde.loads(t.event_json)
        task = event.get("task") or {}
        link = self._page(task)
        if self._link is not None:
            with contextlib.suppress(TaskloomError):  # decided meanwhile: the page it is
                link = await self._link(task)
        headline = _MAIL_HEADLINES.get(event.get("kind", ""), "Inbox")
        message = EmailMessage()
        message["From"] = self.notify_from
        message["To"] = address
        message["Subject"] = f"[taskloom] {headline}: {one_line(str(task.get('title', '')), 120)}"
        message["Date"] = formatdate(localtime=False)
        # The same on every try, so a mail server can drop a second copy.
        message["Message-ID"] = f"<{hashlib.sha256(t.id.encode()).hexdigest()[:32]}@taskloom>"
        message["X-Taskloom-Delivery"] = t.id
        message.set_content(_mail_text(headline, task, link))
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self._smtp.send, message, self.timeout), self.timeout * 2
            )
        except (smtplib.SMTPException, OSError, TimeoutError) as exc:
            raise _Failed(f"SMTP: {type(exc).__name__}: {exc}") from None

    def _page(self, task: dict[str, Any]) -> str:
        from taskloom.inbox.links import item_path  # no web framework: a module of plain helpers

        return self.public_url + item_path(f"{task.get('run_id', '')}/{task.get('seq', '')}")

    # -- for operators ------------------------------------------------------------------
    async def get(self, delivery_id: str) -> Delivery | None:
        """Delivery ``delivery_id``, or None if unknown (or delivered long ago)."""
        fields = await self.store.raw.hgetall(self.store.keys.notify_delivery(delivery_id))
        return Delivery.from_hash(fields) if fields else None

    async def dead(self, *, limit: int = 100) -> list[Delivery]:
        """Deliveries given up on, oldest first."""
        keys = self.store.keys
        ids = await self.store.raw.zrange(keys.notify_dead, 0, limit - 1)
        pipe = self.store.raw.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(keys.notify_delivery(i))
        return [Delivery.from_hash(f) for f in await pipe.execute() if f]

    async def pending(self) -> int:
        """How many deliveries wait for a (first or next) try."""
        return int(await self.store.raw.zcard(self.store.keys.notify_due))

    async def redrive(self, delivery_id: str) -> None:
        """Try dead delivery ``delivery_id`` again now, with fresh attempts."""
        await self._operate(delivery_id, "redrive")
        self._wake.set()

    async def discard(self, delivery_id: str) -> None:
        """Forget dead delivery ``delivery_id``."""
        await self._operate(delivery_id, "discard")

    async def _operate(self, delivery_id: str, action: str) -> None:
        keys = self.store.keys
        done = await self.store.scripts.call(
            "notify_redrive",
            [keys.notify_due, keys.notify_dead, keys.notify_delivery(delivery_id)],
            [delivery_id, action, self.clock.now_ms()],
        )
        if not done:
            raise UserError(f"no dead delivery {delivery_id!r}; list them with Notifier.dead()")


def install(worker: Worker, settings: Settings) -> Notifier | None:
    """Give ``worker`` the operator's inbox defaults (``inbox_sla``) and, when webhooks
    or SMTP are configured, a :class:`Notifier` that it runs beside its loops (and
    closes when it stops). Returns the notifier, if any."""
    worker.human_tasks = HumanTasks(worker.store, default_sla=settings.inbox_sla)
    if not (settings.webhooks or settings.smtp_url):
        return None
    notifier = Notifier(
        worker.store,
        settings=settings,
        clock=worker.clock,
        consumer=worker.worker_id,
        link=magic_links(worker.store, settings, worker.clock) if settings.secret else None,
    )
    worker.resources["notifier"] = notifier
    return notifier


def magic_links(
    store: Store, settings: Settings, clock: Clock
) -> Callable[[dict[str, Any]], Awaitable[str]]:
    """A ``link`` maker for :class:`Notifier`: each mail to an assignee carries their
    one live magic link to the item (one decision, no account).

    The link belongs to the assignment the mail is about: a later mail to the same
    reviewer carries the same link while it works for at least half its lifetime, and
    none is made once the item moved on (the mail then points at the item's page). It
    works until the item's SLA is due plus :data:`LINK_GRACE`, at most
    ``settings.link_ttl`` (and that long with no SLA), and stops when the item is
    reassigned or decided. Needs ``TASKLOOM_SECRET`` shared with ``taskloom serve``.
    """
    from taskloom.inbox.links import MagicLinks

    assert settings.secret is not None
    links = MagicLinks(store, secret=settings.secret, public_url=settings.public_url, clock=clock)

    async def make(task: dict[str, Any]) -> str:
        link = await links.create(
            str(task["id"]),
            ttl=_mailed_link_ttl(task.get("sla_due_ms"), clock.now_ms(), settings.link_ttl),
            reviewer=task.get("assignee"),
            reuse=True,
            assignment=int(task.get("fallback_used") or 0),
        )
        return link.url

    return make


def _mailed_link_ttl(sla_due_ms: int | None, now_ms: int, max_ttl: float) -> float:
    """Seconds a mailed link works: until the SLA point (or now, once it passed) plus
    :data:`LINK_GRACE`, at most ``max_ttl``; ``max_ttl`` with no SLA."""
    if not sla_due_ms:
        return max_ttl
    until = max(int(sla_due_ms), now_ms) + int(LINK_GRACE * 1000)
    return min((until - now_ms) / 1000, max_ttl)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("notifier stopped by a bug", exc_info=task.exception())


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header's delay in seconds (its HTTP-date form is ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _where(endpoint: str) -> str:
    """An endpoint for logs, without credentials, path or query."""
    if endpoint.startswith("mailto:"):
        return endpoint
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _mail_text(headline: str, task: dict[str, Any], link: str) -> str:
    lines = [f"{headline}: {task.get('title', '')}", ""]
    if task.get("decisions"):
        lines.append(f"Decisions: {', '.join(map(str, task['decisions']))}")
    if task.get("assignee"):
        lines.append(f"Assigned to: {task['assignee']}")
    if task.get("sla_due_ms"):
        due = formatdate(int(task["sla_due_ms"]) / 1000, usegmt=True)
        lines.append(f"Due: {due}")
    lines += ["", f"Open it: {link}", "", "-- taskloom"]
    return "\n".join(lines) + "\n"
