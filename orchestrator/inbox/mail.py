"""Mail to an assignee: who gets one (:func:`mailbox`), its text, sending it over SMTP
(:class:`Smtp`, :func:`send`), and the magic link it carries (:func:`magic_links`)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import smtplib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from taskloom.display import one_line
from taskloom.engine.clock import Clock
from taskloom.engine.store import Store
from taskloom.errors import ConfigurationError
from taskloom.inbox.deliveries import TryFailed
from taskloom.redaction import redact_url
from taskloom.settings import Settings

__all__ = ["LINK_GRACE", "MAIL_KINDS", "Smtp", "magic_links", "mailbox", "send"]

MAIL_KINDS = frozenset({"opened", "reassigned", "sla_near", "sla_breached"})
"""The events that mail the assignee: the ones that ask them to act."""

LINK_GRACE = 900.0
"""Seconds a mailed magic link works past its item's SLA point (15 minutes): time to
finish a decision begun just before it. The SLA's fallback (a reassignment, a default
decision) ends the link sooner; an item left with its reviewer after a breach gets a
link for this long from the mail about the breach."""

_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")
_MAIL_HEADLINES = {
    "opened": "New task for you",
    "reassigned": "A task was passed on to you",
    "sla_near": "Due soon",
    "sla_breached": "Overdue",
}


@dataclass(frozen=True)
class Smtp:
    """Where and how to send mail, from ``smtp://[user:password@]host[:port]``
    (``?starttls=1`` to upgrade the connection) or ``smtps://`` (TLS from the start)."""

    host: str
    port: int
    ssl: bool
    starttls: bool
    user: str | None
    password: str | None = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> Smtp:
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


def mailbox(event: dict[str, Any]) -> str | None:
    """The address to mail about ``event``: its assignee's, if the event asks them to
    act and their name is an e-mail address."""
    assignee = (event.get("task") or {}).get("assignee")
    if event.get("kind") in MAIL_KINDS and isinstance(assignee, str) and _EMAIL.match(assignee):
        return assignee
    return None


async def send(
    smtp: Smtp,
    delivery_id: str,
    address: str,
    event: dict[str, Any],
    *,
    link: str,
    sender: str,
    timeout: float,
) -> None:
    """Mail ``address`` about ``event`` (delivery ``delivery_id``), pointing at
    ``link``; raises :class:`~taskloom.inbox.deliveries.TryFailed` if SMTP fails."""
    task = event.get("task") or {}
    headline = _MAIL_HEADLINES.get(event.get("kind", ""), "Inbox")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = address
    message["Subject"] = f"[taskloom] {headline}: {one_line(str(task.get('title', '')), 120)}"
    message["Date"] = formatdate(localtime=False)
    # The same on every try, so a mail server can drop a second copy.
    message["Message-ID"] = f"<{hashlib.sha256(delivery_id.encode()).hexdigest()[:32]}@taskloom>"
    message["X-Taskloom-Delivery"] = delivery_id
    message.set_content(_mail_text(headline, task, link))
    try:
        await asyncio.wait_for(asyncio.to_thread(smtp.send, message, timeout), timeout * 2)
    except (smtplib.SMTPException, OSError, TimeoutError) as exc:
        raise TryFailed(f"SMTP: {type(exc).__name__}: {exc}") from None


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
