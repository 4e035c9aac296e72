"""Magic links: one inbox item, one decision, for a reviewer who has no account.

A link is the item's page with a signed token (HMAC-SHA256 with the server's secret)
that names the item, the link and its expiry. It opens that item's page and accepts one
decision; any other page refuses it. Made from Python or ``taskloom link create``::

    links = MagicLinks(orch.store, secret=load_secret(orch.settings),
                       public_url=orch.settings.public_url)
    link = await links.create(task.id, ttl=24 * 3600, reviewer="partner@example.com")
    send(link.url)
    ...
    await links.revoke(link.id)          # or the token, or the whole URL

A link is spent once, atomically: recording a decision first sets the link's "spent"
key with ``SET NX`` (a revocation sets the same key), so of two submissions racing on
one link exactly one reaches the inbox; if the inbox then refuses the decision (the item
was decided meanwhile) the mark is taken back. Refusals are :class:`LinkRefusedError`
with the HTTP status the web pages answer with: 403 for a forged, changed, revoked or
misplaced link, 410 for a used or expired one.
"""

from __future__ import annotations

import builtins
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlsplit

from .. import serde
from ..clock import Clock
from ..errors import HumanTaskClosedError, UserError
from ..human import Decision, HumanTasks
from ..store import Store
from .signing import Signer

__all__ = ["DEFAULT_TTL", "LinkRefusedError", "LinkState", "MagicLink", "MagicLinks", "item_path"]


def item_path(task_id: str) -> str:
    """The path of task ``task_id``'s page (``/items/RUN/SEQ``) in the web inbox."""
    run_id, _, seq = task_id.partition("/")
    return f"/items/{quote(run_id, safe='')}/{quote(seq, safe='')}"


DEFAULT_TTL = 7 * 86400.0
"""Seconds a link works when no ``ttl`` is given: a week."""
MAX_TTL = 90 * 86400.0
_RETAIN_MS = 30 * 86400 * 1000  # records outlive their link, so a late click gets a clear 410
_PURPOSE = "link"

LinkState = Literal["open", "used", "revoked", "expired"]


class LinkRefusedError(UserError):
    """A magic link that grants nothing here. ``status`` is the HTTP status the web
    inbox answers with: 403 (forged, changed, revoked, used on another page) or 410
    (already used, expired)."""

    def __init__(self, message: str, *, status: Literal[403, 410]) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, kw_only=True)
class MagicLink:
    """One link: what it opens, for whom, until when."""

    id: str
    task_id: str
    token: str
    url: str
    reviewer: str | None
    created_ms: int
    expires_ms: int
    state: LinkState = "open"

    @property
    def by(self) -> str:
        """Who a decision through this link is recorded as."""
        return self.reviewer or f"link:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form."""
        return asdict(self)


class MagicLinks:
    """Make, check, spend and revoke magic links (keys under ``{links}``)."""

    def __init__(
        self,
        store: Store,
        *,
        secret: str,
        public_url: str = "http://127.0.0.1:8765",
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.public_url = public_url.rstrip("/")
        self.clock = clock or Clock()
        self._signer = Signer(secret)

    # -- making -------------------------------------------------------------------------
    async def create(
        self, task_id: str, *, ttl: float = DEFAULT_TTL, reviewer: str | None = None
    ) -> MagicLink:
        """A new link to open task ``task_id``, working for ``ttl`` seconds."""
        if not 0 < ttl <= MAX_TTL:
            raise UserError(
                f"ttl must be between 1 second and {MAX_TTL / 86400:g} days (got {ttl})"
            )
        task = await HumanTasks(self.store).get(task_id)
        if task.status != "open":
            raise HumanTaskClosedError(
                f"human task {task_id} is {task.status}; a link to it could decide nothing"
            )
        now = self.clock.now_ms()
        link_id = secrets.token_hex(8)
        expires = now + max(1, int(ttl * 1000))
        token = self._signer.sign(_PURPOSE, {"l": link_id, "t": task_id, "e": expires})
        record = {
            "id": link_id,
            "task_id": task_id,
            "reviewer": reviewer,
            "created_ms": now,
            "expires_ms": expires,
        }
        keys, keep = self.store.keys, expires - now + _RETAIN_MS
        pipe = self.store.raw.pipeline(transaction=True)
        pipe.set(keys.link(link_id), serde.dumps(record), px=keep)
        pipe.sadd(keys.task_links(task_id), link_id)
        pipe.pexpire(keys.task_links(task_id), int(MAX_TTL * 1000) + _RETAIN_MS)
        await pipe.execute()
        return self._link(record, token)

    def url(self, task_id: str, token: str) -> str:
        """The address of task ``task_id``'s page opened with ``token``."""
        return f"{self.public_url}{item_path(task_id)}?link={token}"

    def _link(self, record: dict[str, Any], token: str, state: LinkState = "open") -> MagicLink:
        return MagicLink(
            id=record["id"],
            task_id=record["task_id"],
            token=token,
            url=self.url(record["task_id"], token) if token else "",
            reviewer=record.get("reviewer"),
            created_ms=int(record["created_ms"]),
            expires_ms=int(record["expires_ms"]),
            state=state,
        )

    # -- checking and spending ----------------------------------------------------------
    async def check(self, token: str, task_id: str | None = None) -> MagicLink:
        """The open link ``token`` is, if it may open task ``task_id`` now; else
        :class:`LinkRefusedError` saying why."""
        data = self._signer.unsign(_PURPOSE, token)
        if data is None or not _fields_ok(data):
            raise LinkRefusedError(
                "this link is not valid: it was changed, cut short, or not made by this "
                "server; ask whoever sent it for a new one",
                status=403,
            )
        if task_id is not None and data["t"] != task_id:
            raise LinkRefusedError(
                "this link opens one other item and nothing else; use it as it was sent",
                status=403,
            )
        raw = self.store.raw
        record_text, spent_text = await raw.mget(
            [self.store.keys.link(data["l"]), self.store.keys.link_spent(data["l"])]
        )
        record = serde.loads(record_text) if record_text else None
        if record is None or record.get("task_id") != data["t"]:
            raise LinkRefusedError("this link is not known here any more", status=403)
        if spent_text:
            spent = serde.loads(spent_text)
            if spent.get("state") == "revoked":
                raise LinkRefusedError(
                    "this link was revoked; ask whoever sent it for a new one", status=403
                )
            raise LinkRefusedError(
                f"this link was already used: {spent.get('decision')!r} was recorded "
                f"through it; a link takes one decision",
                status=410,
            )
        if self.clock.now_ms() >= int(data["e"]):
            raise LinkRefusedError(
                "this link has expired; ask whoever sent it for a new one", status=410
            )
        return self._link(record, token)

    async def decide(
        self,
        link: MagicLink | str,
        task_id: str,
        decision: str,
        *,
        note: str = "",
        data: Any = None,
    ) -> Decision:
        """Record ``decision`` on task ``task_id`` through ``link`` (its token, or the
        :class:`MagicLink` :meth:`check` just gave for this task), spending the link.
        Refused (:class:`LinkRefusedError`) if the link may not; the inbox's own refusals
        (:class:`~taskloom.HumanTaskClosedError`, ...) leave it unspent. Spending is
        what settles a race with another decision or a revocation, not the check."""
        if isinstance(link, str) or link.task_id != task_id:
            link = await self.check(link if isinstance(link, str) else link.token, task_id)
        token = link.token
        spent = {"state": "used", "decision": decision, "at_ms": self.clock.now_ms()}
        key = self.store.keys.link_spent(link.id)
        keep = link.expires_ms - self.clock.now_ms() + _RETAIN_MS
        if not await self.store.raw.set(key, serde.dumps(spent), nx=True, px=max(keep, 1000)):
            await self.check(token, task_id)  # raises: used or revoked meanwhile
            raise LinkRefusedError(
                "another decision through this link is being recorded right now", status=410
            )
        try:
            return await HumanTasks(self.store).decide(
                task_id, decision, by=link.by, note=note, data=data
            )
        except BaseException:
            # Nothing was recorded through the link, so it stays usable; our SET NX
            # won, so no other request (or revocation) owns this key.
            await self.store.raw.delete(key)
            raise

    def csrf(self, link: MagicLink) -> str:
        """The form token bound to ``link`` (links carry no session)."""
        return self._signer.mac("link-csrf", link.id)

    # -- revoking and listing -----------------------------------------------------------
    async def revoke(self, token_or_id: str) -> MagicLink:
        """Revoke a link, by its id, its token or its whole URL. A link already used
        stays used; revoking twice is harmless."""
        link_id = self._id_of(token_or_id)
        record_text = await self.store.raw.get(self.store.keys.link(link_id))
        if not record_text:
            raise UserError(
                f"no magic link {link_id!r}; list a task's links with `taskloom link list`"
            )
        record = serde.loads(record_text)
        keep = int(record["expires_ms"]) - self.clock.now_ms() + _RETAIN_MS
        revoked = {"state": "revoked", "at_ms": self.clock.now_ms()}
        key = self.store.keys.link_spent(link_id)
        await self.store.raw.set(key, serde.dumps(revoked), nx=True, px=max(keep, 1000))
        return (await self._states([link_id]))[0]

    async def list(self, task_id: str) -> builtins.list[MagicLink]:
        """The links made for task ``task_id`` (oldest first), with their state; their
        tokens are not kept, so ``token`` and ``url`` are empty."""
        ids = sorted(await self.store.raw.smembers(self.store.keys.task_links(task_id)))
        links = await self._states(ids)
        return sorted(links, key=lambda link: link.created_ms)

    async def _states(self, ids: builtins.list[str]) -> builtins.list[MagicLink]:
        if not ids:
            return []
        keys = self.store.keys
        texts = await self.store.raw.mget(
            [k for i in ids for k in (keys.link(i), keys.link_spent(i))]
        )
        now, out = self.clock.now_ms(), []
        for record_text, spent_text in zip(texts[::2], texts[1::2], strict=True):
            if not record_text:
                continue
            record = serde.loads(record_text)
            state: LinkState = "open"
            if spent_text:
                state = "revoked" if serde.loads(spent_text).get("state") == "revoked" else "used"
            elif now >= int(record["expires_ms"]):
                state = "expired"
            out.append(self._link(record, "", state))
        return out

    def _id_of(self, token_or_id: str) -> str:
        text = token_or_id.strip()
        if "?" in text:
            text = (parse_qs(urlsplit(text).query).get("link") or [""])[0]
        if "." not in text:
            return text
        data = self._signer.unsign(_PURPOSE, text)
        if data is None or not _fields_ok(data):
            raise UserError("that is not a link this server made (the token does not verify)")
        return str(data["l"])


def _fields_ok(data: dict[str, Any]) -> bool:
    return (
        isinstance(data.get("l"), str)
        and isinstance(data.get("t"), str)
        and isinstance(data.get("e"), int)
    )
