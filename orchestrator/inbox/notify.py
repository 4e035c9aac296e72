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

This module keeps the loop; the signatures and the ``POST`` are in
:mod:`taskloom.inbox.webhooks`, the mail and its magic link in :mod:`taskloom.inbox.mail`,
the delivery records in :mod:`taskloom.inbox.deliveries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from taskloom.engine import serde
from taskloom.engine.clock import Clock, SystemClock
from taskloom.engine.human import HumanTasks
from taskloom.engine.keys import consumer_name
from taskloom.engine.retries import RetryPolicy
from taskloom.engine.store import Store, ride_out
from taskloom.errors import ConfigurationError, TaskloomError, UserError
from taskloom.inbox import mail, webhooks
from taskloom.inbox.deliveries import (
    DEFAULT_RETRY,
    Delivery,
    DeliveryBook,
    Try,
    TryFailed,
    endpoint_for_logs,
)
from taskloom.inbox.mail import LINK_GRACE, Smtp, magic_links
from taskloom.inbox.webhooks import SIGNATURE_TOLERANCE_S, endpoint_hash, sign, verify_signature
from taskloom.redaction import redact_url
from taskloom.settings import MIN_WEBHOOK_SECRET_CHARS, Settings, webhook_secret_problem

if TYPE_CHECKING:
    import httpx

    from taskloom.engine.worker import Worker

# The names below were all defined here before the split into deliveries, mail and
# webhooks; they stay importable from here (the README's receiver imports sign and
# verify_signature from this module).
__all__ = [
    "DEFAULT_RETRY",
    "GROUP",
    "LINK_GRACE",
    "SIGNATURE_TOLERANCE_S",
    "Delivery",
    "Notifier",
    "endpoint_hash",
    "install",
    "magic_links",
    "sign",
    "verify_signature",
]

log = logging.getLogger("taskloom.inbox.notify")

GROUP = "notifiers"
"""The consumer group of the inbox outbox that notifiers share."""


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
        self._smtp = Smtp.parse(smtp_url) if smtp_url else None
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
        self._book = DeliveryBook(
            store, clock=self.clock, retry=retry, lease_ms=self.lease_ms, batch=batch
        )

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
        while due := await self._book.take_due():
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

    async def _reclaim(self) -> list[Try]:
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

    async def _take_events(self, messages: list[tuple[str, dict[str, str]]]) -> list[Try]:
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
            tries += [Try(i, 1, 0, where[i], event_json) for i in created]
        return tries

    def _endpoints(self, event: dict[str, Any]) -> list[str]:
        """Where ``event`` goes: every webhook, and the assignee's mailbox if it asks
        them to act."""
        endpoints = list(self.webhooks)
        if self._smtp is not None and (address := mail.mailbox(event)):
            endpoints.append(f"mailto:{address}")
        return endpoints

    # -- retries ------------------------------------------------------------------------
    async def _retry_once(self) -> None:
        """Try what is due, then sleep until the first due time (or until told that a
        retry was scheduled here, or ``claim_idle`` for other notifiers' retries)."""
        self._wake.clear()
        # Lease only what can start now: a lease must not lapse while a try waits for a
        # slot, or another notifier takes the delivery again.
        while due := await self._book.take_due(self._concurrency - len(self._tries)):
            await self._spawn(due)
        first = await self.store.raw.zrange(self.store.keys.notify_due, 0, 0, withscores=True)
        cancel = self.clock.call_at(int(first[0][1]), self._wake.set) if first else None
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.claim_idle)
        finally:
            if cancel is not None:
                cancel()

    # -- trying -------------------------------------------------------------------------
    async def _spawn(self, tries: list[Try]) -> None:
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

    async def _attempt(self, t: Try) -> bool:
        """Send one try and record how it went; True if delivered."""
        error, retry_after = "", None
        try:
            await self._send(t)
        except TryFailed as exc:
            error, retry_after = str(exc), exc.retry_after
        except Exception as exc:  # a bug here must not lose the delivery: retry it
            log.exception("notifier: delivery %s failed unexpectedly", t.id)
            error = f"{type(exc).__name__}: {exc}"
        await self._guard(lambda: self._settle(t, error, retry_after))
        return not error

    async def _settle(self, t: Try, error: str, retry_after: float | None) -> None:
        outcome = await self._book.settle(t, error, retry_after)
        if outcome == 2:
            log.info(
                "notifier: %s to %s failed (%s); retrying",
                t.id,
                endpoint_for_logs(t.endpoint),
                error,
            )
            self._wake.set()  # the retry loop sets its wake-up by the new due time
        elif outcome == 3:
            log.warning(
                "notifier: gave up on %s to %s after %d tries (%s); see Notifier.dead()",
                t.id,
                endpoint_for_logs(t.endpoint),
                t.attempts + 1,
                error,
            )

    async def _send(self, t: Try) -> None:
        if t.endpoint.startswith("mailto:"):
            if self._smtp is None:
                raise TryFailed("this notifier has no smtp_url to send mail with")
            await self._mail(t, t.endpoint.removeprefix("mailto:"))
        elif t.endpoint in self.webhooks:
            await self._post(t)
        else:
            raise TryFailed("the endpoint is not configured on this notifier (any more)")

    async def _post(self, t: Try) -> None:
        assert self._http is not None and self._secret is not None  # by setup, __init__
        await webhooks.post(self._http, t, secret=self._secret, timeout=self.timeout)

    async def _mail(self, t: Try, address: str) -> None:
        assert self._smtp is not None
        event = serde.loads(t.event_json)
        task = event.get("task") or {}
        link = self._page(task)
        if self._link is not None:
            with contextlib.suppress(TaskloomError):  # decided meanwhile: the page it is
                link = await self._link(task)
        await mail.send(
            self._smtp,
            t.id,
            address,
            event,
            link=link,
            sender=self.notify_from,
            timeout=self.timeout,
        )

    def _page(self, task: dict[str, Any]) -> str:
        from taskloom.inbox.links import item_path  # no web framework: a module of plain helpers

        return self.public_url + item_path(f"{task.get('run_id', '')}/{task.get('seq', '')}")

    # -- for operators ------------------------------------------------------------------
    async def get(self, delivery_id: str) -> Delivery | None:
        """Delivery ``delivery_id``, or None if unknown (or delivered long ago)."""
        return await self._book.get(delivery_id)

    async def dead(self, *, limit: int = 100) -> list[Delivery]:
        """Deliveries given up on, oldest first."""
        return await self._book.dead(limit=limit)

    async def pending(self) -> int:
        """How many deliveries wait for a (first or next) try."""
        return await self._book.pending()

    async def redrive(self, delivery_id: str) -> None:
        """Try dead delivery ``delivery_id`` again now, with fresh attempts."""
        await self._book.operate(delivery_id, "redrive")
        self._wake.set()

    async def discard(self, delivery_id: str) -> None:
        """Forget dead delivery ``delivery_id``."""
        await self._book.operate(delivery_id, "discard")


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


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("notifier stopped by a bug", exc_info=task.exception())
