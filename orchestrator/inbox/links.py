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

A link belongs to the item's current assignment: it is made for the task as it is
assigned now (its SLA round, ``HumanTask.fallback_used``), and stops working the moment
the item is reassigned (its page then says the item moved on; the link is marked
revoked). A link made for a named reviewer is their one live link to the item: making
another one revokes it, or, with ``reuse=True`` (what mails do), gives it again while it
is open and lasts long enough, so three mails to one reviewer carry one link.

A link is spent once, atomically: recording a decision first marks the link
"deciding" with ``SET NX``, so of two submissions racing on one link exactly one reaches
the inbox; the mark becomes "used" once the inbox took the decision, and is taken back
if the inbox refused it (the item was decided meanwhile), both by ``link_settle.lua``,
which acts only while the mark is still that decision's own. A revocation
(``link_revoke.lua``) overwrites an open or "deciding" link, so a revocation made while
a decision is in flight is never undone by that decision failing. Refusals are
:class:`LinkRefusedError` with the HTTP status the web pages answer with: 403 for a
forged, changed, revoked, replaced, moved-on or misplaced link, 410 for a used or
expired one.
"""

from __future__ import annotations

import builtins
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlsplit

from taskloom.engine import serde
from taskloom.engine.clock import Clock
from taskloom.engine.human import Decision, HumanTask, HumanTasks
from taskloom.engine.store import Store
from taskloom.errors import HumanTaskClosedError, HumanTaskNotFoundError, UserError
from taskloom.inbox.signing import Signer

__all__ = ["DEFAULT_TTL", "LinkRefusedError", "LinkState", "MagicLink", "MagicLinks", "item_path"]


def item_path(task_id: str) -> str:
    """The path of task ``task_id``'s page (``/items/RUN/SEQ``) in the web inbox."""
    run_id, _, seq = task_id.partition("/")
    return f"/items/{quote(run_id, safe='')}/{quote(seq, safe='')}"


DEFAULT_TTL = 7 * 86400.0
"""Seconds a link works when no ``ttl`` is given: a week."""
MAX_TTL = 90 * 86400.0
"""The longest ``ttl`` a link may have: 90 days."""
_RETAIN_MS = 30 * 86400 * 1000  # records outlive their link, so a late click gets a clear 410
_DECIDING_MS = 300_000  # a process that died mid-decision frees the link after this
_PURPOSE = "link"
_MOVED = (
    "this item was passed on to another reviewer, so this link no longer works and "
    "nothing was recorded through it; the item's new reviewer decides it now"
)

LinkState = Literal["open", "used", "revoked", "expired"]


class LinkRefusedError(UserError):
    """A magic link that grants nothing here. ``status`` is the HTTP status the web
    inbox answers with: 403 (forged, changed, revoked, replaced by a newer link, its
    item passed on to another reviewer, used on another page) or 410 (already used,
    expired); ``title`` heads the page that says so."""

    def __init__(
        self, message: str, *, status: Literal[403, 410], title: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title or (
            "This link cannot be used" if status == 403 else "This link is used up"
        )
        """The heading of the page that refuses the link."""


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
    assignment: int = 0
    """The round of the item's assignment the link was made for (its
    ``HumanTask.fallback_used``); the link works only while the item is in it."""
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
        self,
        task_id: str,
        *,
        ttl: float = DEFAULT_TTL,
        reviewer: str | None = None,
        reuse: bool = False,
        assignment: int | None = None,
    ) -> MagicLink:
        """A link to open task ``task_id``, working for ``ttl`` seconds while the task
        stays with its current assignment.

        A link for a named ``reviewer`` is their one live link to the task: it revokes
        the one made for them before or, with ``reuse``, *is* that one while it is open,
        of the current assignment and still working for at least half of ``ttl``.
        ``assignment`` (a ``HumanTask.fallback_used`` the caller saw) refuses to make a
        link once the task has moved on from it.
        """
        if not 0 < ttl <= MAX_TTL:
            raise UserError(
                f"ttl must be between 1 second and {MAX_TTL / 86400:g} days (got {ttl})"
            )
        task = await HumanTasks(self.store).get(task_id)
        if task.status != "open":
            raise HumanTaskClosedError(
                f"human task {task_id} is {task.status}; a link to it could decide nothing"
            )
        if assignment is not None and assignment != task.fallback_used:
            raise LinkRefusedError(
                f"human task {task_id} was passed on since; a link for its earlier "
                f"reviewer would decide nothing",
                status=403,
            )
        for _ in range(8):  # another link for the same reviewer made meanwhile: again
            now = self.clock.now_ms()
            expires = now + max(1, int(ttl * 1000))
            live = (
                await self.store.raw.hget(self.store.keys.task_live_links(task_id), reviewer)
                if reviewer
                else None
            )
            if reuse and live:
                same = await self._reusable(live, task, now + max(1, int(ttl * 500)))
                if same is not None:
                    return same
            made = await self._make(task, reviewer, live or "", now, expires)
            if made is not None:
                return made
        raise UserError(
            f"links for {reviewer} to task {task_id} are being made faster than they can "
            f"be kept one at a time; try again"
        )

    async def _make(
        self, task: HumanTask, reviewer: str | None, replaces: str, now: int, expires: int
    ) -> MagicLink | None:
        link_id = secrets.token_hex(8)
        record: dict[str, Any] = {
            "id": link_id,
            "task_id": task.id,
            "reviewer": reviewer,
            "assignment": task.fallback_used,
            "created_ms": now,
            "expires_ms": expires,
        }
        keys, keep = self.store.keys, expires - now + _RETAIN_MS
        revoked = {"state": "revoked", "reason": "replaced", "at_ms": now}
        made = await self.store.scripts.call(
            "link_create",
            [
                keys.link(link_id),
                keys.task_links(task.id),
                keys.task_live_links(task.id),
                keys.link_spent(replaces or link_id),
            ],
            [
                link_id,
                serde.dumps(record),
                keep,
                int(MAX_TTL * 1000) + _RETAIN_MS,
                reviewer or "",
                replaces,
                serde.dumps(revoked),
            ],
        )
        return self._link(record, self._token(record)) if made else None

    async def _reusable(self, link_id: str, task: HumanTask, expires: int) -> MagicLink | None:
        """Link ``link_id`` if it is open, of ``task``'s assignment and works at least
        until ``expires``."""
        keys = self.store.keys
        record_text, spent_text = await self.store.raw.mget(
            [keys.link(link_id), keys.link_spent(link_id)]
        )
        if not record_text or spent_text:
            return None
        record = serde.loads(record_text)
        if _assignment(record) != task.fallback_used or int(record["expires_ms"]) < expires:
            return None
        return self._link(record, self._token(record))

    def _token(self, record: dict[str, Any]) -> str:
        """The token of a link (signing is deterministic, so the same one every time)."""
        return self._signer.sign(
            _PURPOSE, {"l": record["id"], "t": record["task_id"], "e": int(record["expires_ms"])}
        )

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
            assignment=_assignment(record),
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
            raise _spent_refusal(serde.loads(spent_text))
        if self.clock.now_ms() >= int(data["e"]):
            raise LinkRefusedError(
                "this link has expired; ask whoever sent it for a new one", status=410
            )
        link = self._link(record, token)
        await self._still_assigned(link)
        return link

    async def _still_assigned(self, link: MagicLink) -> HumanTask | None:
        """The link's task, if the link is still of its assignment (or the task is
        closed: the pages say so); else the link is revoked and refused."""
        try:
            task = await HumanTasks(self.store).get(link.task_id)
        except HumanTaskNotFoundError:
            return None
        if task.status == "open" and task.fallback_used != link.assignment:
            await self._revoke(link.id, link.expires_ms, "reassigned")
            raise LinkRefusedError(_MOVED, status=403, title="This item has moved on")
        return task

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
        token, nonce, now = link.token, secrets.token_hex(8), self.clock.now_ms()
        key = self.store.keys.link_spent(link.id)
        keep = max(link.expires_ms - now + _RETAIN_MS, 1000)
        deciding = {"state": "deciding", "nonce": nonce, "decision": decision, "at_ms": now}
        if not await self.store.raw.set(
            key, serde.dumps(deciding), nx=True, px=min(keep, _DECIDING_MS)
        ):
            await self.check(token, task_id)  # raises: used or revoked meanwhile
            raise LinkRefusedError(
                "another decision through this link is being recorded right now", status=410
            )
        used = {"state": "used", "decision": decision, "at_ms": now}
        try:
            await self._still_assigned(link)  # moved on since the check: refused
            made = await HumanTasks(self.store).decide(
                task_id, decision, by=link.by, note=note, data=data
            )
        except BaseException:
            # Nothing was recorded through the link, so it stays usable, unless it was
            # revoked meanwhile: link_settle gives back only this decision's own mark.
            await self.store.scripts.call("link_settle", [key], [nonce, "", keep])
            raise
        await self.store.scripts.call("link_settle", [key], [nonce, serde.dumps(used), keep])
        return made

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
        await self._revoke(link_id, int(record["expires_ms"]), "revoked")
        return (await self._states([link_id]))[0]

    async def _revoke(self, link_id: str, expires_ms: int, reason: str) -> None:
        now = self.clock.now_ms()
        keep = max(expires_ms - now + _RETAIN_MS, 1000)
        revoked = {"state": "revoked", "reason": reason, "at_ms": now}
        await self.store.scripts.call(
            "link_revoke", [self.store.keys.link_spent(link_id)], [serde.dumps(revoked), keep]
        )

    async def list(self, task_id: str) -> builtins.list[MagicLink]:
        """The links made for task ``task_id`` (oldest first), with their state; their
        tokens are not kept, so ``token`` and ``url`` are empty."""
        ids = sorted(await self.store.raw.smembers(self.store.keys.task_links(task_id)))
        try:
            task: HumanTask | None = await HumanTasks(self.store).get(task_id)
        except HumanTaskNotFoundError:
            task = None
        current = task.fallback_used if task is not None and task.status == "open" else None
        links = await self._states(ids, current)
        return sorted(links, key=lambda link: link.created_ms)

    async def _states(
        self, ids: builtins.list[str], assignment: int | None = None
    ) -> builtins.list[MagicLink]:
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
            elif assignment is not None and _assignment(record) != assignment:
                state = "revoked"  # the task moved on: the link no longer opens it
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


def _assignment(record: dict[str, Any]) -> int:
    """The assignment round a link record was made for (records from before links
    were bound to one have none: the first)."""
    return int(record.get("assignment") or 0)


def _spent_refusal(spent: dict[str, Any]) -> LinkRefusedError:
    """Why a link whose spent key holds ``spent`` is refused."""
    match spent.get("state"), spent.get("reason"):
        case "revoked", "reassigned":
            return LinkRefusedError(_MOVED, status=403, title="This item has moved on")
        case "revoked", "replaced":
            return LinkRefusedError(
                "a newer link to this item was sent to you, and it replaced this one; use "
                "the link in the latest message",
                status=403,
            )
        case "revoked", _:
            return LinkRefusedError(
                "this link was revoked; ask whoever sent it for a new one", status=403
            )
        case "deciding", _:
            return LinkRefusedError(
                "another decision through this link is being recorded right now", status=410
            )
    return LinkRefusedError(
        f"this link was already used: {spent.get('decision')!r} was recorded "
        f"through it; a link takes one decision",
        status=410,
    )
